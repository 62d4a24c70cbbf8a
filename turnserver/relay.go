package turnserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v5/reuseport"
	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

// relaySocketBuffer is the receive buffer asked for on each relay
// socket. A relay socket carries one client's media (a few hundred packets a
// second at most), so it needs far less than a listener; 1 MiB absorbs
// scheduling stalls without letting 10 000 allocations pin gigabytes.
const relaySocketBuffer = 1 << 20

// bindTries is how many ports are bound before an allocation fails. Ports
// are drawn from the registry's free set, so a bind fails only where another
// process holds the port.
const bindTries = 64

// connectTimeout bounds the dial of an RFC 6062 Connect. RFC 6062 §5.2: "The
// timeout value MUST be at least 30 seconds" — a peer behind a slow or lossy
// path gets SYN retransmissions (1 s, 3 s, 7 s, 15 s) before it is given up.
const connectTimeout = 30 * time.Second

// relayAllocator implements turn.RelayAddressGenerator: it binds relay
// sockets in the configured port range, advertises the public address, and
// wraps every socket so the server can count, police and close it.
type relayAllocator struct {
	s *Server
}

var _ turn.RelayAddressGenerator = relayAllocator{}

func (ra relayAllocator) Validate() error { return nil }

// AllocatePacketConn binds a UDP relay socket for a new allocation.
func (ra relayAllocator) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	s := ra.s
	bindIP, advertised, err := s.relayAddrs(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	if conf.UserID == "" {
		// pion probes for a free even port (EVEN-PORT, which coturn's
		// client sends) with no user and closes the socket at once; the
		// real allocation then asks for that port.
		c, port, err := s.bindRelay(conf.Network, bindIP, 0, func(network, addr string) (io.Closer, error) {
			return net.ListenPacket(network, addr)
		})
		if err != nil {
			return nil, nil, err
		}
		probe := &probeConn{PacketConn: c.(net.PacketConn), release: func() { s.reg.releasePort(port.network, port.port) }}
		return probe, &net.UDPAddr{IP: advertised.AsSlice(), Port: int(port.port)}, nil
	}
	a, err := s.newAllocation(conf.UserID, conf.Network)
	if err != nil {
		return nil, nil, err
	}
	c, port, err := s.bindRelay(conf.Network, bindIP, conf.RequestedPort, func(_, addr string) (io.Closer, error) {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, fmt.Errorf("turnserver: relay address %q: %w", addr, err)
		}
		return udpengine.Open(ap, relaySocketBuffer)
	})
	if err != nil {
		s.reg.release(a)
		return nil, nil, err
	}
	relay := &net.UDPAddr{IP: advertised.AsSlice(), Port: int(port.port)}
	rc := newRelayPacketConn(s, a, port, c.(*udpengine.Socket))
	s.relays.Store(port, rc) // before pion answers the Allocate (fastListener.learnAllocation)
	if err := s.engine.Add(rc.sock, rc); err != nil {
		return nil, nil, errors.Join(err, rc.Close())
	}
	if err := s.track(a, relay, rc); err != nil {
		return nil, nil, err
	}
	return rc, relay, nil
}

// AllocateListener binds a TCP relay listener (RFC 6062) for a new allocation.
func (ra relayAllocator) AllocateListener(conf turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	s := ra.s
	bindIP, advertised, err := s.relayAddrs(conf.Network)
	if err != nil {
		return nil, nil, err
	}
	a, err := s.newAllocation(conf.UserID, conf.Network)
	if err != nil {
		return nil, nil, err
	}
	if a.scoped {
		// The SFU speaks UDP; a TCP relay would reach its TCP ports
		// through Connect, outside what the scope checks per datagram.
		s.reg.release(a)
		s.m.scopeRefused.WithLabelValues(scopeStageTCP).Inc()
		return nil, nil, errScopedTCP
	}
	l, port, err := s.bindRelay(conf.Network, bindIP, conf.RequestedPort, func(network, addr string) (io.Closer, error) {
		// SO_REUSEPORT lets Connect bind outgoing peer connections to the
		// relay address, as RFC 6062 requires. It also lets a second
		// listener bind the same port; the registry's port set is what
		// keeps two allocations off one port.
		lc := net.ListenConfig{Control: reuseport.Control}
		return lc.Listen(context.Background(), network, addr)
	})
	if err != nil {
		s.reg.release(a)
		return nil, nil, err
	}
	relay := &net.TCPAddr{IP: advertised.AsSlice(), Port: int(port.port)}
	rl := &relayListener{ln: l.(net.Listener), s: s, a: a, port: port}
	if err := s.track(a, relay, rl); err != nil {
		return nil, nil, err
	}
	return rl, relay, nil
}

