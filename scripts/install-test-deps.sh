#!/usr/bin/env bash
# Installs the real test peers icebox's tests use, from Debian's packages:
# coturn (turnutils_uclient, turnutils_peer, turnserver), systemd
# (systemd-analyze, systemd-sysusers, for the unit's checks), and iproute2 and
# iptables (nft backend) for the network-namespace NAT test bed (internal/netbed). Run as root (CI is); a developer
# without root gets a clear message and the tests that need the tools skip
# with the same advice (under CI=true they fail instead).
set -euo pipefail

missing=()
command -v turnutils_uclient >/dev/null 2>&1 || missing+=(coturn)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)   # systemd-analyze verify of the unit
command -v ip >/dev/null 2>&1 || missing+=(iproute2)                # ip netns, veth, bridges
command -v iptables >/dev/null 2>&1 || missing+=(iptables)          # NAT rules in the namespaces

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-test-deps: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
	[ "${CI:-}" = "true" ] && exit 1
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
fi
