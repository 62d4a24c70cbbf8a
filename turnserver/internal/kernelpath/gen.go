package kernelpath

// The eBPF object is generated from bpf/relay.c and committed, so building
// icebox needs no clang; `make bpf` regenerates it (and CI diffs the result
// where clang is installed: scripts/bpf-check.sh). The object is built by
// clang 14 (Debian 12's); another clang makes other, equally valid bytes.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type to_peer_key -type to_peer_val -type to_client_key -type to_client_val -type counters relay bpf/relay.c -- -idirafter /usr/include/x86_64-linux-gnu -idirafter /usr/include/aarch64-linux-gnu