// AllocateConn dials a peer for a TCP allocation's Connect request, from the
// relay's bound address, after checking the peer policy. See connect.go for
// why the dial runs here, on the requesting client's own connection
// goroutine, and how it is bounded.
func (ra relayAllocator) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	s := ra.s
	// pion dials for any allocation, from its relay port; RFC 6062 Connect
	// is for TCP allocations only (a UDP allocation's relay address is a
	// *net.UDPAddr).
	if _, ok := conf.LocalAddr.(*net.TCPAddr); !ok {
		return nil, errConnectNotTCP
	}
	peer, ok := addrPortOf(conf.RemoteAddr)
	if !ok || !s.policy.Load().AllowTCP(peer) {
		s.m.peerDenied.WithLabelValues(stageConnect).Inc()
		return nil, errPeerDenied
	}
	bindIP, _, err := s.relayAddrs(conf.Network)
	if err != nil {
		return nil, err
	}
	local, ok := addrPortOf(conf.LocalAddr)
	netIdx, known := relayNetwork(conf.Network)
	if !ok || !known {
		return nil, fmt.Errorf("turnserver: connect: unexpected local address %v", conf.LocalAddr)
	}
	slot := relayPort{network: netIdx, port: local.Port()}
	if !s.dials.acquire(slot) {
		return nil, errConnectBusy
	}
	defer s.dials.release(slot)
	d := connectDialer(netip.AddrPortFrom(bindIP, local.Port()))
	// The server's context ends a pending dial when the server closes.
	return d.DialContext(s.ctx, conf.Network, peer.String())
}

// connectDialer dials RFC 6062 peer connections from the relay address.
func connectDialer(local netip.AddrPort) *net.Dialer {
	return &net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(local),
		Control:   reuseport.Control,
		Timeout:   connectTimeout,
	}
}

// relayAddrs returns the address to bind and the address to advertise for a
// relay of the given network ("udp4", "udp6", "tcp4", "tcp6").
func (s *Server) relayAddrs(network string) (bind, advertised netip.Addr, err error) {
	v6 := network == "udp6" || network == "tcp6"
	if v6 {
		if !s.cfg.RelayIPv6.IsValid() {
			return netip.Addr{}, netip.Addr{}, errNoIPv6Relay
		}
		return s.cfg.RelayBindIPv6, s.cfg.RelayIPv6, nil
	}
	if !s.cfg.RelayIPv4.IsValid() {
		return netip.Addr{}, netip.Addr{}, errNoIPv4Relay
	}
	return s.cfg.RelayBindIPv4, s.cfg.RelayIPv4, nil
}

// newAllocation parses the authenticated username and reserves a quota slot.
func (s *Server) newAllocation(username, network string) (*allocation, error) {
	claims, err := credentials.ParseUsername(username)
	if err != nil {
		return nil, fmt.Errorf("turnserver: allocate: %w", err)
	}
	a := &allocation{user: claims.User, callID: claims.CallID, network: network, created: s.now(), scoped: claims.SFU}
	q, err := s.reg.reserve(a)
	if err != nil {
		return nil, err
	}
	if q != "" {
		s.m.quotaRejected.WithLabelValues(q).Inc()
		return nil, fmt.Errorf("%w: %s", errQuota, q)
	}
	return a, nil
}

// relayPortOf is the registry's key of a relay address (a *net.UDPAddr or
// *net.TCPAddr).
func relayPortOf(relay net.Addr) (relayPort, bool) {
	switch a := relay.(type) {
	case *net.UDPAddr:
		return udpRelayPort(a.IP, a.Port), true
	case *net.TCPAddr:
		network := netTCP4
		if a.IP.To4() == nil {
			network = netTCP6
		}
		return relayPort{network: network, port: uint16(a.Port)}, true
	}
	return relayPort{}, false
}

