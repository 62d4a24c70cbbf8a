package turnserver

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/pion/turn/v5"
)

// freePort returns a loopback port that is free for both TCP and UDP now.
func freePort(t *testing.T) uint16 {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, uerr := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if uerr == nil {
			if err := u.Close(); err != nil {
				t.Fatal(err)
			}
			return uint16(port)
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

func TestTCPRelayPortNotShared(t *testing.T) {
	// A one-port relay range: TCP relay listeners are bound with
	// SO_REUSEPORT, so only the server's own bookkeeping can keep a second
	// TCP allocation off the port the first one holds.
	port := freePort(t)
	r := startRelay(t, relayOptions{allowLoopback: true, minPort: port, maxPort: port})
	alice := r.mint(t, "alice", "", time.Hour)
	first, err := r.newClient(t, overTCP, alice.Username, alice.Password, 0).AllocateTCP()
	if err != nil {
		t.Fatalf("first TCP allocation: %v", err)
	}
	if got := first.Addr().(*net.TCPAddr).Port; got != int(port) {
		t.Fatalf("first TCP allocation on port %d, want %d", got, port)
	}
	bob := r.mint(t, "bob", "", time.Hour)
	_, err = r.newClient(t, overTCP, bob.Username, bob.Password, 0).AllocateTCP()
	requireErrContains(t, err, "508")

	// Ports are reserved per network: a UDP relay may take the same number.
	udp, err := r.newClient(t, overUDP, bob.Username, bob.Password, 0).Allocate()
	if err != nil {
		t.Fatalf("UDP allocation beside the TCP one: %v", err)
	}
	if got := udp.LocalAddr().(*net.UDPAddr).Port; got != int(port) {
		t.Fatalf("UDP allocation on port %d, want %d", got, port)
	}
	if err := udp.Close(); err != nil {
		t.Fatal(err)
	}

	// Closing the first allocation frees the port.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both allocations to close", 5*time.Second, func() bool { return r.srv.AllocationCount() == 0 })
	carol := r.mint(t, "carol", "", time.Hour)
	again, err := r.newClient(t, overTCP, carol.Username, carol.Password, 0).AllocateTCP()
	if err != nil {
		t.Fatalf("TCP allocation after the port was freed: %v", err)
	}
	defer again.Close()
}

// listenInRange binds a "host service" on 127.0.0.1 at a port of the test
// relay range.
func listenInRange(t *testing.T, network string) io.Closer {
	t.Helper()
	for port := 40999; port >= 40000; port-- {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		var c io.Closer
		var err error
		if network == "udp4" {
			c, err = net.ListenPacket(network, addr)
		} else {
			c, err = net.Listen(network, addr)
		}
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
	}
	t.Fatalf("no free %s port in 40000–40999", network)
	return nil
}

func TestOwnRelayAddressOnlyOnLiveRelayPorts(t *testing.T) {
	// The relay advertises 127.0.0.1 and loopback is not allowed, so the
	// only way to 127.0.0.1 is the own-relay-address rule.
	svcUDP := listenInRange(t, "udp4").(net.PacketConn)
	svcTCP := listenInRange(t, "tcp4").(net.Listener)
	r := startRelay(t, relayOptions{})

	alice := r.mint(t, "alice", "", time.Hour)
	bob := r.mint(t, "bob", "", time.Hour)
	bobClient := r.newClient(t, overUDP, bob.Username, bob.Password, 0)
	relayA, err := r.newClient(t, overUDP, alice.Username, alice.Password, 0).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relayA.Close()
	relayB, err := bobClient.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relayB.Close()

	// Relay to relay still works.
	if err := bobClient.CreatePermission(relayA.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatal("bob's relay heard nothing from alice's relay")
		}
		if _, err := relayA.WriteTo([]byte("relay to relay"), relayB.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if err := relayB.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if n, from, err := relayB.ReadFrom(buf); err == nil {
			if string(buf[:n]) != "relay to relay" || from.String() != relayA.LocalAddr().String() {
				t.Fatalf("bob got %q from %v", buf[:n], from)
			}
			break
		}
	}

	// A service in the relay port range is not a relay: its port is not
	// a live allocation's.
	before := r.counter(t, "icebox_turn_peer_denied_total", "stage", stageSend)
	if _, err := relayA.WriteTo([]byte("to wireguard"), svcUDP.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the send to the host service to be denied", 5*time.Second, func() bool {
		return r.counter(t, "icebox_turn_peer_denied_total", "stage", stageSend) == before+1
	})

	// Nor can an RFC 6062 Connect reach a TCP service there.
	tcpAlloc, err := r.newClient(t, overTCP, alice.Username, alice.Password, 0).AllocateTCP()
	if err != nil {
		t.Fatal(err)
	}
	defer tcpAlloc.Close()
	_, err = tcpAlloc.Connect(svcTCP.Addr())
	requireErrContains(t, err, "447")
	if got := r.counter(t, "icebox_turn_peer_denied_total", "stage", stageConnect); got != 1 {
		t.Fatalf("peer_denied{connect} = %v, want 1", got)
	}
}

func TestRelaySocketsExposeOnlyTheNetInterfaces(t *testing.T) {
	// pion gets net.PacketConn / net.Listener; nothing it (or a future
	// caller) could type-assert to may write to a peer around the policy.
	r := startRelay(t, relayOptions{})
	ra := relayAllocator{s: r.srv}
	cred := r.mint(t, "alice", "", time.Hour)
	pc, _, err := ra.AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", UserID: cred.Username})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	for name, ok := range map[string]bool{
		"io.Writer":          is[io.Writer](pc),
		"syscall.Conn":       is[syscall.Conn](pc),
		"WriteToUDP":         is[udpWriter](pc),
		"WriteToUDPAddrPort": is[udpAddrPortWriter](pc),
		"WriteMsgUDP":        is[udpMsgWriter](pc),
		"File":               is[filer](pc),
	} {
		if ok {
			t.Errorf("UDP relay socket has %s", name)
		}
	}
	ln, _, err := ra.AllocateListener(turn.AllocateListenerConfig{Network: "tcp4", UserID: cred.Username})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for name, ok := range map[string]bool{
		"AcceptTCP":    is[tcpAccepter](ln),
		"syscall.Conn": is[syscall.Conn](ln),
		"File":         is[filer](ln),
		"SetDeadline":  is[deadliner](ln),
	} {
		if ok {
			t.Errorf("TCP relay listener has %s", name)
		}
	}
}

