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

# shellcheck source=go-tool.sh
. "$(dirname "$0")/go-tool.sh"
go_tool_install pebble "$PEBBLE_MODULE" cmd/pebble "$PEBBLE_VERSION" "${PEBBLE_BIN:-}" "${PEBBLE_INSTALL_TIMEOUT:-300}"
