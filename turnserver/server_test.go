package turnserver

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
)

func TestRelayBothWays(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	for _, tr := range []transport{overUDP, overTCP, overTLS} {
		t.Run(string(tr), func(t *testing.T) {
			cred := r.mint(t, "alice", "", time.Hour)
			c := r.newClient(t, tr, cred.Username, cred.Password, 0)
			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("Allocate over %s: %v", tr, err)
			}
			defer relay.Close()
			exchange(t, relay, newPeer(t))
		})
	}
	// The relay counts a packet after the send returns; the peer may read it first.
	waitFor(t, "3 packets counted to the peer", 5*time.Second, func() bool {
		return r.counter(t, "icebox_turn_relayed_packets_total", "direction", "to_peer") >= 3
	})
	if got := r.counter(t, "icebox_turn_relayed_packets_total", "direction", "from_peer"); got < 3 {
		t.Errorf("packets from peer = %v, want >= 3", got)
	}
	if got := r.counter(t, "icebox_turn_auth_total", "outcome", "ok"); got < 3 {
		t.Errorf("auth ok = %v, want >= 3", got)
	}
	for _, tr := range []string{"udp", "tcp"} {
		if got := r.counter(t, "icebox_turn_allocations_total", "transport", tr); got < 1 {
			t.Errorf("allocations over %s = %v, want >= 1", tr, got)
		}
	}
}

func TestAllocationListing(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	cred := r.mint(t, "@alice:example.org", "3f1c6a1e-7d3b-4a8e-9c1e-0d5b2e6f4a10", time.Hour)
	c := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	exchange(t, relay, newPeer(t))
	var list []AllocationInfo
	waitFor(t, "the sent packet to be counted", 5*time.Second, func() bool {
		list = r.srv.Allocations()
		return len(list) == 1 && list[0].PacketsToPeer >= 1
	})
	if len(list) != 1 {
		t.Fatalf("Allocations() = %d entries, want 1", len(list))
	}
	a := list[0]
	if a.User != "@alice:example.org" || a.CallID != "3f1c6a1e-7d3b-4a8e-9c1e-0d5b2e6f4a10" ||
		a.RelayAddr != relay.LocalAddr().String() || a.PacketsToPeer < 1 || a.PacketsFromPeer != 1 {
		t.Fatalf("Allocations()[0] = %+v", a)
	}
	if got := r.counter(t, "icebox_turn_allocations_active"); got != 1 {
		t.Fatalf("allocations_active = %v, want 1", got)
	}
}

func TestAuthRefusals(t *testing.T) {
	r := startRelay(t, relayOptions{})
	now := r.clock.Now()
	valid := r.mint(t, "alice", "", time.Hour)
	expired := credentials.Claims{Expires: now.Add(-time.Second).Truncate(time.Second), KID: "k2", User: "alice"}.Username()
	unknownKID := credentials.Claims{Expires: now.Add(time.Hour).Truncate(time.Second), KID: "k9", User: "alice"}.Username()
	for _, tc := range []struct {
		name, username, password, outcome string
	}{
		{"expired", expired, credentials.Password(testSecret, expired), authExpired},
		{"wrong secret", valid.Username, credentials.Password(wrongSecret, valid.Username), authBadHMAC},
		{"unknown kid", unknownKID, credentials.Password(testSecret, unknownKID), authUnknownKID},
		{"malformed", "alice", "whatever", authMalformed},
		{"malformed expiry", "17x:alice", "whatever", authMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := r.counter(t, "icebox_turn_auth_total", "outcome", tc.outcome)
			c := r.newClient(t, overUDP, tc.username, tc.password, 0)
			_, err := c.Allocate()
			// The refusal on the wire is a 401 error response to the
			// authenticated Allocate.
			requireErrContains(t, err, "error")
			if r.srv.AllocationCount() != 0 {
				t.Fatalf("an allocation exists after a refused Allocate")
			}
			if got := r.counter(t, "icebox_turn_auth_total", "outcome", tc.outcome); got != before+1 {
				t.Fatalf("auth_total{outcome=%s} = %v, want %v", tc.outcome, got, before+1)
			}
		})
	}
}

