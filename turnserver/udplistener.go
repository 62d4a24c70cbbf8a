package turnserver

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// engineListener is a UDP listener socket served by the relay engine, as
// pion sees it: ReadFrom returns the datagrams the engine queued for pion
// (everything but fast-path ChannelData), WriteTo sends pion's answers.
type engineListener struct {
	e     *engine
	sock  *udpSock
	laddr *net.UDPAddr
	fast  *fastListener // nil without the fast path

	inbox     *pktQueue
	closeOnce sync.Once
}

var _ net.PacketConn = (*engineListener)(nil)

func newEngineListener(e *engine, sock *udpSock) *engineListener {
	l := &engineListener{
		e: e, sock: sock, laddr: net.UDPAddrFromAddrPort(sock.local),
		inbox: newPktQueue(inboxSize),
	}
	sock.lis = l
	return l
}

// deliver queues a datagram for pion (a copy: d is the engine's buffer).
func (l *engineListener) deliver(d []byte, from netip.AddrPort) {
	if !l.inbox.push(d, from) {
		l.e.s.m.queueFull.Inc()
	}
}

func (l *engineListener) ReadFrom(p []byte) (int, net.Addr, error) {
	pkt, err := l.inbox.read()
	if err != nil {
		return 0, nil, err
	}
	return copy(p, pkt.data), net.UDPAddrFromAddrPort(pkt.from), nil
}

// WriteTo sends pion's datagram. pion's writes may wait a moment for room
// in the send buffer, as on a Go socket; the engine's never do.
func (l *engineListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	to, ok := addrPortOf(addr)
	if !ok {
		return 0, errAddrFamily
	}
	n, err := l.sock.sendToWaiting(p, to)
	if bufferFull(err) {
		// Dropped as a full queue drops it; an error would only make pion
		// log one line per datagram.
		l.e.s.m.sendFailed.Inc()
		return len(p), nil
	}
	return n, err
}

func (l *engineListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.inbox.discard()
		err = l.sock.Close()
	})
	return err
}

func (l *engineListener) LocalAddr() net.Addr                { return l.laddr }
func (l *engineListener) SetDeadline(t time.Time) error      { l.inbox.rd.set(t); return nil }
func (l *engineListener) SetReadDeadline(t time.Time) error  { l.inbox.rd.set(t); return nil }
func (l *engineListener) SetWriteDeadline(t time.Time) error { return nil }

// sendWait bounds how long pion's send waits for room in a full send
// buffer before the datagram is dropped.
const sendWait = 100 * time.Millisecond

// sendToWaiting is sendTo for pion's goroutines: a full send buffer is
// waited on (briefly) instead of dropping the datagram at once. The wait
// holds no lock, so closing the socket meanwhile stalls nobody (polling a
// descriptor number closed meanwhile only ends the wait early).
func (s *udpSock) sendToWaiting(p []byte, to netip.AddrPort) (int, error) {
	n, err := s.sendTo(p, to)
	if !bufferFull(err) {
		return n, err
	}
	s.mu.RLock()
	fd, closed := s.fd, s.closed
	s.mu.RUnlock()
	if closed {
		return 0, errSockClosed
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	_, _ = unix.Poll(fds, int(sendWait/time.Millisecond))
	return s.sendTo(p, to)
}
