#!/usr/bin/env bash
# fuzz-targets.sh check PKG:FuzzName… — fails if a fuzz target in the tree is
# missing from the list `make fuzz` runs (or the list names one that is gone).
set -euo pipefail
[ "${1:-}" = check ] || { echo "usage: $0 check ./pkg/:FuzzName..." >&2; exit 2; }
shift
cd "$(dirname "$0")/.."
want=$(printf '%s\n' "$@" | sort)
have=$(git grep -E '^func Fuzz[A-Za-z0-9_]*\(' -- '*_test.go' ':!third_party' \
	| sed -E 's#^(.*)/[^/]*_test.go:func (Fuzz[A-Za-z0-9_]*)\(.*#./\1/:\2#' | sort)
if [ "$want" != "$have" ]; then
	echo "fuzz-targets: the Makefile's FUZZ_TARGETS differ from the fuzz targets in the tree:" >&2
	diff <(echo "$want") <(echo "$have") >&2 || true
	exit 1
fi
