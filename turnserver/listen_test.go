package turnserver

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// holdReusePort binds a UDP socket on 127.0.0.1 with SO_REUSEPORT, as
// coturn and turnutils_peer bind theirs.
func holdReusePort(t *testing.T) net.PacketConn {
	t.Helper()
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return reusePortRaw(c) }}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestListenUDPRefusesAHeldPort: a port another process's SO_REUSEPORT
// socket holds is refused with a clear error, not silently shared (the
// kernel would hand part of the clients to the other socket).
func TestListenUDPRefusesAHeldPort(t *testing.T) {
	other := holdReusePort(t)
	conns, _, err := ListenUDP(context.Background(), other.LocalAddr().String(), 2, 0)
	if err == nil {
		for _, c := range conns {
			c.Close()
		}
		t.Fatalf("ListenUDP on %s, held by another SO_REUSEPORT socket, succeeded", other.LocalAddr())
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "another socket holds the port") {
		t.Errorf("error %q, want EADDRINUSE explained", err)
	}
}

// TestListenUDPSocketsShareOnlyTheirPort: the n sockets share one port and
// each receives datagrams; a plain socket cannot bind it. (A later socket of
// the same user with SO_REUSEPORT still could: Linux allows that.)
func TestListenUDPSocketsShareOnlyTheirPort(t *testing.T) {
	conns, _, err := ListenUDP(context.Background(), "127.0.0.1:0", 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	addr := conns[0].LocalAddr().String()
	if got := conns[1].LocalAddr().String(); got != addr {
		t.Fatalf("sockets on %s and %s, want one port", addr, got)
	}
	if pc, err := net.ListenPacket("udp4", addr); err == nil {
		pc.Close()
		t.Errorf("a plain socket could bind %s", addr)
	}
	received := make(chan int, 64)
	for i, c := range conns {
		go func() {
			buf := make([]byte, 16)
			for {
				if _, _, err := c.ReadFrom(buf); err != nil {
					return
				}
				received <- i
			}
		}()
	}
	dst, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	var per [2]int
	const sources = 64 // the kernel hashes each source to one socket
	for range sources {
		s, err := net.DialUDP("udp4", nil, dst)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	timeout := time.After(5 * time.Second)
	for range sources {
		select {
		case i := <-received:
			per[i]++
		case <-timeout:
			t.Fatalf("received %v of %d datagrams", per, sources)
		}
	}
	if per[0] == 0 || per[1] == 0 {
		t.Errorf("datagrams per socket %v: want both sockets to receive", per)
	}
}
