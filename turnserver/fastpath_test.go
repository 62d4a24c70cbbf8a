package turnserver

import (
	"net"
	"testing"
	"time"
)

// TestChannelFastPath: once pion's client has bound a channel, ChannelData
// both ways is relayed by icebox's fast path, intact and in order; closing
// the allocation (here: revoking its call) ends the binding at once.
func TestChannelFastPath(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	cred := r.mint(t, "alice", "call-fast", time.Hour)
	c := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	peer := newPeer(t)
	exchange(t, relay, peer) // permission installed; pion's client binds a channel in the background

	// Keep sending until the peer's side shows the fast path carried one.
	buf := make([]byte, 1500)
	waitFor(t, "a datagram to the peer on the fast path", 5*time.Second, func() bool {
		if _, err := relay.WriteTo([]byte("warm-up"), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, _ = peer.ReadFrom(buf)
		toPeer, _ := r.srv.fastPathCounts()
		return toPeer > 0
	})

	const n = 50
	_, before := r.srv.fastPathCounts()
	for i := range n {
		msg := []byte{'m', byte(i)}
		if _, err := relay.WriteTo(msg, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if err := peer.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		got, from, err := peer.ReadFrom(buf)
		if err != nil || string(buf[:got]) != string(msg) {
			t.Fatalf("peer: message %d = %q, %v", i, buf[:got], err)
		}
		if _, err := peer.WriteTo([]byte{'r', byte(i)}, from); err != nil {
			t.Fatal(err)
		}
		if err := relay.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
			t.Fatal(err)
		}
		got, src, err := relay.ReadFrom(buf)
		if err != nil || string(buf[:got]) != string([]byte{'r', byte(i)}) || src.String() != peer.LocalAddr().String() {
			t.Fatalf("client: reply %d = %q from %v, %v", i, buf[:got], src, err)
		}
	}
	// The relay socket's reader was already waiting when the channel was
	// bound, so the first reply goes through pion; the rest do not.
	toPeer, toClient := r.srv.fastPathCounts()
	if toPeer < n || toClient-before < n-1 {
		t.Fatalf("fast path carried %d to the peer and %d to the client, want >= %d and %d", toPeer, toClient-before, n, n-1)
	}

	if got := fastClients(r.srv); got != 1 {
		t.Fatalf("fast path knows %d clients, want 1", got)
	}

	// Revoking the call closes the allocation: nothing more reaches the peer.
	if closed := r.srv.RevokeCall("call-fast", time.Now().Add(time.Hour)); closed != 1 {
		t.Fatalf("RevokeCall closed %d allocations, want 1", closed)
	}
	for range 5 {
		_, _ = relay.WriteTo([]byte("after revoke"), peer.LocalAddr())
	}
	_ = peer.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if got, _, err := peer.ReadFrom(buf); err == nil {
		t.Fatalf("peer received %q after the allocation was revoked", buf[:got])
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatal(err)
	}
	if got := fastClients(r.srv); got != 0 {
		t.Fatalf("fast path still knows %d clients after the allocation closed", got)
	}
}

// fastClients counts the clients the fast path knows, over all listeners.
func fastClients(s *Server) int {
	n := 0
	for _, l := range s.fast {
		l.clients.Range(func(_, _ any) bool { n++; return true })
	}
	return n
}
