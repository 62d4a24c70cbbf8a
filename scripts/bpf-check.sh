#!/usr/bin/env bash
# Regenerates the kernel path's eBPF object from its C source and fails if
# it differs from the committed one. The bytes depend on clang's major
# version: with another clang than the one recorded in gen.go's comment
# (and in $want below), or none, it says so and passes — building icebox
# never needs clang.
set -euo pipefail
cd "$(dirname "$0")/.."
want=14
dir=turnserver/internal/kernelpath
if ! command -v clang >/dev/null 2>&1; then
	echo "bpf-check: no clang; the committed eBPF object is used as is"
	exit 0
fi
have=$(clang -dumpversion | cut -d. -f1)
if [ "$have" != "$want" ]; then
	echo "bpf-check: clang $have, the object is built with clang $want; not compared"
	exit 0
fi
for h in /usr/include/bpf/bpf_helpers.h; do
	[ -e "$h" ] || { echo "bpf-check: $h missing (apt-get install libbpf-dev); not compared"; exit 0; }
done
(cd "$dir" && "${GO:-go}" generate ./)
if ! git diff --exit-code --stat -- "$dir/relay_bpfel.go" "$dir/relay_bpfel.o"; then
	echo "bpf-check: the committed eBPF object differs from bpf/relay.c; run make bpf and commit" >&2
	exit 1
fi
echo "bpf-check: the committed eBPF object matches bpf/relay.c"
