package main

import (
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestClusterCallAcrossNodes runs a call across two nodes sharing one
// PostgreSQL database (issue 18, item 2): alice's WebSocket is on node A,
// bob's on node B; alice initiates on A and bob hears the invite on B; bob
// answers on B and alice hears it on A; bob hangs up on B, alice hears it
// on A, and the allocation alice holds on A's relay (a pion TURN client with
// her per-call credential) is closed within a second.
func TestClusterCallAcrossNodes(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	cfg := func() string {
		return callsConfig(filepath.Join(t.TempDir(), "state"), "") +
			"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n"
	}
	a := startCalls(t, cfg(), tok)
	b := startCalls(t, cfg(), tok)
	a.putConversation(t, "c1", "alice", "bob")
	aliceWS := a.dialWS(t, "alice", false)
	bobWS := b.dialWS(t, "bob", false)

	start := time.Now()
	offer := a.initiate(t, "alice", "c1", nil)
	bobWS.await(t, "CallInvite on node B", event("CallInvite", offer.ID))
	t.Logf("initiate on A → CallInvite on B's WebSocket: %s", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	ans := b.answer(t, "bob", offer.ID)
	if ans.Status != "answered" {
		t.Fatalf("answer on B: call is %s", ans.Status)
	}
	aliceWS.await(t, "CallAnswer on node A", event("CallAnswer", offer.ID))
	t.Logf("answer on B → CallAnswer on A's WebSocket: %s", time.Since(start).Round(time.Millisecond))

	leg := callLeg{user: "alice", cred: a.callCred(t, offer, "alice")}
	alloc, err := allocate(t, "udp", a.turnAddr(), nil, leg.cred.user, leg.cred.pass)
	if err != nil {
		t.Fatalf("alice's allocation on A: %v", err)
	}
	leg.alloc, leg.peer = alloc, listenPeer(t)
	relayRoundTrip(t, leg.alloc, leg.peer)

	start = time.Now()
	b.mustAPI(t, "bob", http.MethodPost, "/calls/"+offer.ID+"/hangup", nil, http.StatusOK)
	aliceWS.await(t, "CallHangup on node A", event("CallHangup", offer.ID))
	t.Logf("hangup on B → CallHangup on A's WebSocket: %s", time.Since(start).Round(time.Millisecond))
	closed := waitFor(time.Until(start.Add(revokeWithin)), func() bool { return len(a.callAllocations(t, offer.ID)) == 0 })
	if !closed {
		t.Fatalf("hangup on B: alice's allocation on A still open after %s", revokeWithin)
	}
	t.Logf("hangup on B → alice's allocation on A closed: %s", time.Since(start).Round(time.Millisecond))
	if relayDelivers(leg.alloc, leg.peer, 300*time.Millisecond) {
		t.Error("alice's relay on A still carries data after the call ended on B")
	}
	if _, err := allocate(t, "udp", a.turnAddr(), nil, leg.cred.user, leg.cred.pass); err == nil {
		t.Error("a new Allocate on A with the ended call's credential succeeded")
	}
	m := a.metrics(t)
	if m[`icebox_cluster_feed_applied_total{kind="event"}`] < 2 || m[`icebox_cluster_feed_applied_total{kind="revoke"}`] < 1 {
		t.Errorf("node A applied %v events and %v revocations of node B, want ≥ 2 and ≥ 1",
			m[`icebox_cluster_feed_applied_total{kind="event"}`], m[`icebox_cluster_feed_applied_total{kind="revoke"}`])
	}
	t.Logf("node A feed lag: %v items, %.1f ms mean", m["icebox_cluster_feed_lag_seconds_count"],
		1000*m["icebox_cluster_feed_lag_seconds_sum"]/max(m["icebox_cluster_feed_lag_seconds_count"], 1))
}

// TestDatabaseOutageMidCall stops PostgreSQL in the middle of an answered
// call (issue 18, "PostgreSQL stopped mid-call"): the call's relay keeps
// carrying media, /readyz and requests that need the database answer 503
// (store_unavailable, nothing written), and once the database is back the
// call hangs up normally and its allocation closes.
func TestDatabaseOutageMidCall(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	e := startCalls(t, callsConfig(filepath.Join(t.TempDir(), "state"), "")+
		"store:\n  driver: postgres\n  postgres:\n    dsn: "+strconv.Quote(dsn)+"\n    statement_timeout: 2s\n", tok)
	e.putConversation(t, "c1", "alice", "bob")
	offer := e.initiate(t, "alice", "c1", nil)
	e.answer(t, "bob", offer.ID)
	leg := callLeg{user: "alice", cred: e.callCred(t, offer, "alice")}
	alloc, err := allocate(t, "udp", e.turnAddr(), nil, leg.cred.user, leg.cred.pass)
	if err != nil {
		t.Fatal(err)
	}
	leg.alloc, leg.peer = alloc, listenPeer(t)
	relayRoundTrip(t, leg.alloc, leg.peer)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(5*time.Second, func() bool {
		code, _ := apiRequest(t, http.MethodGet, e.httpURL("/readyz"), "", nil)
		return code == http.StatusServiceUnavailable
	}) {
		t.Fatal("/readyz did not turn 503 with the database stopped")
	}
	relayRoundTrip(t, leg.alloc, leg.peer) // media goes on without the database
	code, body := e.api(t, "alice", http.MethodPost, "/calls/initiate", map[string]any{"conversation_id": "c1", "sdp_offer": testOffer})
	wantAPIError(t, "initiate with the database stopped", code, body, http.StatusServiceUnavailable, "store_unavailable")
	code, body = e.api(t, "bob", http.MethodPost, "/calls/"+offer.ID+"/hangup", nil)
	wantAPIError(t, "hangup with the database stopped", code, body, http.StatusServiceUnavailable, "store_unavailable")
	relayRoundTrip(t, leg.alloc, leg.peer) // the refused hangup changed nothing

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if !waitFor(15*time.Second, func() bool {
		code, _ := apiRequest(t, http.MethodGet, e.httpURL("/readyz"), "", nil)
		return code == http.StatusOK
	}) {
		t.Fatal("/readyz did not turn 200 with the database back")
	}
	if c := e.getCall(t, "alice", offer.ID); c.Status != "answered" {
		t.Fatalf("after the outage the call is %s, want answered", c.Status)
	}
	start := time.Now()
	e.mustAPI(t, "bob", http.MethodPost, "/calls/"+offer.ID+"/hangup", nil, http.StatusOK)
	if !waitFor(time.Until(start.Add(revokeWithin)), func() bool { return len(e.callAllocations(t, offer.ID)) == 0 }) {
		t.Error("the hangup after the outage left alice's allocation open")
	}
}

// TestNodeKilledOnPostgres: the node that answered a call is killed with
// SIGKILL; another node on the same database (its own state directory)
// serves the call as answered, with its offer and answer, and the call's
// credential works there; hung up there and that node killed too, a third
// node refuses the credential (the revocation is in the database).
func TestNodeKilledOnPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	cfg := func() string {
		return callsConfig(filepath.Join(t.TempDir(), "state"), "") +
			"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n"
	}
	first := startCallsProcess(t, cfg(), tok)
	first.putConversation(t, "c1", "alice", "bob")
	offer := first.initiate(t, "alice", "c1", nil)
	cred := first.callCred(t, offer, "alice")
	first.answer(t, "bob", offer.ID)
	first.crash()

	second := startCallsProcess(t, cfg(), tok)
	c := second.getCall(t, "alice", offer.ID)
	if c.Status != "answered" || c.SDPOffer != testOffer || c.SDPAnswer != testAnswer || c.Answerer != "bob" {
		t.Fatalf("on another node after kill -9: call %+v, want answered by bob with the same offer and answer", c)
	}
	if _, err := allocate(t, "udp", second.turnAddr(), nil, cred.user, cred.pass); err != nil {
		t.Fatalf("alice's credential of the live call on another node: %v", err)
	}
	second.mustAPI(t, "alice", http.MethodPost, "/calls/"+offer.ID+"/hangup", map[string]any{"reason": "user_hangup"}, http.StatusOK)
	second.crash()

	third := startCallsProcess(t, cfg(), tok)
	if c := third.getCall(t, "alice", offer.ID); c.Status != "ended" || c.EndReason != "user_hangup" {
		t.Errorf("on a third node: call is %s (%s), want ended (user_hangup)", c.Status, c.EndReason)
	}
	if _, err := allocate(t, "udp", third.turnAddr(), nil, cred.user, cred.pass); err == nil {
		t.Errorf("on a third node, the credential of ended call %s allocates", offer.ID)
	}
}
