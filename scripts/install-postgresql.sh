#!/usr/bin/env bash
# Installs Debian's PostgreSQL server binaries (initdb, postgres) for the
# store's tests: store/postgres/pgtest starts its own cluster in a temporary
# directory, as an unprivileged user, on a unix socket only; the system's
# cluster is not used (and is stopped if the package started one). Run as
# root (CI is); a developer without root gets a clear message and the
# PostgreSQL tests skip with the same advice (under CI=true they fail).
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-postgresql: PostgreSQL is missing (run: sudo apt-get install postgresql)" >&2
	[ "${CI:-}" = "true" ] && exit 1
	exit 0
fi
echo "install-postgresql: installing postgresql" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
if command -v systemctl >/dev/null 2>&1; then
	systemctl stop postgresql >/dev/null 2>&1 || true # the tests run their own
fi
