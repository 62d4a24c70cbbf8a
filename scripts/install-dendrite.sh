#!/usr/bin/env bash
# Installs the Dendrite Matrix homeserver that the Matrix tests start
# (signaling/matrix/matrixtest): the binaries dendrite, generate-config,
# generate-keys and create-account, built from source with `go install` through
# the Go module proxy.
#
# Pinned to github.com/matrix-org/dendrite (Apache-2.0). Not the element-hq fork:
# that one is AGPL. Keep DENDRITE_VERSION equal to matrixtest.DendriteVersion
# (a test checks it).
#
# Idempotent: does nothing when the binaries are there and the stamp file says
# they are this version built this way. Installs into $DENDRITE_BIN when set,
# else into $(go env GOPATH)/bin, which is where matrixtest looks too.
#
# Built with CGO_ENABLED=0: Dendrite then uses the pure-Go SQLite driver
# (modernc.org/sqlite) instead of mattn/go-sqlite3, so no C compiler is needed
# and the build is faster. Set DENDRITE_CGO=1 to build with cgo instead.
#
# The pure-Go driver is raised from the v1.29.5 Dendrite's go.mod asks for to
# DENDRITE_SQLITE (built in a scratch module that requires both; Go takes the
# higher version): in v1.29.x a query cancelled with its context leaves the
# connection interrupted for good — every later query on it fails with
# "interrupted (9)" — and a Dendrite hit by that answers every /sync of a user
# with 400 M_UNKNOWN "syncDB.GetFilter: interrupted (9)" (a minute of that
# failed a CI run).
#
# Measured on 2 cores: with empty module and build caches about 4.5 minutes
# (~1.5 of them downloading modules through the proxy, ~2.7 compiling; cgo or
# not makes no difference), a few seconds with a warm build cache, nothing
# when already installed. The go install is bounded by DENDRITE_INSTALL_TIMEOUT
# seconds (default 480) so CI fails with a message instead of hanging.
set -euo pipefail

DENDRITE_VERSION=v0.13.8
DENDRITE_MODULE=github.com/matrix-org/dendrite
DENDRITE_SQLITE=v1.62.0
BINARIES=(dendrite generate-config generate-keys create-account)

cgo="${DENDRITE_CGO:-0}"
timeout_secs="${DENDRITE_INSTALL_TIMEOUT:-480}"

say() { echo "install-dendrite: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26 is needed to build Dendrite)"

bin_dir="${DENDRITE_BIN:-}"
if [ -z "$bin_dir" ]; then
	gopath="$(go env GOPATH)" || die "go env GOPATH failed"
	bin_dir="${gopath%%:*}/bin"
fi
stamp_file="$bin_dir/.dendrite-version"
want_stamp="$DENDRITE_MODULE@$DENDRITE_VERSION cgo=$cgo sqlite=$DENDRITE_SQLITE"

installed=1
for b in "${BINARIES[@]}"; do
	[ -x "$bin_dir/$b" ] || installed=0
done
if [ "$installed" = 1 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
	say "Dendrite $DENDRITE_VERSION already installed in $bin_dir (nothing to do)"
	exit 0
fi

if [ -f "$stamp_file" ]; then
	say "replacing $(cat "$stamp_file") in $bin_dir with $want_stamp"
else
	say "installing $want_stamp into $bin_dir"
fi

mkdir -p "$bin_dir" || die "cannot create $bin_dir"
# Build into a scratch GOBIN and move the binaries into place only when every
# one of them built, so an interrupted install never leaves a mix of versions.
# Run from the scratch directory so no go.mod around the caller takes part.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

pkgs=()
for b in "${BINARIES[@]}"; do
	pkgs+=("$DENDRITE_MODULE/cmd/$b")
done

start=$(date +%s)
if ! (cd "$work" && export CGO_ENABLED="$cgo" GOBIN="$work/bin" GOFLAGS="${GOFLAGS:-} -mod=mod" &&
	go mod init icebox.test/dendrite-build &&
	timeout "$timeout_secs" go get "$DENDRITE_MODULE@$DENDRITE_VERSION" "modernc.org/sqlite@$DENDRITE_SQLITE" &&
	timeout "$timeout_secs" go install "${pkgs[@]}") >"$work/build.log" 2>&1; then
	cat "$work/build.log" >&2
	die "go install of $DENDRITE_MODULE $DENDRITE_VERSION failed or took over ${timeout_secs}s (needs the Go module proxy; see the log above)"
fi
elapsed=$(($(date +%s) - start))

got="$("$work/bin/dendrite" -version 2>&1 || true)"
[ "$got" = "${DENDRITE_VERSION#v}" ] || die "built dendrite reports version '$got', want '${DENDRITE_VERSION#v}'"

rm -f "$stamp_file"
for b in "${BINARIES[@]}"; do
	mv -f "$work/bin/$b" "$bin_dir/$b" || die "cannot move $b into $bin_dir"
done
echo "$want_stamp" >"$stamp_file"
say "installed ${BINARIES[*]} ($DENDRITE_VERSION, CGO_ENABLED=$cgo, modernc.org/sqlite $DENDRITE_SQLITE) into $bin_dir in ${elapsed}s"
