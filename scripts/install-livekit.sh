#!/usr/bin/env bash
# Installs livekit-server, the LiveKit SFU that icebox runs as a child in
# matrixrtc.livekit.mode: managed and that the MatrixRTC tests start: built
# from source with `go install` through the Go module proxy, as
# livekit-server (the module's command is cmd/server).
#
# Pinned to github.com/livekit/livekit-server (Apache-2.0) v1.13.5: it builds
# with CGO_ENABLED=0; v1.13.6 and later `replace` pion modules with forks
# the module proxy does not serve, so `go install` refuses them. Keep
# LIVEKIT_VERSION equal to the version the Go side pins (livekitproc.Version,
# which livekittest uses too; livekitproc's TestInstallScriptPinsSameVersion
# checks it).
#
# Idempotent: does nothing when the binary is there and the stamp file says
# it is this version built this way. Installs into $LIVEKIT_BIN when set, else
# into $(go env GOPATH)/bin, where the tests and the managed mode's default
# look too.
#
# Measured on 2 cores: about 75 s with a warm module cache, a few minutes more
# when the modules must be downloaded; nothing when already installed. Bounded
# by LIVEKIT_INSTALL_TIMEOUT seconds (default 600).
set -euo pipefail

LIVEKIT_VERSION=v1.13.5
LIVEKIT_MODULE=github.com/livekit/livekit-server

timeout_secs="${LIVEKIT_INSTALL_TIMEOUT:-600}"

say() { echo "install-livekit: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26 is needed to build livekit-server)"

bin_dir="${LIVEKIT_BIN:-}"
if [ -z "$bin_dir" ]; then
	gopath="$(go env GOPATH)" || die "go env GOPATH failed"
	bin_dir="${gopath%%:*}/bin"
fi
stamp_file="$bin_dir/.livekit-server-version"
want_stamp="$LIVEKIT_MODULE@$LIVEKIT_VERSION cgo=0"

if [ -x "$bin_dir/livekit-server" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
	say "livekit-server $LIVEKIT_VERSION already installed in $bin_dir (nothing to do)"
	exit 0
fi
say "installing $want_stamp into $bin_dir"

mkdir -p "$bin_dir" || die "cannot create $bin_dir"
# Build in a scratch module and GOBIN, move into place only when it built.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
if ! (cd "$work" && export CGO_ENABLED=0 GOBIN="$work/bin" GOFLAGS="${GOFLAGS:-} -mod=mod" &&
	go mod init icebox.test/livekit-build &&
	timeout "$timeout_secs" go install "$LIVEKIT_MODULE/cmd/server@$LIVEKIT_VERSION") >"$work/build.log" 2>&1; then
	cat "$work/build.log" >&2
	die "go install of $LIVEKIT_MODULE $LIVEKIT_VERSION failed or took over ${timeout_secs}s (needs the Go module proxy; see the log above)"
fi
elapsed=$(($(date +%s) - start))

got="$("$work/bin/server" --version 2>&1 || true)"
[ "$got" = "livekit-server version ${LIVEKIT_VERSION#v}" ] || die "built server reports '$got', want 'livekit-server version ${LIVEKIT_VERSION#v}'"

rm -f "$stamp_file"
mv -f "$work/bin/server" "$bin_dir/livekit-server" || die "cannot move livekit-server into $bin_dir"
echo "$want_stamp" >"$stamp_file"
say "installed livekit-server $LIVEKIT_VERSION (CGO_ENABLED=0) into $bin_dir in ${elapsed}s"
