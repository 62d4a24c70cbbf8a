#!/usr/bin/env bash
# Calls through the API on one node and on three (issue 18; the last step of
# `make bench`, or `BENCH_ONLY=cluster ./bench/run.sh`): runs cmd/icebox's
# TestClusterBench — 1 node on bbolt, 1 node on PostgreSQL, 3 nodes on
# PostgreSQL, each with 10, 100 and 1000 calls at once — and writes its
# table to bench/results/<UTC date-time>-cluster.md and cluster-latest.md.
# Needs PostgreSQL's binaries (installed from Debian's packages when missing
# and run as root); the tests start their own server, durable (fsync on, as
# in production: bbolt syncs too). About 3 minutes on 2 cores.
#
#   BENCH_CLUSTER_CONC=10,100     the calls at once (default 10,100,1000)
#   BENCH_CLUSTER_SECONDS=N       each cell's measuring window (default 10)
#   BENCH_QUICK=1                 10 and 100 at once, 2 s each; report *-cluster-quick.md (not cluster-latest.md)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench: the cluster benchmark needs PostgreSQL: apt-get install postgresql (or make test-deps)" >&2
		exit 1
	fi
	echo "bench: installing postgresql" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends postgresql >/dev/null
	# The package starts a cluster of its own; the benchmark starts its own server.
	if command -v systemctl >/dev/null 2>&1; then
		systemctl stop postgresql >/dev/null 2>&1 || true
	fi
fi

conc=${BENCH_CLUSTER_CONC:-10,100,1000}
secs=${BENCH_CLUSTER_SECONDS:-10}
suffix=""
if [ "${BENCH_QUICK:-}" = 1 ]; then
	conc=${BENCH_CLUSTER_CONC:-10,100}
	secs=${BENCH_CLUSTER_SECONDS:-2}
	suffix="-quick"
fi
mkdir -p bench/results
out="$PWD/bench/results/$(date -u +%Y-%m-%dT%H%M%SZ)-cluster$suffix.md"
log=$(mktemp /tmp/icebox-cluster-bench.XXXXXX)
trap 'rm -f "$log"' EXIT

echo "bench: calls through the API, 1 and 3 nodes, ${conc} at once, ${secs} s each (go test -run TestClusterBench ./cmd/icebox/)" >&2
# Several thousand sockets at 1000 at once: the test raises its soft limit
# of open files up to the hard one.
if ! ICEBOX_CLUSTER_BENCH=1 ICEBOX_CLUSTER_BENCH_CONC="$conc" ICEBOX_CLUSTER_BENCH_SECONDS="$secs" ICEBOX_CLUSTER_BENCH_OUT="$out" \
	"${GO:-go}" test -tags "${TAGS:-goolm}" -count=1 -timeout 15m -run '^TestClusterBench$' -v ./cmd/icebox/ >"$log" 2>&1; then
	tail -n 60 "$log" >&2
	echo "bench: the cluster benchmark failed (output above)" >&2
	exit 1
fi
if [ ! -s "$out" ]; then
	tail -n 20 "$log" >&2
	echo "bench: the cluster benchmark wrote no report (skipped?)" >&2
	exit 1
fi
grep -E '^\s+cluster_bench_test.go:[0-9]+: .* at once:' "$log" >&2 || true
if [ -z "$suffix" ] && [ -z "${BENCH_CLUSTER_CONC:-}" ]; then
	cp "$out" bench/results/cluster-latest.md
fi
echo "bench: report $out" >&2
