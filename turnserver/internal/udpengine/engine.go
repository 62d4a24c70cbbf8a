// Package udpengine reads and writes the relay's UDP sockets: the listener
// sockets clients send to and the relay sockets of the allocations. It owns
// the mechanics — sockets, the loops that read them, batched receives and
// sends, the queues that hand datagrams to pion's readers — and no TURN
// policy: every datagram a socket receives goes to that socket's Handler
// (the turnserver package's fast path and its queues for pion).
//
// On Linux the engine runs a few epoll loops outside Go's network poller,
// with recvmmsg and sendmmsg (engine_linux.go, sock_linux.go). Elsewhere,
// or on Linux built with the icebox_portable tag (to test it), a portable
// engine reads each socket with a goroutine on Go's netpoller and sends
// each datagram at once (engine_default.go, sock_default.go); it is not
// benchmarked. The two have the same API and the same behaviour as a
// Handler sees it.
package udpengine

import (
	"net/netip"

	"github.com/rs/zerolog"
)

// DefaultRecvBatch is how many datagrams one recvmmsg may return from one
// socket.
const DefaultRecvBatch = 64

// RecvBufferSize is the room for one datagram: pion's listener MTU is 1600
// (a longer datagram is dropped as possibly truncated), so 2 KiB keeps
// every datagram pion would take whole. A longer datagram is dropped.
const RecvBufferSize = 2048

// Headroom is how many free bytes precede each received datagram in the
// buffer a Handler gets, for a header put in front of it without a copy
// (the 4 bytes of a ChannelData header).
const Headroom = 4

// poolSlots is how many datagrams one loop holds between sends, and so
// the largest Config.Batch.
const poolSlots = 256

// Handler takes the datagrams one socket receives. Receive runs on an
// engine loop: it must not block, and must not keep pkt after it returns
// (copy what it queues) except by handing it to r.Send. pkt[Headroom:] is
// the datagram; the Headroom bytes before it are free. from is the source as the socket reports it (an IPv4
// source of an IPv6 socket is v4-mapped, as Go's ReadFrom returns it).
type Handler interface {
	Receive(r *Round, pkt []byte, from netip.AddrPort)
}

// Counter counts datagrams the engine drops (a prometheus.Counter is one).
type Counter interface{ Add(float64) }

type nopCounter struct{}

func (nopCounter) Add(float64) {}

// addrPortStringer formats an address only when a log line is written.
type addrPortStringer netip.AddrPort

func (a addrPortStringer) String() string { return netip.AddrPort(a).String() }

// Config configures an Engine.
type Config struct {
	// Loops is how many epoll loops read the sockets (at least 1). The
	// portable engine reads each socket with a goroutine of its own and
	// ignores it.
	Loops int
	// Batch is how many datagrams one recvmmsg may return from one socket,
	// clamped to 1..256 (what a loop holds between sends). The portable
	// engine reads one at a time.
	Batch int
	// Log gets the engine's failures; per-socket ones are sampled.
	Log zerolog.Logger
	// SendFailed counts the datagrams Round.Send dropped (a full send
	// buffer, a send error). Default: not counted.
	SendFailed Counter

	// GRO asks the kernel for coalesced receives (UDP_GRO) on every
	// socket added, where it offers them (gro_linux.go); each loop then
	// holds 4 MiB more for them. Handlers still get one datagram at a
	// time. The portable engine ignores it.
	GRO bool
}
