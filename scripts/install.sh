#!/usr/bin/env bash
# Installs icebox for systemd; `make install` runs it.
#
#   make build && sudo make install          # onto this machine
#   make build && make install DESTDIR=/tmp/pkg   # staged for a package
#
# It installs the binary to $PREFIX/bin, the unit to /etc/systemd/system, the
# sysusers entry to /etc/sysusers.d, and the example configuration to
# /etc/icebox/icebox.yaml only if none exists (an existing one is never
# touched). It does not start anything: it prints what to do next.
#
# Variables (environment): DESTDIR (staging root, default none), PREFIX
# (/usr/local), BIN (bin/icebox), UNITDIR (/etc/systemd/system), SYSUSERSDIR
# (/etc/sysusers.d).
#
# With DESTDIR set, only files under DESTDIR are written and nothing needs
# root: the package's post-install step creates the user
# (systemd-sysusers icebox.conf) and sets the configuration's group.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BIN=${BIN:-$repo/bin/icebox}
UNITDIR=${UNITDIR:-/etc/systemd/system}
SYSUSERSDIR=${SYSUSERSDIR:-/etc/sysusers.d}
CONFDIR=/etc/icebox # fixed: the unit's ConfigurationDirectory= and --config name it

die() {
	echo "install: $*" >&2
	exit 1
}

for v in PREFIX UNITDIR SYSUSERSDIR; do
	case ${!v} in
	/*) ;;
	*) die "$v must be an absolute path (got '${!v}')" ;;
	esac
done
[ -x "$BIN" ] || die "$BIN not found or not executable: run 'make build' first (as yourself, not root)"
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
	die "installing into / needs root: sudo make install (or stage it: make install DESTDIR=/tmp/pkg)"
fi

bindir=$DESTDIR$PREFIX/bin
unitdir=$DESTDIR$UNITDIR
sysusersdir=$DESTDIR$SYSUSERSDIR
confdir=$DESTDIR$CONFDIR

# Binary. install(1) writes a new file, so a running icebox keeps its old
# binary until it restarts.
install -d -m 0755 "$bindir"
install -m 0755 "$BIN" "$bindir/icebox"
echo "installed $bindir/icebox ($("$bindir/icebox" version 2>/dev/null || echo "version unknown"))"

# Unit, pointing at where the binary went.
install -d -m 0755 "$unitdir"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed -e "s#/usr/local/bin/icebox#$PREFIX/bin/icebox#g" "$repo/systemd/icebox.service" >"$tmp"
install -m 0644 "$tmp" "$unitdir/icebox.service"
echo "installed $unitdir/icebox.service"

# System user, so /etc/icebox files can be group-readable by the service.
install -d -m 0755 "$sysusersdir"
install -m 0644 "$repo/systemd/icebox.sysusers" "$sysusersdir/icebox.conf"
echo "installed $sysusersdir/icebox.conf"
if [ -z "$DESTDIR" ]; then
	if command -v systemd-sysusers >/dev/null 2>&1; then
		systemd-sysusers "$SYSUSERSDIR/icebox.conf"
	elif ! getent passwd icebox >/dev/null 2>&1; then
		useradd --system --user-group --no-create-home --home-dir / \
			--shell /usr/sbin/nologin --comment "icebox TURN relay and call signaling" icebox
	fi
	getent group icebox >/dev/null 2>&1 || die "the icebox group was not created"
fi

# Configuration: the directory stays root-owned (as the unit's
# ConfigurationDirectory= makes it); the file is root:icebox 0640.
install -d -m 0755 "$confdir"
if [ -e "$confdir/icebox.yaml" ] || [ -L "$confdir/icebox.yaml" ]; then
	echo "kept the existing $confdir/icebox.yaml (compare with systemd/icebox.yaml and 'icebox config defaults' for new keys)"
	new_config=no
else
	install -m 0640 "$repo/systemd/icebox.yaml" "$confdir/icebox.yaml"
	if [ -z "$DESTDIR" ]; then
		chown root:icebox "$confdir/icebox.yaml"
	fi
	echo "installed $confdir/icebox.yaml (mode 0640)"
	new_config=yes
fi

if [ -n "$DESTDIR" ]; then
	cat <<EOF

Staged into $DESTDIR. On the target machine, after unpacking:
  systemd-sysusers $SYSUSERSDIR/icebox.conf
  chown root:icebox $CONFDIR/icebox.yaml
  systemctl daemon-reload && systemctl enable --now icebox
EOF
	exit 0
fi

cat <<EOF

Next steps:
EOF
if [ "$new_config" = yes ]; then
	cat <<EOF
  1. Edit $CONFDIR/icebox.yaml: turn.relay.public_ip (cloud VMs behind NAT),
     ice_servers.hostname, auth. Then check it as the service would read it:
       sudo -u icebox $PREFIX/bin/icebox config check --config $CONFDIR/icebox.yaml
EOF
else
	cat <<EOF
  1. Check the configuration still validates with this version:
       sudo -u icebox $PREFIX/bin/icebox config check --config $CONFDIR/icebox.yaml
EOF
fi
cat <<EOF
  2. Open the firewall: 3478/udp, 3478/tcp, the relay range
     (turn.relay.min_port-max_port, default 49152-65535/udp), 5349/tcp if TLS.
  3. Start it (or restart it, after an upgrade: it drains first):
       sudo systemctl daemon-reload
       sudo systemctl enable --now icebox      # upgrade: sudo systemctl restart icebox
       systemctl status icebox; journalctl -u icebox -f
See docs/deploy.md.
EOF
