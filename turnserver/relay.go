package turnserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/pion/transport/v5/reuseport"
	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
)

// relaySocketBuffer is the receive/send buffer asked for on each relay
// socket. A relay socket carries one client's media (a few hundred packets a
// second at most), so it needs far less than a listener; 1 MiB absorbs
// scheduling stalls without letting 10 000 allocations pin gigabytes.
const relaySocketBuffer = 1 << 20

// portTries is how many random ports are tried before an allocation fails.
const portTries = 64

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
	bind := func(network, addr string) (any, error) {
		lc := net.ListenConfig{Control: setBuffers(relaySocketBuffer)}
		return lc.ListenPacket(context.Background(), network, addr)
	}
	if conf.UserID == "" {
		// pion probes for a free even port (EVEN-PORT, which coturn's
		// client sends) with no user and closes the socket at once; the
		// real allocation then asks for that port.
		pc, port, err := s.bindRelay(conf.Network, bindIP, 0, bind)
		if err != nil {
			return nil, nil, err
		}
		return pc.(net.PacketConn), &net.UDPAddr{IP: advertised.AsSlice(), Port: port}, nil
	}
	a, err := s.newAllocation(conf.UserID, conf.Network)
	if err != nil {
		return nil, nil, err
	}
	pc, port, err := s.bindRelay(conf.Network, bindIP, conf.RequestedPort, bind)
	if err != nil {
		s.reg.release(a)
		return nil, nil, err
	}
	relay := &net.UDPAddr{IP: advertised.AsSlice(), Port: port}
	rc := &relayPacketConn{UDPConn: pc.(*net.UDPConn), s: s, a: a}
	s.track(a, relay, rc)
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
	l, port, err := s.bindRelay(conf.Network, bindIP, conf.RequestedPort, func(network, addr string) (any, error) {
		// SO_REUSEPORT lets Connect bind outgoing peer connections to the
		// relay address, as RFC 6062 requires.
		lc := net.ListenConfig{Control: reuseport.Control}
		return lc.Listen(context.Background(), network, addr)
	})
	if err != nil {
		s.reg.release(a)
		return nil, nil, err
	}
	relay := &net.TCPAddr{IP: advertised.AsSlice(), Port: port}
	rl := &relayListener{Listener: l.(net.Listener), s: s, a: a}
	s.track(a, relay, rl)
	return rl, relay, nil
}

// AllocateConn dials a peer for a TCP allocation's Connect request, from the
// relay's bound address, after checking the peer policy.
func (ra relayAllocator) AllocateConn(conf turn.AllocateConnConfig) (net.Conn, error) {
	s := ra.s
	peer, ok := addrPortOf(conf.RemoteAddr)
	if !ok || !s.policy.Allow(peer) {
		s.m.peerDenied.WithLabelValues(stageConnect).Inc()
		return nil, errPeerDenied
	}
	bindIP, _, err := s.relayAddrs(conf.Network)
	if err != nil {
		return nil, err
	}
	local, ok := addrPortOf(conf.LocalAddr)
	if !ok {
		return nil, fmt.Errorf("turnserver: connect: unexpected local address %v", conf.LocalAddr)
	}
	d := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(bindIP, local.Port())),
		Control:   reuseport.Control,
		Timeout:   10 * time.Second,
	}
	return d.Dial(conf.Network, peer.String())
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
	a := &allocation{user: claims.User, callID: claims.CallID, network: network, created: s.now()}
	if q := s.reg.reserve(a); q != "" {
		s.m.quotaRejected.WithLabelValues(q).Inc()
		return nil, fmt.Errorf("%w: %s", errQuota, q)
	}
	return a, nil
}

