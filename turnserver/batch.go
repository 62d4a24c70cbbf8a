package turnserver

import (
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Batch receive on the UDP listener sockets. pion reads a listener with
// one ReadFrom per datagram; under load most of a relay's CPU goes to
// those system calls and the goroutine wake-ups around them. batchConn
// receives up to a batch of queued datagrams with one recvmmsg(2) and
// hands them to pion's ReadFrom one by one from memory: at 100 k
// datagrams/s a read returns many at once, and when the socket is quiet it
// returns the one that woke it, so latency does not change.

// DefaultRecvBatch is how many datagrams one recvmmsg may return.
const DefaultRecvBatch = 64

// recvBufferSize is the room for one datagram: pion's listener MTU is 1600
// (a longer datagram is dropped as possibly truncated), so 2 KiB keeps
// every datagram pion would take whole.
const recvBufferSize = 2048

// batchReader is what ipv4.PacketConn and ipv6.PacketConn share.
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// batchConn is a UDP listener socket whose ReadFrom is served from
// batches. Only ReadFrom changes; writes go straight to the socket. Like
// any net.PacketConn read by pion, it has one reader goroutine.
type batchConn struct {
	net.PacketConn
	br   batchReader
	msgs []ipv4.Message
	n    int // datagrams in msgs
	next int // the next one ReadFrom returns
}

// newBatchConn wraps a UDP socket for batch receive of up to batch
// datagrams per system call. It returns pc itself when batch < 2 or pc is
// not a UDP socket whose address family it can tell.
func newBatchConn(pc net.PacketConn, batch int) net.PacketConn {
	udp, ok := pc.(*net.UDPConn)
	if batch < 2 || !ok {
		return pc
	}
	var br batchReader
	switch socketFamily(udp) {
	case unix.AF_INET:
		br = ipv4.NewPacketConn(udp)
	case unix.AF_INET6: // also IPv4 clients of a dual-stack socket
		br = ipv6.NewPacketConn(udp)
	default:
		return pc
	}
	msgs := make([]ipv4.Message, batch)
	buf := make([]byte, batch*recvBufferSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{buf[i*recvBufferSize : (i+1)*recvBufferSize : (i+1)*recvBufferSize]}
	}
	return &batchConn{PacketConn: pc, br: br, msgs: msgs}
}

// ReadFrom returns the next datagram of the current batch, receiving a new
// batch when it is used up. A datagram longer than recvBufferSize (cut by
// the kernel) is dropped: pion drops anything longer than its MTU anyway.
// Longer than p, it is cut to len(p) bytes, as the socket's own ReadFrom
// would.
func (c *batchConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if c.next >= c.n {
			n, err := c.br.ReadBatch(c.msgs, 0)
			if err != nil {
				return 0, nil, err
			}
			c.n, c.next = n, 0
		}
		m := &c.msgs[c.next]
		c.next++
		addr := m.Addr
		m.Addr = nil // not kept alive by the batch
		if m.Flags&unix.MSG_TRUNC != 0 {
			continue
		}
		return copy(p, m.Buffers[0][:m.N]), addr, nil
	}
}

// socketFamily returns the socket's address family (AF_INET, AF_INET6), or
// 0 when it cannot tell.
func socketFamily(c syscall.Conn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	family := 0
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil {
			family = v
		}
	})
	return family
}
