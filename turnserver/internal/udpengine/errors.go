package udpengine

import (
	"errors"
	"net"
	"syscall"
)

var (
	// errClosed is what adding a socket to a closed engine returns.
	errClosed = errors.New("udpengine: engine closed")
	// errAddrFamily: the destination cannot be reached from the socket's
	// address family (an IPv6 address on an IPv4 socket).
	errAddrFamily = errors.New("udpengine: address family does not match the socket")
)

// SocketError reports whether err is a real failure of a socket (not
// "closed"). BufferFull (per system) tells a full send buffer.
func SocketError(err error) bool {
	return err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EBADF)
}
