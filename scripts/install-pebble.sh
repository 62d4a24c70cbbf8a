#!/usr/bin/env bash
# Installs pebble, Let's Encrypt's small ACME test server, which the ACME
# tests (internal/acmecert, node) start on loopback as the CA icebox gets
# its certificates from: built from source with `go install` through the Go
# module proxy.
#
# Pinned to github.com/letsencrypt/pebble/v2 (MPL-2.0) v2.10.3. Keep
# PEBBLE_VERSION equal to the version the Go side pins (acmetest.Version; a
# test checks it).
#
# Idempotent: does nothing when the binary is there and the stamp file says
# it is this version built this way. Installs into $PEBBLE_BIN when set, else
# into $(go env GOPATH)/bin, where the tests look too.
#
# Measured on 2 cores: about 20 s with a warm module cache; nothing when
# already installed. Bounded by PEBBLE_INSTALL_TIMEOUT seconds (default 300).
set -euo pipefail

PEBBLE_VERSION=v2.10.3
PEBBLE_MODULE=github.com/letsencrypt/pebble/v2

timeout_secs="${PEBBLE_INSTALL_TIMEOUT:-300}"

say() { echo "install-pebble: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

command -v go >/dev/null 2>&1 || die "go is not on PATH (Go 1.26 is needed to build pebble)"

bin_dir="${PEBBLE_BIN:-}"
if [ -z "$bin_dir" ]; then
	gopath="$(go env GOPATH)" || die "go env GOPATH failed"
	bin_dir="${gopath%%:*}/bin"
fi
stamp_file="$bin_dir/.pebble-version"
want_stamp="$PEBBLE_MODULE@$PEBBLE_VERSION cgo=0"

if [ -x "$bin_dir/pebble" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want_stamp" ]; then
	say "pebble $PEBBLE_VERSION already installed in $bin_dir (nothing to do)"
	exit 0
fi
say "installing $want_stamp into $bin_dir"

mkdir -p "$bin_dir" || die "cannot create $bin_dir"
# Build in a scratch GOBIN, move into place only when it built.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

start=$(date +%s)
if ! (cd "$work" && export CGO_ENABLED=0 GOBIN="$work/bin" &&
	timeout "$timeout_secs" go install "$PEBBLE_MODULE/cmd/pebble@$PEBBLE_VERSION") >"$work/build.log" 2>&1; then
	cat "$work/build.log" >&2
	die "go install of $PEBBLE_MODULE $PEBBLE_VERSION failed or took over ${timeout_secs}s (needs the Go module proxy; see the log above)"
fi
elapsed=$(($(date +%s) - start))

# pebble -version prints "dev" unless built with ldflags: read the module
# version the binary was built from instead.
got="$(go version -m "$work/bin/pebble" | awk '$1 == "mod" { print $3 }')"
[ "$got" = "$PEBBLE_VERSION" ] || die "built pebble is $PEBBLE_MODULE '$got', want $PEBBLE_VERSION"

rm -f "$stamp_file"
mv -f "$work/bin/pebble" "$bin_dir/pebble" || die "cannot move pebble into $bin_dir"
echo "$want_stamp" >"$stamp_file"
say "installed pebble $PEBBLE_VERSION (CGO_ENABLED=0) into $bin_dir in ${elapsed}s"