// bindRelay binds a socket on a random port of the relay range (or the
// requested one, if it is inside the range).
func (s *Server) bindRelay(network string, ip netip.Addr, requested int,
	bind func(network, addr string) (any, error),
) (any, int, error) {
	lo, hi := int(s.cfg.MinPort), int(s.cfg.MaxPort)
	if requested != 0 {
		if requested < lo || requested > hi {
			return nil, 0, errPortOutOfRange
		}
		c, err := bind(network, net.JoinHostPort(ip.String(), strconv.Itoa(requested)))
		return c, requested, err
	}
	var lastErr error
	for range portTries {
		port := lo + rand.IntN(hi-lo+1)
		c, err := bind(network, net.JoinHostPort(ip.String(), strconv.Itoa(port)))
		if err == nil {
			return c, port, nil
		}
		lastErr = err
	}
	return nil, 0, fmt.Errorf("%w: %w", errNoRelayPort, lastErr)
}

// track arms the allocation's lifetime cap and makes it revocable. A call
// revoked while this allocation was being set up is closed at once.
func (s *Server) track(a *allocation, relay net.Addr, c io.Closer) {
	capTimer := time.AfterFunc(s.cfg.MaxAllocationDuration, func() {
		s.log.Info().Str("user", a.user).Str("call_id", a.callID).Stringer("relay", relay).
			Msg("allocation reached max_allocation_duration; closing")
		if err := c.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing allocation at its cap")
		}
	})
	s.reg.activate(a, relay, c, capTimer)
	if a.callID != "" && s.isRevoked(a.callID) {
		if err := c.Close(); err != nil {
			s.log.Warn().Err(err).Msg("closing allocation of a revoked call")
		}
	}
}

// release is called once when a relay socket or listener closes.
func (s *Server) release(a *allocation) {
	s.reg.release(a)
	s.reg.mu.Lock()
	capTimer := a.capTimer
	s.reg.mu.Unlock()
	if capTimer != nil {
		capTimer.Stop()
	}
}

// relayPacketConn is a UDP relay socket: it applies the peer policy to every
// packet sent (TURN permissions name IPs, not ports), counts traffic, and
// unregisters the allocation when closed.
type relayPacketConn struct {
	*net.UDPConn
	s    *Server
	a    *allocation
	once sync.Once
}

func (c *relayPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	peer, ok := addrPortOf(addr)
	if !ok || !c.s.policy.Allow(peer) {
		c.s.m.peerDenied.WithLabelValues(stageSend).Inc()
		// Drop silently: an error here only makes pion log per packet.
		return len(p), nil
	}
	n, err := c.UDPConn.WriteToUDPAddrPort(p, peer)
	if err == nil {
		c.a.bytesToPeer.Add(uint64(n))
		c.a.packetsToPeer.Add(1)
		c.s.m.bytesToPeer.Add(float64(n))
		c.s.m.packetsToPeer.Inc()
	}
	return n, err
}

func (c *relayPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.UDPConn.ReadFrom(p)
	if err == nil {
		c.a.bytesFromPeer.Add(uint64(n))
		c.a.packetsFromPeer.Add(1)
		c.s.m.bytesFromPeer.Add(float64(n))
		c.s.m.packetsFromPeer.Inc()
	}
	return n, addr, err
}

func (c *relayPacketConn) Close() error {
	err := c.UDPConn.Close()
	c.once.Do(func() { c.s.release(c.a) })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// relayListener is a TCP relay listener (RFC 6062).
type relayListener struct {
	net.Listener
	s    *Server
	a    *allocation
	once sync.Once
}

func (l *relayListener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() { l.s.release(l.a) })
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// setBuffers returns a socket Control func that asks for SO_RCVBUF and
// SO_SNDBUF of size bytes (the kernel may cap them; see ListenUDP).
func setBuffers(size int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if size <= 0 {
			return nil
		}
		// The *FORCE variants pass net.core.[rw]mem_max when the process may
		// (CAP_NET_ADMIN); otherwise the plain ones are capped by the kernel,
		// which ListenUDP reports. Neither failure stops the bind.
		return c.Control(func(fd uintptr) {
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
			}
			if syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size) != nil {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, size)
			}
		})
	}
}