func TestRotationOldKIDStillAccepted(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	// Signed by the old (accepted, compat) k1 before the rotation made k2 active.
	old := credentials.Claims{Expires: r.clock.Now().Add(time.Hour), KID: "k1", User: "bob"}.Username()
	// Minted the Synapse/coturn way: no kid, verified with the compat secret.
	synapse := fmt.Sprintf("%d:@carol:example.org", r.clock.Now().Add(time.Hour).Unix())
	for _, tc := range []struct{ name, user, pass string }{
		{"old kid", old, credentials.Password(testOldSecret, old)},
		{"synapse format", synapse, credentials.Password(testOldSecret, synapse)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := r.newClient(t, overUDP, tc.user, tc.pass, 0)
			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			defer relay.Close()
			exchange(t, relay, newPeer(t))
		})
	}
	if kid := r.mint(t, "dave", "", time.Hour).Username; kid[11:13] != "k2" {
		t.Fatalf("new credential %q not signed by the active kid k2", kid)
	}
}

func TestPeerPolicyOnTheWire(t *testing.T) {
	// The relay advertises a documentation address so that loopback is not
	// one of its own relay addresses (which are always allowed).
	r := startRelay(t, relayOptions{
		advertiseV4: netip.MustParseAddr("192.0.2.10"),
		ipv6:        true,
		advertiseV6: netip.MustParseAddr("2001:db8::10"),
	})
	deny4 := []string{"127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "169.254.169.254", "10.0.0.1"}
	deny6 := []string{"::1", "64:ff9b::7f00:1", "2002:7f00:1::"}
	check := func(t *testing.T, family turn.RequestedAddressFamily, peers []string) {
		cred := r.mint(t, "mallory", "", time.Hour)
		c := r.newClient(t, overUDP, cred.Username, cred.Password, family)
		relay, err := c.Allocate()
		if err != nil {
			t.Fatalf("Allocate: %v", err)
		}
		defer relay.Close()
		for _, p := range peers {
			before := r.counter(t, "icebox_turn_peer_denied_total", "stage", stagePermission)
			err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(p), Port: 5000})
			requireErrContains(t, err, "")
			if got := r.counter(t, "icebox_turn_peer_denied_total", "stage", stagePermission); got != before+1 {
				t.Errorf("peer %s: denied counter %v, want %v", p, got, before+1)
			}
		}
		// An allowed public peer is granted, so the refusals above are the
		// policy's, not a broken CreatePermission.
		ok := "8.8.8.8"
		if family == turn.RequestedAddressFamilyIPv6 {
			ok = "2001:4860:4860::8888"
		}
		if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(ok), Port: 5000}); err != nil {
			t.Fatalf("CreatePermission(%s): %v", ok, err)
		}
	}
	t.Run("ipv4", func(t *testing.T) { check(t, turn.RequestedAddressFamilyIPv4, deny4) })
	t.Run("ipv6", func(t *testing.T) { check(t, turn.RequestedAddressFamilyIPv6, deny6) })
}

func TestSendToServicePortDropped(t *testing.T) {
	// Loopback is allowed, but the relay's own listener port never is: a
	// permission names an IP, so the port is checked on every send.
	r := startRelay(t, relayOptions{allowLoopback: true})
	cred := r.mint(t, "mallory", "", time.Hour)
	c := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	listener, _ := net.ResolveUDPAddr("udp4", r.udp)
	before := r.counter(t, "icebox_turn_relayed_packets_total", "direction", "to_peer")
	if _, err := relay.WriteTo([]byte("loop"), listener); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the send to the listener port to be denied", 5*time.Second, func() bool {
		return r.counter(t, "icebox_turn_peer_denied_total", "stage", stageSend) >= 1
	})
	if got := r.counter(t, "icebox_turn_relayed_packets_total", "direction", "to_peer"); got != before {
		t.Fatalf("relayed packets to peer moved (%v → %v) for a denied send", before, got)
	}
}