// Methods of *net.UDPConn and *net.TCPListener that must not leak through
// the relay wrappers.
type (
	udpWriter interface {
		WriteToUDP([]byte, *net.UDPAddr) (int, error)
	}
	udpAddrPortWriter interface {
		WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
	}
	udpMsgWriter interface {
		WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error)
	}
	filer       interface{ File() (*os.File, error) }
	tcpAccepter interface{ AcceptTCP() (*net.TCPConn, error) }
	deadliner   interface{ SetDeadline(time.Time) error }
)

func is[I any](v any) bool {
	_, ok := v.(I)
	return ok
}

func TestConnectTimeoutAtLeast30s(t *testing.T) {
	// RFC 6062 §5.2: "The timeout value MUST be at least 30 seconds."
	d := connectDialer(netip.MustParseAddrPort("127.0.0.1:40000"))
	if d.Timeout < 30*time.Second {
		t.Fatalf("Connect dial timeout = %v, want >= 30s", d.Timeout)
	}
}

// A TCP relay listener (RFC 6062) hands pion no connection from a peer the
// policy refuses — pion checks only the peer's permission, which may
// predate the reload that denied it.
func TestRelayListenerRefusesDeniedPeers(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	ra := relayAllocator{s: r.srv}
	cred := r.mint(t, "alice", "", time.Hour)
	ln, _, err := ra.AllocateListener(turn.AllocateListenerConfig{Network: "tcp4", UserID: cred.Username})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	dial()
	select {
	case c := <-accepted:
		_ = c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("an allowed peer's connection was not accepted")
	}

	pc := r.policy
	pc.AllowLoopback, pc.Allowed = false, nil
	p, err := NewPolicy(pc)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.srv.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	before := r.counter(t, "icebox_turn_peer_denied_total", "stage", stageReceive)
	c := dial()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a denied peer's connection stayed open (read %d, %v)", n, err)
	}
	select {
	case c := <-accepted:
		t.Fatalf("a denied peer's connection from %v reached pion", c.RemoteAddr())
	default:
	}
	if got := r.counter(t, "icebox_turn_peer_denied_total", "stage", stageReceive); got != before+1 {
		t.Errorf("peer_denied{receive} = %v, want %v", got, before+1)
	}
}