// relayPort is a port taken in the registry's port set.
type relayPort struct {
	network int // netUDP4, …
	port    uint16
}

// bindRelay binds a socket on a free port of the relay range (or the
// requested one, if it is inside the range and free). The port is reserved
// in the registry before the bind and stays reserved until the socket's
// wrapper releases it on close.
func (s *Server) bindRelay(network string, ip netip.Addr, requested int,
	bind func(network, addr string) (io.Closer, error),
) (io.Closer, relayPort, error) {
	netIdx, ok := relayNetwork(network)
	if !ok {
		return nil, relayPort{}, fmt.Errorf("turnserver: unsupported relay network %q", network)
	}
	lo, hi := s.cfg.MinPort, s.cfg.MaxPort
	if requested != 0 && (requested < int(lo) || requested > int(hi)) {
		return nil, relayPort{}, errPortOutOfRange
	}
	var lastErr error
	for range bindTries {
		port, ok := s.reg.reservePort(netIdx, lo, hi, uint16(requested))
		if !ok {
			if s.reg.isClosed() {
				return nil, relayPort{}, errServerClosed
			}
			if requested != 0 {
				return nil, relayPort{}, fmt.Errorf("%w: port %d is taken", errNoRelayPort, requested)
			}
			return nil, relayPort{}, errNoRelayPort
		}
		c, err := bind(network, net.JoinHostPort(ip.String(), strconv.Itoa(int(port))))
		if err == nil {
			s.reg.portBound(netIdx, port)
			return c, relayPort{network: netIdx, port: port}, nil
		}
		s.reg.releasePort(netIdx, port)
		if requested != 0 {
			return nil, relayPort{}, err
		}
		lastErr = err // held by another process; try another
	}
	return nil, relayPort{}, fmt.Errorf("%w: %w", errNoRelayPort, lastErr)
}

// track arms the allocation's lifetime cap and makes it revocable. An
// allocation of a call revoked while it was being set up, or one the
// server's Close did not see, is closed at once and the error returned (pion
// answers 508 rather than hand out a dead relay address).
func (s *Server) track(a *allocation, relay net.Addr, c io.Closer) error {
	if hook := s.testHookTrack.Load(); hook != nil {
		(*hook)(relay)
	}
	capTimer := time.AfterFunc(s.cfg.MaxAllocationDuration, func() {
		s.log.Info().Str("user", a.user).Str("call_id", a.callID).Stringer("relay", relay).
			Msg("allocation reached max_allocation_duration; closing")
		if err := c.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing allocation at its cap")
		}
	})
	port, _ := relayPortOf(relay)
	if !s.reg.activate(a, relay, port, c, capTimer) {
		return errors.Join(errServerClosed, c.Close())
	}
	if a.callID != "" && s.isRevoked(a.callID) {
		return errors.Join(errCallRevoked, c.Close())
	}
	return nil
}

// release is called once when a relay socket or listener closes.
func (s *Server) release(a *allocation, port relayPort) {
	s.reg.mu.Lock()
	capTimer := a.capTimer
	s.reg.mu.Unlock()
	if capTimer != nil {
		capTimer.Stop()
	}
	s.reg.releasePort(port.network, port.port)
	s.reg.release(a)
}

// relayPacketConn is a UDP relay socket: it applies the peer policy to every
// packet sent (TURN permissions name IPs, not ports), counts traffic, and
// unregisters the allocation when closed. The relay engine reads the socket
// (Receive, fastpath.go); pion reads what the channel fast path does not relay. It
// implements net.PacketConn and nothing more: nothing can reach a peer
// around the policy.
type relayPacketConn struct {
	sock  *udpengine.Socket
	laddr *net.UDPAddr
	s     *Server
	a     *allocation
	port  relayPort
	once  sync.Once

	inbox *udpengine.Inbox // datagrams for pion

	// The last peer ReadFrom returned, and its net.Addr (the reader's): a
	// call's steady stream from one peer allocates no address.
	lastFrom     netip.AddrPort
	lastFromAddr *net.UDPAddr

	// The peer IPs pion holds a permission for, as its permission events
	// report them (copy-on-write under bindMu, nil until the first; a count
	// per IP). pion relays a bound channel's data without looking at the
	// permission its ChannelBind installed, also after it expired (RFC 8656
	// §12 says the channel's data must stop then); icebox checks this set
	// on every relayed datagram instead, both ways.
	perms atomic.Pointer[map[netip.Addr]int]

	// The channel fast path (fastpath.go): the peers bound to channels
	// (copy-on-write, nil until the first).
	peers   atomic.Pointer[map[netip.AddrPort]*binding]
	bindMu  sync.Mutex
	closed  atomic.Bool
	onClose []func() // under bindMu: the fast path forgets the socket
}