func TestQuotaPerUser(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true, quotas: Quotas{PerUser: 1}})
	cred := r.mint(t, "alice", "", time.Hour)
	first := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	if _, err := first.Allocate(); err != nil {
		t.Fatal(err)
	}
	second := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	_, err := second.Allocate()
	requireErrContains(t, err, "486")
	if got := r.counter(t, "icebox_turn_quota_rejections_total", "quota", quotaUser); got != 1 {
		t.Fatalf("quota rejections = %v, want 1", got)
	}
	// Another user is not affected.
	bob := r.mint(t, "bob", "", time.Hour)
	if _, err := r.newClient(t, overUDP, bob.Username, bob.Password, 0).Allocate(); err != nil {
		t.Fatalf("bob's Allocate: %v", err)
	}
}

func TestQuotaPerCallAndTotal(t *testing.T) {
	r := startRelay(t, relayOptions{quotas: Quotas{PerCall: 1, Total: 2}})
	a := r.mint(t, "alice", "call-1", time.Hour)
	if _, err := r.newClient(t, overUDP, a.Username, a.Password, 0).Allocate(); err != nil {
		t.Fatal(err)
	}
	b := r.mint(t, "bob", "call-1", time.Hour)
	_, err := r.newClient(t, overUDP, b.Username, b.Password, 0).Allocate()
	requireErrContains(t, err, "486")
	c := r.mint(t, "carol", "", time.Hour)
	if _, err := r.newClient(t, overUDP, c.Username, c.Password, 0).Allocate(); err != nil {
		t.Fatal(err)
	}
	d := r.mint(t, "dave", "", time.Hour)
	_, err = r.newClient(t, overUDP, d.Username, d.Password, 0).Allocate()
	requireErrContains(t, err, "486")
	if r.counter(t, "icebox_turn_quota_rejections_total", "quota", quotaCall) != 1 ||
		r.counter(t, "icebox_turn_quota_rejections_total", "quota", quotaTotal) != 1 {
		t.Fatal("quota rejections not counted per quota")
	}
}

func TestExpiredCredentialKeepsAllocationUntilCap(t *testing.T) {
	const maxDuration = time.Hour
	r := startRelay(t, relayOptions{allowLoopback: true, maxDuration: maxDuration})
	cred := r.mint(t, "alice", "", time.Minute)
	c := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	peer := newPeer(t)
	exchange(t, relay, peer)

	r.clock.Advance(2 * time.Minute) // the credential has expired
	if err := stunRefresh(t, c, cred.Username, cred.Password); err != nil {
		t.Fatalf("Refresh after expiry: %v", err)
	}
	if err := c.CreatePermission(newPeer(t).LocalAddr()); err != nil {
		t.Fatalf("CreatePermission after expiry: %v", err)
	}
	exchange(t, relay, peer)
	// A new Allocate with the expired credential is refused.
	_, err = r.newClient(t, overUDP, cred.Username, cred.Password, 0).Allocate()
	requireErrContains(t, err, "error")

	r.clock.Advance(maxDuration) // past expiry + max_allocation_duration
	if err := stunRefresh(t, c, cred.Username, cred.Password); err == nil {
		t.Fatal("Refresh past max_allocation_duration succeeded")
	}
}

func TestAllocationClosedAtCap(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true, maxDuration: 300 * time.Millisecond})
	cred := r.mint(t, "alice", "", time.Hour)
	if _, err := r.newClient(t, overUDP, cred.Username, cred.Password, 0).Allocate(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the allocation to be closed at max_allocation_duration", 5*time.Second, func() bool {
		return r.srv.AllocationCount() == 0
	})
}

