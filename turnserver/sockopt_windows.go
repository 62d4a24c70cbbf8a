package turnserver

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"
)

// Socket options of ListenUDP's sockets on Windows.

// haveReusePort: Windows has no SO_REUSEPORT; its SO_REUSEADDR would let
// any other socket take the port over, so ListenUDP binds one socket.
const haveReusePort = false

var errNoReusePort = errors.New("turnserver: SO_REUSEPORT is not available on windows")

func reusePortRaw(syscall.RawConn) error { return errNoReusePort }

// setBuffers returns a socket Control func that asks for SO_RCVBUF and
// SO_SNDBUF of size bytes. Neither failure stops the bind.
func setBuffers(size int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if size <= 0 {
			return nil
		}
		return c.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, size)
			_ = syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, size)
		})
	}
}

// recvBuffer reads back SO_RCVBUF.
func recvBuffer(pc net.PacketConn) (int, error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return 0, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("turnserver: %w", err)
	}
	var size int32
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		l := int32(unsafe.Sizeof(size))
		sockErr = syscall.Getsockopt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, (*byte)(unsafe.Pointer(&size)), &l)
	}); err != nil {
		return 0, fmt.Errorf("turnserver: %w", err)
	}
	if sockErr != nil {
		return 0, fmt.Errorf("turnserver: getsockopt SO_RCVBUF: %w", sockErr)
	}
	return int(size), nil
}
