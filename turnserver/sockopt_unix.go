//go:build unix

package turnserver

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket options of ListenUDP's sockets on Unix systems.

// haveReusePort: several sockets may share a port (SO_REUSEPORT).
const haveReusePort = true

// setBuffers returns a socket Control func that asks for SO_RCVBUF and
// SO_SNDBUF of size bytes (the kernel may cap them; see ListenUDP).
func setBuffers(size int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		if size <= 0 {
			return nil
		}
		return c.Control(func(fd uintptr) { setSockBuffers(int(fd), size) })
	}
}

func reusePortRaw(c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	return errors.Join(err, sockErr)
}

// recvBuffer reads back SO_RCVBUF, in the units it was asked for
// (rcvbufReportScale).
func recvBuffer(pc net.PacketConn) (int, error) {
	sc, ok := pc.(syscall.Conn)
	if !ok {
		return 0, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("turnserver: %w", err)
	}
	var size int
	var sockErr error
	if err := rc.Control(func(fd uintptr) {
		size, sockErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}); err != nil {
		return 0, fmt.Errorf("turnserver: %w", err)
	}
	if sockErr != nil {
		return 0, fmt.Errorf("turnserver: getsockopt SO_RCVBUF: %w", sockErr)
	}
	return size / rcvbufReportScale, nil
}
