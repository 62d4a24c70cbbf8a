package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestClusterThreeNodesOneOrder: three nodes on one database (issue 18,
// items 1 and 2). alice's WebSocket is on node A, bob's on node B, and a
// second session of alice on node C; alice calls on A, bob answers through
// C. Then alice (through A) and bob (through B) send candidates at the
// same time, racing, and bob hangs up on B: every session sees the call's
// events in one and the same order (the order the transitions committed),
// each sender's candidates in the order sent, none twice or missing, the
// hangup last; alice's allocation on A is closed within a second of the
// hangup on B.
//
// Before the feed was written in the transition's transaction, each node
// delivered its own events at once and the others' when it read them, so
// sessions on different nodes saw different interleavings.
func TestClusterThreeNodesOneOrder(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	cfg := func() string {
		return callsConfig(filepath.Join(t.TempDir(), "state"), "") +
			"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n"
	}
	a := startCalls(t, cfg(), tok)
	b := startCalls(t, cfg(), tok)
	c := startCalls(t, cfg(), tok)
	a.putConversation(t, "c1", "alice", "bob")
	sessions := map[string]*wsClient{
		"alice on A": a.dialWS(t, "alice", false),
		"bob on B":   b.dialWS(t, "bob", false),
		"alice on C": c.dialWS(t, "alice", false),
	}

	offer := a.initiate(t, "alice", "c1", nil)
	for name, ws := range sessions {
		ws.await(t, "CallInvite at "+name, event("CallInvite", offer.ID))
	}
	if ans := c.answer(t, "bob", offer.ID); ans.Status != "answered" {
		t.Fatalf("answer through C: call is %s", ans.Status)
	}
	for name, ws := range sessions {
		ws.await(t, "CallAnswer at "+name, event("CallAnswer", offer.ID))
	}
	leg := callLeg{user: "alice", cred: a.callCred(t, offer, "alice")}
	alloc, err := allocate(t, "udp", a.turnAddr(), nil, leg.cred.user, leg.cred.pass)
	if err != nil {
		t.Fatalf("alice's allocation on A: %v", err)
	}
	leg.alloc, leg.peer = alloc, listenPeer(t)
	relayRoundTrip(t, leg.alloc, leg.peer)

	// Racing candidates: each request one candidate named by its sender
	// and number, so every session's sequence can be compared.
	const perSender = 40
	var wg sync.WaitGroup
	for _, s := range []struct {
		env  *callsEnv
		user string
	}{{a, "alice"}, {b, "bob"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				cand := fmt.Sprintf("candidate:%s-%d 1 udp 2130706431 192.0.2.1 %d typ host", s.user, i, 40000+i)
				code, body := s.env.api(t, s.user, http.MethodPost, "/calls/"+offer.ID+"/candidates",
					map[string]any{"candidates": []map[string]any{{"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0}}})
				if code != http.StatusOK && code != http.StatusAccepted && code != http.StatusNoContent {
					t.Errorf("%s's candidates %d: %d %s", s.user, i, code, body)
					return
				}
			}
		}()
	}
	wg.Wait()
	start := time.Now()
	b.mustAPI(t, "bob", http.MethodPost, "/calls/"+offer.ID+"/hangup", nil, http.StatusOK)

	seqs := map[string][]string{}
	for name, ws := range sessions {
		var seq []string
		for range 4 * perSender { // bounded: 2×perSender candidates and the hangup
			m := ws.await(t, "the call's events at "+name, func(m wsMessage) bool {
				return m.CallID == offer.ID && (m.Type == "CallCandidates" || m.Type == "CallHangup")
			})
			if m.Type == "CallHangup" {
				seq = append(seq, "hangup")
				break
			}
			for _, cand := range m.Candidates {
				seq = append(seq, strings.TrimPrefix(strings.Fields(cand.Candidate)[0], "candidate:"))
			}
		}
		seqs[name] = seq
	}
	closed := waitFor(time.Until(start.Add(revokeWithin)), func() bool { return len(a.callAllocations(t, offer.ID)) == 0 })
	if !closed {
		t.Errorf("hangup on B: alice's allocation on A still open after %s", revokeWithin)
	}
	t.Logf("hangup on B → alice's allocation on A closed: %s", time.Since(start).Round(time.Millisecond))

	ref := seqs["alice on A"]
	if len(ref) != 2*perSender+1 || ref[len(ref)-1] != "hangup" {
		t.Fatalf("alice on A saw %d events (%v), want %d candidates then the hangup", len(ref), ref, 2*perSender)
	}
	for name, seq := range seqs {
		if !slices.Equal(seq, ref) {
			t.Errorf("%s saw another order than alice on A:\n  %v\n  %v", name, seq, ref)
		}
	}
	next := map[string]int{}
	switches := 0
	for i, item := range ref[:len(ref)-1] {
		user, n, _ := strings.Cut(item, "-")
		if got, _ := strconv.Atoi(n); got != next[user] {
			t.Errorf("event %d is %s, want %s-%d (each sender's candidates in order, once)", i, item, user, next[user])
		}
		next[user]++
		if i > 0 && !strings.HasPrefix(ref[i-1], user+"-") {
			switches++
		}
	}
	t.Logf("%d candidates from two nodes, interleaved %d times", 2*perSender, switches)
}

// TestClusterDatabaseAway30s: PostgreSQL stopped for 30 s in the middle of
// a call between two nodes (issue 18, "PostgreSQL stopped for 30 s"):
// alice's relay on A carries media throughout; both nodes answer /readyz
// and API requests that need the database with 503 (store_unavailable),
// nothing half-written; once it is back, both see the call answered, the
// hangup through B reaches alice's WebSocket on A (the feed's listener
// reconnected) and closes her allocation there within a second.
func TestClusterDatabaseAway30s(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	cfg := func() string {
		return callsConfig(filepath.Join(t.TempDir(), "state"), "") +
			"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n    statement_timeout: 2s\n"
	}
	a := startCalls(t, cfg(), tok)
	b := startCalls(t, cfg(), tok)
	a.putConversation(t, "c1", "alice", "bob")
	aliceWS := a.dialWS(t, "alice", false)
	offer := a.initiate(t, "alice", "c1", nil)
	b.answer(t, "bob", offer.ID)
	aliceWS.await(t, "CallAnswer on A", event("CallAnswer", offer.ID))
	leg := callLeg{user: "alice", cred: a.callCred(t, offer, "alice")}
	alloc, err := allocate(t, "udp", a.turnAddr(), nil, leg.cred.user, leg.cred.pass)
	if err != nil {
		t.Fatal(err)
	}
	leg.alloc, leg.peer = alloc, listenPeer(t)
	relayRoundTrip(t, leg.alloc, leg.peer)

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	const away = 30 * time.Second
	for _, n := range []*callsEnv{a, b} {
		if !waitFor(5*time.Second, func() bool {
			code, _ := apiRequest(t, http.MethodGet, n.httpURL("/readyz"), "", nil)
			return code == http.StatusServiceUnavailable
		}) {
			t.Fatal("/readyz did not turn 503 with the database stopped")
		}
	}
	rounds := 0
	pace := time.NewTicker(2 * time.Second) // a round of checks every 2 s of the outage
	defer pace.Stop()
	for time.Since(stopped) < away { // bounded by the outage's length
		relayRoundTrip(t, leg.alloc, leg.peer)
		rounds++
		code, body := b.api(t, "bob", http.MethodPost, "/calls/"+offer.ID+"/hangup", nil)
		wantAPIError(t, "hangup on B with the database stopped", code, body, http.StatusServiceUnavailable, "store_unavailable")
		code, body = a.api(t, "alice", http.MethodPost, "/calls/initiate", map[string]any{"conversation_id": "c1", "sdp_offer": testOffer})
		wantAPIError(t, "initiate on A with the database stopped", code, body, http.StatusServiceUnavailable, "store_unavailable")
		if t.Failed() {
			return
		}
		<-pace.C
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("database away %s; media relayed in %d rounds meanwhile", time.Since(stopped).Round(time.Second), rounds)
	for _, n := range []*callsEnv{a, b} {
		if !waitFor(15*time.Second, func() bool {
			code, _ := apiRequest(t, http.MethodGet, n.httpURL("/readyz"), "", nil)
			return code == http.StatusOK
		}) {
			t.Fatal("/readyz did not turn 200 with the database back")
		}
		if c := n.getCall(t, "alice", offer.ID); c.Status != "answered" {
			t.Fatalf("after the outage the call is %s, want answered", c.Status)
		}
	}
	start := time.Now()
	b.mustAPI(t, "bob", http.MethodPost, "/calls/"+offer.ID+"/hangup", nil, http.StatusOK)
	aliceWS.await(t, "CallHangup on A after the outage", event("CallHangup", offer.ID))
	if !waitFor(time.Until(start.Add(revokeWithin)), func() bool { return len(a.callAllocations(t, offer.ID)) == 0 }) {
		t.Error("the hangup on B after the outage left alice's allocation on A open")
	}
	t.Logf("after the outage: hangup on B → alice's allocation on A closed in %s", time.Since(start).Round(time.Millisecond))
	if c := a.getCall(t, "alice", offer.ID); c.Status != "ended" {
		t.Errorf("on A after the hangup: call is %s, want ended", c.Status)
	}
}
