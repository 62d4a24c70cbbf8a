package probe

import "net"

// connectedPacketConn lets the TURN client use a connected UDP socket: every
// write goes to the server, every read comes from it.
type connectedPacketConn struct{ *net.UDPConn }

func (c connectedPacketConn) WriteTo(b []byte, _ net.Addr) (int, error) { return c.Write(b) }

func (c connectedPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.Read(b)
	return n, c.RemoteAddr(), err
}
