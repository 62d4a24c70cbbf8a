#!/usr/bin/env bash
# The icebox-vs-coturn benchmark of issue 7 (the second half of `make bench`,
# after `make build`). Needs root: every server runs in its own network
# namespace. Installs what is missing from Debian's packages (coturn for the
# comparator and turnutils_uclient, iproute2 for ip/ss, procps for sysctl),
# builds the harness and runs it; the report lands in bench/results/.
#
#   BENCH_ROUNDS=N   rounds (default 3)
#   BENCH_QUICK=1    smoke run: 1 round, loads divided by 5 (report not kept as latest.md)
#   BENCH_KEEP=1     keep the temporary directory (server logs, uclient output)
#   BENCH_ONLY=...   only these measurements; "cluster" is bench/cluster.sh (calls through the
#                    API on 1 and 3 nodes), which runs after the harness when BENCH_ONLY is unset
set -euo pipefail
cd "$(dirname "$0")/.."

# "cluster" is not the harness's: taken out of BENCH_ONLY, run at the end.
cluster=0
harness=1
if [ -z "${BENCH_ONLY:-}" ]; then
	cluster=1
else
	rest=()
	IFS=, read -ra names <<<"$BENCH_ONLY"
	for n in "${names[@]}"; do
		n=${n//[[:space:]]/}
		if [ "$n" = cluster ]; then cluster=1; elif [ -n "$n" ]; then rest+=("$n"); fi
	done
	BENCH_ONLY=$(IFS=,; echo "${rest[*]}")
	export BENCH_ONLY
	[ -n "$BENCH_ONLY" ] || harness=0
fi
if [ "$harness" = 0 ]; then
	exec ./bench/cluster.sh
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: needs root (network namespaces): sudo make bench" >&2
	exit 1
fi

missing=()
{ command -v turnserver && command -v turnutils_uclient; } >/dev/null 2>&1 || missing+=(coturn)
{ command -v ip && command -v ss; } >/dev/null 2>&1 || missing+=(iproute2)
command -v sysctl >/dev/null 2>&1 || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
	echo "bench: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# The package may start its own daemon; the benchmark starts coturn itself.
	if command -v systemctl >/dev/null 2>&1; then
		systemctl stop coturn >/dev/null 2>&1 || true
	fi
fi
if pgrep -x turnserver >/dev/null 2>&1; then
	echo "bench: warning: a turnserver outside the benchmark is running; it competes for CPU" >&2
fi

"${GO:-go}" build -tags "${TAGS:-goolm}" -o bin/icebox-bench ./bench
./bin/icebox-bench run --icebox bin/icebox --out bench/results "$@"
if [ "$cluster" = 1 ]; then
	./bench/cluster.sh
fi
