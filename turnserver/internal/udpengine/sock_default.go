//go:build !linux || icebox_portable

package udpengine

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
)

// Socket is one UDP socket of Go's net package, read by one reader
// goroutine of the portable engine and written by any goroutine.
type Socket struct {
	c      *net.UDPConn
	local  netip.AddrPort
	v4     bool // an IPv4 socket: IPv4 destinations only, unmapped
	closed atomic.Bool

	h Handler // set when the socket is added to the engine
}

// Open binds a UDP socket on addr with a receive buffer of bufSize bytes
// (best effort).
func Open(addr netip.AddrPort, bufSize int) (*Socket, error) {
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())))
	if err != nil {
		return nil, err
	}
	if bufSize > 0 {
		_ = c.SetReadBuffer(bufSize)
	}
	local := addr
	if addr.Port() == 0 {
		local = netip.AddrPortFrom(addr.Addr(), uint16(c.LocalAddr().(*net.UDPAddr).Port))
	}
	return &Socket{c: c, local: local, v4: network == "udp4"}, nil
}

// Adopt takes over a socket bound by Go (a listener from ListenUDP).
func Adopt(pc net.PacketConn) (*Socket, error) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("udpengine: UDP listener is a %T, want *net.UDPConn", pc)
	}
	local := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	// Go binds an IPv4 address (0.0.0.0 included) with an IPv4 socket, and
	// [::] with a dual-stack IPv6 one.
	return &Socket{c: uc, local: local, v4: local.Addr().Unmap().Is4()}, nil
}

// LocalAddr is the address the socket is bound to.
func (s *Socket) LocalAddr() netip.AddrPort { return s.local }

// SendTo sends p to addr.
func (s *Socket) SendTo(p []byte, to netip.AddrPort) (int, error) {
	if s.v4 {
		if !to.Addr().Unmap().Is4() {
			return 0, errAddrFamily
		}
		to = netip.AddrPortFrom(to.Addr().Unmap(), to.Port())
	}
	return s.c.WriteToUDPAddrPort(p, to)
}

// SendToWaiting is SendTo: Go's poller waits for room in the send buffer
// anyway.
func (s *Socket) SendToWaiting(p []byte, to netip.AddrPort) (int, error) { return s.SendTo(p, to) }

// Close closes the socket once; later operations return net.ErrClosed.
func (s *Socket) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.c.Close()
}

// BufferFull reports whether err says the socket's send buffer (or the
// kernel's) had no room: the datagram is dropped, as a full queue drops it.
func BufferFull(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOBUFS)
}
