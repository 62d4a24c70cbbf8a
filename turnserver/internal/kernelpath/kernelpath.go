// Package kernelpath is icebox's kernel path for TURN: an eBPF program at
// tc ingress (bpf/relay.c) relays the ChannelData of bound channels both
// ways, and this package loads it, attaches it, and fills its maps. It
// decides nothing: the relay (turnserver) puts only bindings it has
// authenticated and checked against its peer policy, and removes them when
// they end. Linux only; elsewhere Open reports ErrUnsupported.
package kernelpath

import (
	"errors"
	"net/netip"
	"time"
)

// ErrUnsupported: no kernel path on this system.
var ErrUnsupported = errors.New("kernelpath: unsupported on this operating system")

// Binding is one channel as the kernel path relays it: ChannelData from
// Client to Listener on Channel goes from Relay to Peer; UDP from Peer to
// Relay goes from Listener to Client on Channel.
type Binding struct {
	Listener, Client netip.AddrPort
	Channel          uint16
	Relay, Peer      netip.AddrPort
	// Alloc keys the allocation's counters.
	Alloc uint32
	// Expires: the kernel path stops relaying at this time by itself (the
	// channel's or permission's end), even if nobody removes the entry.
	Expires time.Time
}

// Counters is what the kernel path relayed for one allocation (payload
// bytes, summed over CPUs).
type Counters struct {
	PacketsToPeer, BytesToPeer, PacketsToClient, BytesToClient uint64
}

// Stats counts datagrams that matched an entry but went to user space or
// were dropped (summed over CPUs).
type Stats struct {
	Expired, TooBig, Errors uint64
}
