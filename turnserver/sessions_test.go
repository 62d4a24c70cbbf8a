package turnserver

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAllocationSessions: the admin view lists each allocation with a
// random ID, its client address and transport; a kill by ID, by user or by
// call closes it in pion too (the client's Refresh fails), and
// the credential still works (a kill is not a revocation).
func TestAllocationSessions(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	alice := r.mint(t, "@alice:example.org", "call-a", time.Hour)
	bob := r.mint(t, "@bob:example.org", "call-b", time.Hour)
	carol := r.mint(t, "@carol:example.org", "call-b", time.Hour)

	ca := r.newClient(t, overUDP, alice.Username, alice.Password, 0)
	ra, err := ca.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, ra, newPeer(t))
	cb := r.newClient(t, overTLS, bob.Username, bob.Password, 0)
	if _, err := cb.Allocate(); err != nil {
		t.Fatal(err)
	}
	cc := r.newClient(t, overTCP, carol.Username, carol.Password, 0)
	if _, err := cc.Allocate(); err != nil {
		t.Fatal(err)
	}

	var list []AllocationInfo
	waitFor(t, "three allocations with their clients", 5*time.Second, func() bool {
		list = r.srv.Allocations()
		if len(list) != 3 {
			return false
		}
		for _, a := range list {
			if a.ClientAddr == "" {
				return false
			}
		}
		return true
	})
	hexID := regexp.MustCompile(`^[0-9a-f]{24}$`)
	byUser := map[string]AllocationInfo{}
	for _, a := range list {
		if !hexID.MatchString(a.ID) {
			t.Fatalf("ID %q is not 96 random bits in hex", a.ID)
		}
		byUser[a.User] = a
	}
	for user, transport := range map[string]string{
		"@alice:example.org": "udp", "@bob:example.org": "tls", "@carol:example.org": "tcp",
	} {
		a := byUser[user]
		if a.Transport != transport || !strings.HasPrefix(a.ClientAddr, "127.0.0.1:") {
			t.Errorf("%s: transport %q client %q, want %s from 127.0.0.1", user, a.Transport, a.ClientAddr, transport)
		}
	}
	if a := byUser["@alice:example.org"]; a.PacketsToPeer < 1 || a.PacketsFromPeer < 1 || a.AgeSeconds < 0 {
		t.Errorf("alice's counters: %+v", a)
	}
	if got := r.srv.ListAllocations(Filter{CallID: "call-b"}); len(got) != 2 {
		t.Fatalf("ListAllocations(call-b) = %d, want 2", len(got))
	}
	if got := r.srv.ListAllocations(Filter{User: "@bob:example.org"}); len(got) != 1 || got[0].Transport != "tls" {
		t.Fatalf("ListAllocations(bob) = %+v", got)
	}

	// Unknown IDs and empty filters kill nothing.
	if r.srv.KillAllocation("000000000000000000000000") || r.srv.KillAllocation("") {
		t.Fatal("KillAllocation of an unknown ID reported a kill")
	}
	if n := r.srv.KillAllocations(Filter{}); n != 0 {
		t.Fatalf("KillAllocations(empty filter) = %d, want 0", n)
	}

	// By ID: pion forgets the allocation, so the client's Refresh fails.
	if !r.srv.KillAllocation(byUser["@alice:example.org"].ID) {
		t.Fatal("KillAllocation(alice) = false")
	}
	waitFor(t, "pion to delete the killed allocation", 5*time.Second, func() bool {
		return r.srv.turn.AllocationCount() == 2 && r.srv.AllocationCount() == 2
	})
	// pion answers a Refresh of no allocation with silence (not 437): the
	// client's retransmissions run out.
	if err := stunRefresh(t, ca, alice.Username, alice.Password); err == nil {
		t.Fatal("Refresh of a killed allocation succeeded")
	}
	if r.srv.KillAllocation(byUser["@alice:example.org"].ID) {
		t.Fatal("a second kill of the same ID reported a kill")
	}
	// Not a revocation: the same credential allocates again.
	again := r.newClient(t, overUDP, alice.Username, alice.Password, 0)
	if _, err := again.Allocate(); err != nil {
		t.Fatalf("Allocate after a kill: %v", err)
	}

	// By call: both of call-b's, TCP and TLS.
	if n := r.srv.KillAllocations(Filter{CallID: "call-b"}); n != 2 {
		t.Fatalf("KillAllocations(call-b) = %d, want 2", n)
	}
	waitFor(t, "call-b's allocations to end in pion", 5*time.Second, func() bool {
		return r.srv.turn.AllocationCount() == 1 && r.srv.AllocationCount() == 1
	})
	// By user.
	if n := r.srv.KillAllocations(Filter{User: "@alice:example.org"}); n != 1 {
		t.Fatalf("KillAllocations(alice) = %d, want 1", n)
	}
	waitFor(t, "no allocation left", 5*time.Second, func() bool {
		return r.srv.turn.AllocationCount() == 0 && r.srv.AllocationCount() == 0
	})
	if got := r.counter(t, "icebox_turn_allocations_killed_total"); got != 4 {
		t.Fatalf("allocations_killed_total = %v, want 4", got)
	}
}

// TestAllocationBitRate: the listing's bit rate follows the traffic.
func TestAllocationBitRate(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true, rateInterval: 200 * time.Millisecond})
	cred := r.mint(t, "alice", "", time.Hour)
	relay, err := r.newClient(t, overUDP, cred.Username, cred.Password, 0).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	peer := newPeer(t)
	exchange(t, relay, peer)
	payload := make([]byte, 1000)
	var got []AllocationInfo
	waitFor(t, "a bit rate to the peer", 10*time.Second, func() bool {
		for range 10 {
			if _, err := relay.WriteTo(payload, peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		got = r.srv.Allocations()
		return len(got) == 1 && got[0].BPSToPeer > 0
	})
}
