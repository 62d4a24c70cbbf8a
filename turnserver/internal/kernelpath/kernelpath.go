// Package kernelpath is icebox's kernel path for TURN: an eBPF program
// (bpf/relay.c) at XDP or tc ingress relays the ChannelData of bound
// channels both ways, and this package loads it, attaches it to every
// interface (and to those that appear later), and fills its maps. It
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

// Attach modes (Options.Mode): which hook each interface gets.
const (
	// ModeAuto: native XDP where the driver has it and the interface
	// forwards IPv4 (bpf_fib_lookup answers only then), except on veth;
	// tc ingress elsewhere. On veth a frame sent by XDP_TX or a redirect is
	// dropped unless the veth's peer runs XDP (or GRO) itself, which the
	// other end — a container's host, a client's namespace — rarely does.
	ModeAuto = "auto"
	// ModeXDP: native XDP on every interface whose driver takes it,
	// veth included (the operator vouches for the peers) and whether it
	// forwards or not (then XDP passes everything to tc), tc elsewhere.
	ModeXDP = "xdp"
	// ModeTC: tc ingress only.
	ModeTC = "tc"
)

// Hooks an interface is attached at (Attachment.Hook); bounded, so they
// may label metrics.
const (
	// HookXDP: native XDP, with the tc program behind it for what XDP
	// passes (no neighbour entry yet, an egress device without XDP).
	HookXDP = "xdp"
	// HookTCX: tc ingress through a tcx link (kernel 6.6 and later).
	HookTCX = "tcx"
	// HookTC: tc ingress through a clsact qdisc and a cls_bpf filter
	// (older kernels).
	HookTC = "tc"
)

// Hooks lists the hooks, for metrics that report each.
func Hooks() []string { return []string{HookXDP, HookTCX, HookTC} }

// Options of Open.
type Options struct {
	// Mode: ModeAuto (""), ModeXDP or ModeTC.
	Mode string
	// LegacyTC attaches the tc program through a clsact qdisc and a
	// cls_bpf filter even where tcx exists (tests: Open falls back to it
	// by itself where tcx is not supported).
	LegacyTC bool
	// Watch follows interfaces after Open: one that appears or comes up
	// is attached, one that goes is forgotten.
	Watch bool
	// OnChange hears, from the watcher, of each interface attached (true)
	// or forgotten (false) after Open.
	OnChange func(a Attachment, attached bool)
	// OnError hears of what the watcher could not do (an interface that
	// refused the program, the subscription failing).
	OnError func(error)
}

// Attachment is one interface the program is attached to.
type Attachment struct {
	Name  string
	Index int
	Hook  string // HookXDP, HookTCX or HookTC
	// Note says what limits the hook here ("": nothing).
	Note string
}

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
	// RelayedTC and RelayedXDP count the datagrams relayed at each hook;
	// XDPPassed those XDP left to the tc program or user space (no
	// neighbour entry or route yet, an egress device without XDP or
	// forwarding, too big, expired: tc counts those last two reasons).
	RelayedTC, RelayedXDP, XDPPassed uint64
}
