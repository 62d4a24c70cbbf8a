package turnserver

import (
	"runtime"

	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

// The relay engine (internal/udpengine) reads every UDP socket of the
// relay — the listeners clients send to and the relay sockets of the
// allocations — and hands each datagram to the socket's Handler: the
// channel fast path (fastpath.go) relays bound channels' ChannelData
// itself, and queues the rest for pion, which reads the sockets through
// engineListener and relayPacketConn as before.

// DefaultRecvBatch is how many datagrams one recvmmsg may return from one
// socket.
const DefaultRecvBatch = udpengine.DefaultRecvBatch

// defaultEngineLoops is Config.EngineLoops' default: half of GOMAXPROCS,
// at least one. A loop's goroutine waits in epoll_wait holding its P, so
// the other half stays for Go code (pion's STUN handling, the HTTP API);
// with a single P, cmd/icebox raises GOMAXPROCS to 2 for that at start (a
// library does not change process-wide settings). Measured here on 2 CPUs,
// one loop beside one P for Go code beat two loops with GOMAXPROCS
// doubled: the same CPU per relayed message, 18 % less per allocation
// (idle Ps make the scheduler wake threads, and a context switch is dear).
func defaultEngineLoops() int {
	return max(1, runtime.GOMAXPROCS(0)/2)
}

// Config.UDPGRO's values.
const (
	UDPGROAuto = "auto"
	UDPGROOn   = "on"
	UDPGROOff  = "off"
)

// groOn resolves Config.UDPGRO: auto is on unless the kernel path may run,
// since a coalesced packet is too big for the kernel path, which leaves it
// to user space (on a device doing GRO, the kernel coalesces a flow's
// datagrams only for sockets that asked for it).
func (cfg Config) groOn() bool {
	switch cfg.UDPGRO {
	case UDPGROOn:
		return true
	case UDPGROAuto:
		return cfg.KernelPath == "" || cfg.KernelPath == KernelPathOff
	}
	return false
}