var (
	_ net.PacketConn    = (*relayPacketConn)(nil)
	_ udpengine.Handler = (*relayPacketConn)(nil)
)

func newRelayPacketConn(s *Server, a *allocation, port relayPort, sock *udpengine.Socket) *relayPacketConn {
	return &relayPacketConn{
		sock: sock, laddr: net.UDPAddrFromAddrPort(sock.LocalAddr()), s: s, a: a, port: port,
		inbox: udpengine.NewInbox(relayInboxSize),
	}
}

// WriteTo sends pion's datagram to a peer (a Send indication's or an
// unbound channel's payload).
func (c *relayPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	peer, ok := addrPortOf(addr)
	if !ok {
		c.s.m.peerDenied.WithLabelValues(stageSend).Inc()
		return len(p), nil
	}
	return c.send(p, netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port()), true, time.Time{})
}

// writeToPeer sends p to peer for the fast path; it never waits: a
// datagram the kernel cannot take now is dropped.
func (c *relayPacketConn) writeToPeer(p []byte, peer netip.AddrPort, now time.Time) {
	_, _ = c.send(p, peer, false, now)
}

// send sends p to peer (unmapped) if the peer policy allows it, and counts
// it. A refused peer or a full send buffer drops the datagram and reports
// success: an error here only makes pion log one line per datagram. wait
// is for pion's goroutines (SendToWaiting); the engine never waits. now is
// the engine round's time for the bandwidth limits; zero: read the clock
// (only when a limit is on).
func (c *relayPacketConn) send(p []byte, peer netip.AddrPort, wait bool, now time.Time) (int, error) {
	if !c.permitted(peer.Addr()) {
		c.s.m.noPermission.Inc()
		return len(p), nil
	}
	if c.a.scoped {
		if !c.s.allowScoped(peer) {
			c.s.m.scopeRefused.WithLabelValues(scopeStageSend).Inc()
			return len(p), nil
		}
	} else if !c.s.policy.Load().Allow(peer) {
		c.s.m.peerDenied.WithLabelValues(stageSend).Inc()
		return len(p), nil
	}
	if bw := c.s.reg.bw; bw.on.Load() {
		if now.IsZero() {
			now = time.Now()
		}
		if !bw.admit(c.a, dirToPeer, len(p), now) {
			return len(p), nil
		}
	}
	var n int
	var err error
	if wait {
		n, err = c.sock.SendToWaiting(p, peer)
	} else {
		n, err = c.sock.SendTo(p, peer)
	}
	switch {
	case err == nil:
		c.a.bytesToPeer.Add(uint64(n))
		c.a.packetsToPeer.Add(1)
		return n, nil
	case udpengine.BufferFull(err) || (!wait && udpengine.SocketError(err)):
		c.s.m.sendFailed.Inc()
		return len(p), nil
	}
	return n, err
}

// deliver queues a peer's datagram for pion (a copy: d is the engine's
// buffer); now is the engine round's time.
func (c *relayPacketConn) deliver(d []byte, from netip.AddrPort, now time.Time) {
	if !c.permitted(from.Addr()) {
		c.s.m.noPermission.Inc()
		return
	}
	// Charged after the permission check: a stranger writing to the relay
	// port spends nobody's bandwidth.
	if bw := c.s.reg.bw; bw.on.Load() && !bw.admit(c.a, dirFromPeer, len(d), now) {
		return
	}
	c.a.bytesFromPeer.Add(uint64(len(d)))
	c.a.packetsFromPeer.Add(1)
	if !c.inbox.Push(d, from) {
		c.s.m.queueFull.Inc()
	}
}