func TestRevokeCall(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	const call = "0b9c6f1e-revoked"
	alice := r.mint(t, "alice", call, time.Hour)
	bob := r.mint(t, "bob", call, time.Hour)
	other := r.mint(t, "carol", "another-call", time.Hour)
	for _, cr := range []credentials.Credential{alice, bob, other} {
		if _, err := r.newClient(t, overUDP, cr.Username, cr.Password, 0).Allocate(); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.srv.RevokeCall(call, r.clock.Now().Add(time.Hour)); n != 2 {
		t.Fatalf("RevokeCall closed %d allocations, want 2", n)
	}
	waitFor(t, "the revoked allocations to close", time.Second, func() bool { return r.srv.AllocationCount() == 1 })
	_, err := r.newClient(t, overUDP, alice.Username, alice.Password, 0).Allocate()
	requireErrContains(t, err, "error")
	if got := r.counter(t, "icebox_turn_auth_total", "outcome", authRevoked); got != 1 {
		t.Fatalf("auth_total{revoked} = %v, want 1", got)
	}
}

func TestRevokedBeforeStart(t *testing.T) {
	const call = "revoked-before-a-restart"
	r := startRelay(t, relayOptions{allowLoopback: true, revoked: []Revocation{
		{CallID: call, Until: testStart.Add(time.Hour)},
		{CallID: "long-forgotten", Until: testStart.Add(-time.Hour)}, // dead anyway: not kept
	}})
	alice := r.mint(t, "alice", call, time.Hour)
	_, err := r.newClient(t, overUDP, alice.Username, alice.Password, 0).Allocate()
	requireErrContains(t, err, "error")
	if got := r.counter(t, "icebox_turn_auth_total", "outcome", authRevoked); got != 1 {
		t.Fatalf("auth_total{revoked} = %v, want 1", got)
	}
	if r.srv.isRevoked("long-forgotten") {
		t.Error("a revocation past its end was kept")
	}
	other := r.mint(t, "alice", "another-call", time.Hour)
	if _, err := r.newClient(t, overUDP, other.Username, other.Password, 0).Allocate(); err != nil {
		t.Fatalf("Allocate for another call: %v", err)
	}
}

func TestCloseClosesAllocationBeingSetUp(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	// Stop an allocation after its socket is bound and before it is
	// published, and close the server there.
	reached := make(chan net.Addr, 1)
	proceed := make(chan struct{})
	hook := func(relay net.Addr) {
		select {
		case reached <- relay:
			<-proceed
		default: // only the first allocation is held
		}
	}
	r.srv.testHookTrack.Store(&hook)
	cred := r.mint(t, "alice", "", time.Hour)
	c := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	go func() { _, _ = c.Allocate() }() // the server closes under it: no answer
	var relay net.Addr
	select {
	case relay = <-reached:
	case <-time.After(5 * time.Second):
		t.Fatal("the allocation never reached its socket")
	}
	closed := make(chan error, 1)
	go func() { closed <- r.srv.Close() }()
	waitFor(t, "Close to start", 5*time.Second, func() bool { return r.srv.reg.isClosed() || len(closed) > 0 })
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an allocation was still being set up", err)
	default:
	}
	close(proceed)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	// Close returned only once the allocation was gone, socket and all.
	if n := r.srv.AllocationCount(); n != 0 {
		t.Fatalf("%d allocations left after Close", n)
	}
	pc, err := net.ListenPacket("udp4", relay.String())
	if err != nil {
		t.Fatalf("the relay socket of the allocation being set up leaked: %v", err)
	}
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close, nothing can be allocated.
	if _, _, err := (relayAllocator{s: r.srv}).AllocatePacketConn(turn.AllocateListenerConfig{Network: "udp4", UserID: cred.Username}); err == nil {
		t.Fatal("AllocatePacketConn succeeded after Close")
	}
}
