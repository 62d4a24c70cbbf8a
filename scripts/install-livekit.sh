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

# shellcheck source=go-tool.sh
. "$(dirname "$0")/go-tool.sh"
go_tool_install livekit-server "$LIVEKIT_MODULE" cmd/server "$LIVEKIT_VERSION" "${LIVEKIT_BIN:-}" "${LIVEKIT_INSTALL_TIMEOUT:-600}"
