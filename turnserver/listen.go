package turnserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// ListenUDP binds n UDP sockets to addr with SO_REUSEPORT, so the kernel
// spreads clients over n reader goroutines (one socket cannot keep up with a
// busy relay: see reference/turn.md). bufSize is asked for as SO_RCVBUF and
// SO_SNDBUF; the returned size is what the kernel granted on the first
// socket, so the caller can log a cap.
//
// The first socket is bound without SO_REUSEPORT and only then allowed to
// share its port, so the bind fails if anything holds the port already.
// Bound with SO_REUSEPORT at once, it would silently join any socket of the
// same user on that port (coturn's, turnutils_peer's, a second icebox's) and
// the kernel would hand part of the clients to it; with port 0, Linux may
// even pick such a port. The other n-1 sockets then join the first.
//
// Windows has no SO_REUSEPORT (its SO_REUSEADDR would let another process
// take the port over), so one socket is bound there whatever n is. The
// BSDs and macOS share the port but do not spread datagrams over the
// sockets.
func ListenUDP(ctx context.Context, addr string, n, bufSize int) ([]net.PacketConn, int, error) {
	if n < 1 || !haveReusePort {
		n = 1
	}
	first := net.ListenConfig{Control: setBuffers(bufSize)}
	pc, err := first.ListenPacket(ctx, "udp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			err = fmt.Errorf("%w (another socket holds the port: another process such as coturn or a second icebox, "+
				"or another turn.listen.udp entry — [::]:port also takes IPv4)", err)
		}
		return nil, 0, fmt.Errorf("turnserver: listen udp %s: %w", addr, err)
	}
	conns := []net.PacketConn{pc}
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close() // already failing; the bind error is the one to report
		}
	}
	if n > 1 {
		if err := reusePort(pc.(syscall.Conn)); err != nil {
			closeAll()
			return nil, 0, fmt.Errorf("turnserver: listen udp %s: SO_REUSEPORT: %w", addr, err)
		}
	}
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		if err := reusePortRaw(c); err != nil {
			return err
		}
		return setBuffers(bufSize)(network, address, c)
	}}
	addr = pc.LocalAddr().String()
	for len(conns) < n {
		pc, err := lc.ListenPacket(ctx, "udp", addr)
		if err != nil {
			closeAll()
			return nil, 0, fmt.Errorf("turnserver: listen udp %s: %w", addr, err)
		}
		conns = append(conns, pc)
	}
	granted, err := recvBuffer(conns[0])
	if err != nil {
		closeAll()
		return nil, 0, err
	}
	return conns, granted, nil
}

// ListenTCP binds a TCP listener for TURN over TCP or TLS.
func ListenTCP(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("turnserver: listen tcp %s: %w", addr, err)
	}
	return l, nil
}

// reusePort sets SO_REUSEPORT on a bound socket.
func reusePort(c syscall.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	return reusePortRaw(rc)
}
