package turnserver

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

const (
	// inboxSize bounds the datagrams queued for pion per listener socket;
	// past it they are dropped and counted (pion is not keeping up).
	inboxSize = 4096
	// relayInboxSize is the same for a relay socket, which carries one
	// allocation's slow-path traffic (a TCP client's media, Data
	// indications): room for a burst of a video key frame.
	relayInboxSize = 512
)

// engineListener is a UDP listener socket served by the relay engine, as
// pion sees it: ReadFrom returns the datagrams the engine queued for pion
// (everything but fast-path ChannelData), WriteTo sends pion's answers.
// Without the fast path it is the socket's engine Handler itself.
type engineListener struct {
	m     *metrics
	sock  *udpengine.Socket
	laddr *net.UDPAddr

	inbox     *udpengine.Inbox
	closeOnce sync.Once
}

var (
	_ net.PacketConn    = (*engineListener)(nil)
	_ udpengine.Handler = (*engineListener)(nil)
)

func newEngineListener(m *metrics, sock *udpengine.Socket) *engineListener {
	return &engineListener{
		m: m, sock: sock, laddr: net.UDPAddrFromAddrPort(sock.LocalAddr()),
		inbox: udpengine.NewInbox(inboxSize),
	}
}

// Receive queues every datagram for pion (an engine loop calls it).
func (l *engineListener) Receive(_ *udpengine.Round, pkt []byte, from netip.AddrPort) {
	l.deliver(pkt[udpengine.Headroom:], from)
}

// deliver queues a datagram for pion (a copy: d is the engine's buffer).
func (l *engineListener) deliver(d []byte, from netip.AddrPort) {
	if !l.inbox.Push(d, from) {
		l.m.queueFull.Inc()
	}
}

func (l *engineListener) ReadFrom(p []byte) (int, net.Addr, error) {
	pkt, err := l.inbox.Read()
	if err != nil {
		return 0, nil, err
	}
	return copy(p, pkt.Data), net.UDPAddrFromAddrPort(pkt.From), nil
}

// WriteTo sends pion's datagram. pion's writes may wait a moment for room
// in the send buffer, as on a Go socket; the engine's never do.
func (l *engineListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	to, ok := addrPortOf(addr)
	if !ok {
		return 0, fmt.Errorf("turnserver: WriteTo: unsupported address %T", addr)
	}
	n, err := l.sock.SendToWaiting(p, to)
	if udpengine.BufferFull(err) {
		// Dropped as a full queue drops it; an error would only make pion
		// log one line per datagram.
		l.m.sendFailed.Inc()
		return len(p), nil
	}
	return n, err
}

func (l *engineListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.inbox.Discard()
		err = l.sock.Close()
	})
	return err
}

func (l *engineListener) LocalAddr() net.Addr                { return l.laddr }
func (l *engineListener) SetDeadline(t time.Time) error      { l.inbox.SetReadDeadline(t); return nil }
func (l *engineListener) SetReadDeadline(t time.Time) error  { l.inbox.SetReadDeadline(t); return nil }
func (l *engineListener) SetWriteDeadline(t time.Time) error { return nil }