// permitted reports whether pion holds a permission for the (unmapped)
// peer IP.
func (c *relayPacketConn) permitted(ip netip.Addr) bool {
	perms := c.perms.Load()
	return perms != nil && (*perms)[ip] > 0
}

// permit counts a permission pion created for ip (delta 1) or deleted
// (delta -1).
func (c *relayPacketConn) permit(ip netip.Addr, delta int) {
	defer c.kernelSync()
	c.bindMu.Lock()
	defer c.bindMu.Unlock()
	m := make(map[netip.Addr]int)
	if old := c.perms.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	if n := m[ip] + delta; n > 0 {
		m[ip] = n
	} else {
		delete(m, ip)
	}
	c.perms.Store(&m)
}

// onPermission is pion's OnPermissionCreated (delta 1) and
// OnPermissionDeleted (delta -1): it keeps the relay socket's permission set
// (relayPacketConn.perms) in step with pion's.
func (s *Server) onPermission(delta int) func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
	return func(_, _ net.Addr, _, _, _ string, relay net.Addr, peer net.IP) {
		ra, ok := relay.(*net.UDPAddr) // TCP allocations relay over connections, not this socket
		ip, iok := addrOf(peer)
		if !ok || !iok {
			return
		}
		if rc := s.relayConn(udpRelayPort(ra.IP, ra.Port)); rc != nil {
			rc.permit(ip, delta)
		}
	}
}

// ReadFrom returns the next peer datagram the fast path left to pion.
// pion's relay loop is the only reader.
func (c *relayPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	pkt, err := c.inbox.Read()
	if err != nil {
		return 0, nil, err
	}
	if pkt.From != c.lastFrom || c.lastFromAddr == nil {
		c.lastFrom, c.lastFromAddr = pkt.From, net.UDPAddrFromAddrPort(pkt.From)
	}
	return copy(p, pkt.Data), c.lastFromAddr, nil
}

func (c *relayPacketConn) Close() error {
	c.bindMu.Lock()
	c.closed.Store(true)
	forget := c.onClose
	c.onClose = nil
	c.bindMu.Unlock()
	for _, f := range forget {
		f()
	}
	if k := c.s.reg.kernel.Load(); k != nil {
		k.drop(c) // before the port can be bound again
	}
	err := c.sock.Close()
	c.once.Do(func() {
		c.inbox.Discard()
		c.s.relays.CompareAndDelete(c.port, c)
		c.s.release(c.a, c.port)
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (c *relayPacketConn) LocalAddr() net.Addr                { return c.laddr }
func (c *relayPacketConn) SetDeadline(t time.Time) error      { c.inbox.SetReadDeadline(t); return nil }
func (c *relayPacketConn) SetReadDeadline(t time.Time) error  { c.inbox.SetReadDeadline(t); return nil }
func (c *relayPacketConn) SetWriteDeadline(t time.Time) error { return nil }

// relayListener is a TCP relay listener (RFC 6062). It implements
// net.Listener only.
type relayListener struct {
	ln   net.Listener
	s    *Server
	a    *allocation
	port relayPort
	once sync.Once
}

var _ net.Listener = (*relayListener)(nil)

// Accept returns the next peer connection the policy allows. pion checks
// that the peer has a permission, but a permission may predate a reload
// that denied the peer (or its address becoming one of this host's): the
// policy decides here as it does for every datagram.
func (l *relayListener) Accept() (net.Conn, error) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return nil, err
		}
		if peer, ok := addrPortOf(c.RemoteAddr()); ok &&
			l.s.policy.Load().AllowTCP(netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())) {
			return c, nil
		}
		l.s.m.peerDenied.WithLabelValues(stageReceive).Inc()
		_ = c.Close()
	}
}

func (l *relayListener) Addr() net.Addr { return l.ln.Addr() }

func (l *relayListener) Close() error {
	err := l.ln.Close()
	l.once.Do(func() { l.s.release(l.a, l.port) })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// probeConn is the socket of pion's EVEN-PORT probe: no allocation, no
// relaying; closing it frees its port.
type probeConn struct {
	net.PacketConn
	release func()
	once    sync.Once
}

func (c *probeConn) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(c.release)
	return err
}
