#!/usr/bin/env bash
# Installs the real test peers icebox's tests use, from Debian's packages:
# coturn (turnutils_uclient, turnutils_peer, turnserver), systemd
# (systemd-analyze, systemd-sysusers, for the unit's checks), and iproute2 and
# iptables (nft backend) for the network-namespace NAT test bed (internal/netbed),
# haproxy (a PROXY protocol v2 load balancer in front of the shared port),
# Debian's chromium, node and npm for the web UI's browser tests, whose
# driver, playwright-core (pinned in web/e2e/package-lock.json; it drives
# /usr/bin/chromium and downloads no browser), npm ci installs into
# web/e2e/node_modules; and the Matrix browser harness, web/e2e-matrix:
# matrix-js-sdk (Element's call code), esbuild and playwright-core pinned in
# its package-lock.json, npm ci'd, then bundled once (node build.js, which
# does nothing while dist/.stamp matches the lockfile and the sources). Run
# as root (CI is); a developer
# without root gets a clear message and the tests that need the tools skip
# with the same advice (under CI=true they fail instead).
set -euo pipefail

missing=()
command -v turnutils_uclient >/dev/null 2>&1 || missing+=(coturn)
command -v curl >/dev/null 2>&1 || missing+=(curl)                  # HTTPS through the shared port 443 (mux_netns_test.go)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)            # PROXY protocol v2 in front of the shared port (turn.mux)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)   # systemd-analyze verify of the unit
command -v ip >/dev/null 2>&1 || missing+=(iproute2)                # ip netns, veth, bridges
command -v ethtool >/dev/null 2>&1 || missing+=(ethtool)            # kernel path tests: checksum offloads off
command -v iptables >/dev/null 2>&1 || missing+=(iptables)          # NAT rules in the namespaces
[ -x /usr/bin/chromium ] || missing+=(chromium)                       # web UI browser tests
command -v node >/dev/null 2>&1 || missing+=(nodejs)                  # runs web/e2e/ui.js
command -v npm >/dev/null 2>&1 || missing+=(npm)                      # installs playwright-core
command -v certutil >/dev/null 2>&1 || missing+=(libnss3-tools)      # Chromium trusts a test CA (mux_chromium_test.go)
[ -f /usr/share/bash-completion/bash_completion ] || missing+=(bash-completion)   # icebox completion bash (completion_test.go)

# npm_deps installs web/e2e's locked packages unless they are there already.
npm_deps() {
	local dir
	dir="$(cd "$(dirname "$0")/.." && pwd)/web/e2e"
	local want
	want=$(sed -n 's/.*"playwright-core": "\([0-9.]*\)".*/\1/p' "$dir/package.json")
	if grep -q "\"version\": \"$want\"" "$dir/node_modules/playwright-core/package.json" 2>/dev/null; then
		return 0
	fi
	if ! command -v npm >/dev/null 2>&1; then
		echo "install-test-deps: npm missing: cannot install playwright-core into web/e2e" >&2
		[ "${CI:-}" = "true" ] && return 1
		return 0
	fi
	echo "install-test-deps: npm ci in web/e2e (playwright-core $want)" >&2
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
}

# matrix_deps installs web/e2e-matrix's locked packages when the lockfile
# changed since the last npm ci (its hash is kept in node_modules), and
# builds the bundle when its stamp is stale.
matrix_deps() {
	local dir
	dir="$(cd "$(dirname "$0")/.." && pwd)/web/e2e-matrix"
	if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
		echo "install-test-deps: node/npm missing: cannot install web/e2e-matrix" >&2
		[ "${CI:-}" = "true" ] && return 1
		return 0
	fi
	local lock
	lock=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
	if [ "$(cat "$dir/node_modules/.icebox-lock-sha256" 2>/dev/null)" != "$lock" ]; then
		echo "install-test-deps: npm ci in web/e2e-matrix (matrix-js-sdk, livekit-client, Element Call embedded, esbuild, playwright-core)" >&2
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
		echo "$lock" >"$dir/node_modules/.icebox-lock-sha256"
	fi
	(cd "$dir" && node build.js) >&2
}

if [ ${#missing[@]} -eq 0 ]; then
	npm_deps
	matrix_deps
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-test-deps: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
	[ "${CI:-}" = "true" ] && exit 1
	npm_deps || true
	matrix_deps || true
	exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's coturn package starts no daemon unless enabled; make sure none
# holds port 3478 on a machine where it was.
if command -v systemctl >/dev/null 2>&1; then
	systemctl stop coturn >/dev/null 2>&1 || true
	systemctl stop haproxy >/dev/null 2>&1 || true # the tests run their own
fi
npm_deps
matrix_deps
