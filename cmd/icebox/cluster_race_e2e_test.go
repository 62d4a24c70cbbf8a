package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// Two or three nodes racing on one call's transition (issue 18, item 4:
// "two nodes racing on the same invite expiry and the same answer: one
// transition each"). The store-level tests race UpdateCall on two pools;
// these race whole nodes: separate icebox processes on one PostgreSQL,
// each with its own timers, sweeps and API, and check what the clients
// and the feed see.

// raceNodesConfig is a node's config on the shared database dsn:
// initiations not rate limited, log lines at info (the tests count the
// transitions' lines).
func raceNodesConfig(t *testing.T, dsn string) string {
	return callsConfig(filepath.Join(t.TempDir(), "state"), "  initiate_rate: 100\n  initiate_burst: 100\n") +
		"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n"
}

// TestClusterRaceInviteExpiry: three nodes hold an expiry timer for the
// same invites and fire them at the same instant; each invite expires
// once. Node A places raceCalls invites of 15 s; nodes B and C start
// after that, and a node's start arms the expiry of every ringing invite
// (Service.Run: a node that restarts, or joins, takes over the invites of
// a node that is gone), so each invite has a timer on each of the three
// nodes, all due at its InviteDeadline. Then every participant session
// (alice on A, bob on B and on C) sees exactly one CallHangup
// (invite_timeout, expired) per call, the feed holds exactly one CallHangup
// event and one revocation per call, and the three nodes' logs together
// say "call expired" exactly once per call.
//
// Why it fails if the expiry were not conditional: each node's timer runs
// expire → commit → applyExpire under the call's row lock (FOR UPDATE).
// If applyExpire ended the call whatever its state (no "still ringing?"
// check), the second and third node to take the lock would end the
// expired call again, each writing its CallHangup and revocation to the
// feed: three hangups per call on every session and in the feed, three
// log lines. If the check were made on a row read without the lock (a
// read, then an unconditional write), the nodes whose reads overlap would
// all see "ringing" and all end it: the same duplicates, for the calls
// whose timers fire together — which, with the timers of three nodes due
// at the same instant for 40 calls, is many of them.
func TestClusterRaceInviteExpiry(t *testing.T) {
	t.Parallel()
	const (
		raceCalls = 40
		// Long enough for B and C to start (under -race, on a busy
		// machine) before the first invite is due.
		lifetime = 15 * time.Second
	)
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	a := startCallsProcess(t, raceNodesConfig(t, dsn), tok)
	a.putConversation(t, "c1", "alice", "bob")

	ids := make([]string, raceCalls)
	first := time.Now()
	for i := range ids {
		ids[i] = a.initiate(t, "alice", "c1", map[string]any{"lifetime_ms": lifetime.Milliseconds()}).ID
	}
	b := startCallsProcess(t, raceNodesConfig(t, dsn), tok)
	c := startCallsProcess(t, raceNodesConfig(t, dsn), tok)
	sessions := []*wsClient{a.dialWS(t, "alice", false), b.dialWS(t, "bob", false), c.dialWS(t, "bob", false)}
	names := []string{"alice on A", "bob on B", "bob on C"}
	// B's and C's timers were armed as they started: they must have been
	// up well before the first invite's deadline for the race to be one.
	ready := time.Since(first)
	if ready > lifetime-2*time.Second {
		t.Fatalf("nodes B and C took %s to start after the first invite of %s: too late to race its expiry", ready, lifetime)
	}
	t.Logf("%d invites placed on A, B and C started and the sessions connected %s after the first", raceCalls, ready.Round(time.Millisecond))

	for i, ws := range sessions {
		hangups := map[string]int{}
		deadline := first.Add(lifetime + expiryTimeout)
		for len(hangups) < raceCalls {
			m := ws.awaitWithin(t, time.Until(deadline), fmt.Sprintf("CallHangup of %d calls (got %d)", raceCalls, len(hangups)),
				func(m wsMessage) bool { return m.Type == "CallHangup" })
			if m.Reason != "invite_timeout" || m.Status != "expired" {
				t.Errorf("%s: %s, want reason invite_timeout, status expired", names[i], m.raw)
			}
			hangups[m.CallID]++
			if hangups[m.CallID] > 1 {
				t.Errorf("%s: call %s ended twice: %s", names[i], m.CallID, m.raw)
			}
		}
		for _, id := range ids {
			if hangups[id] != 1 {
				t.Errorf("%s: call %s: %d CallHangup events, want 1", names[i], id, hangups[id])
			}
		}
	}
	// A duplicate would come within the feed's poll interval (0.5 s).
	for i, ws := range sessions {
		if m, ok := ws.next(t, silenceWindow+time.Second); ok && m.Type == "CallHangup" {
			t.Errorf("%s: a late CallHangup: %s", names[i], m.raw)
		}
	}
	// Stopped, a node has run every expiry it armed: its drain waits for
	// the timers still armed, its stop for the callbacks in flight. So
	// the feed and the logs now hold every node's attempt.
	for _, n := range []*callsEnv{a, b, c} {
		n.stop(t)
	}
	for _, id := range ids {
		if got, err := callStatus(dsn, id); err != nil || got != "expired" {
			t.Errorf("call %s in the database: %q (%v), want expired", id, got, err)
		}
	}
	feed := feedCount(t, dsn)
	for _, id := range ids {
		if n := feed[feedKey{id, "CallHangup"}]; n != 1 {
			t.Errorf("feed: call %s has %d CallHangup events, want 1", id, n)
		}
		if n := feed[feedKey{id, postgres.FeedRevoke}]; n != 1 {
			t.Errorf("feed: call %s has %d revocations, want 1", id, n)
		}
	}
	won, total := transitionsLogged(t, "call expired", ids, a, b, c)
	if total != raceCalls {
		t.Errorf("the nodes logged %d expiries of the %d calls, want one each", total, raceCalls)
	}
	t.Logf("expiries won by node A, B, C: %v (each node's timer fired for every call)", won)
}

// TestClusterRaceAnswer: bob's two devices, on nodes B and C, answer the
// same call at the same moment (both commands written before either reply
// is read), for raceAnswers calls: each time exactly one answer succeeds,
// the other is refused with the documented 409 conflict already_answered,
// every session (alice on A, bob's two) gets exactly one CallAnswer, and
// the feed holds one CallAnswer per call.
//
// Why it fails if the answer were not conditional: both answers run
// Service.Answer → commit → applyAnswer under the call's row lock. Without
// applyAnswer's "already answered" check the second answer, serialized
// behind the first, would overwrite it and succeed too: two replies, two
// CallAnswer events on every session and in the feed. With the check made
// on a row read outside the lock, two answers whose reads overlap (which
// writing both commands at once makes common across 30 calls) would both
// see "ringing" and both succeed: the same duplicates.
func TestClusterRaceAnswer(t *testing.T) {
	const raceAnswers = 30
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	a := startCallsProcess(t, raceNodesConfig(t, dsn), tok)
	b := startCallsProcess(t, raceNodesConfig(t, dsn), tok)
	c := startCallsProcess(t, raceNodesConfig(t, dsn), tok)
	a.putConversation(t, "c1", "alice", "bob")
	alice := a.dialWS(t, "alice", false)
	devices := []*wsClient{b.dialWS(t, "bob", false), c.dialWS(t, "bob", false)}
	sessions := map[string]*wsClient{"alice on A": alice, "bob's device 1 on B": devices[0], "bob's device 2 on C": devices[1]}

	var ids []string
	wins := [2]int{}
	for range raceAnswers {
		id := a.initiate(t, "alice", "c1", nil).ID
		ids = append(ids, id)
		for _, d := range devices {
			d.await(t, "CallInvite", event("CallInvite", id))
		}
		// Both answers go out at once: each written by its own
		// goroutine once both are ready, the replies read afterwards.
		refs := [2]string{}
		errs := make(chan error, 2)
		start := make(chan struct{})
		for i, d := range devices {
			refs[i] = fmt.Sprintf("race-%s-%d", id, i)
			data, _ := json.Marshal(map[string]any{
				"type": "answer", "ref": refs[i], "call_id": id,
				"sdp_answer": testAnswer, "party_id": fmt.Sprintf("bob-device-%d", i+1),
			})
			go func() {
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
				defer cancel()
				errs <- d.conn.Write(ctx, websocket.MessageText, data)
			}()
		}
		close(start)
		for range devices {
			if err := <-errs; err != nil {
				t.Fatalf("writing an answer: %v", err)
			}
		}
		won := -1
		for i, d := range devices {
			m := d.await(t, "the answer's reply", func(m wsMessage) bool {
				return (m.Type == "reply" || m.Type == "error") && m.Ref == refs[i]
			})
			switch {
			case m.Type == "reply":
				if won >= 0 {
					t.Errorf("call %s: both of bob's devices answered successfully", id)
				}
				won = i
			case m.Error == nil || m.Error.Code != "already_answered":
				t.Errorf("call %s: device %d's losing answer: %s, want the error already_answered", id, i+1, m.raw)
			}
		}
		if won < 0 {
			t.Fatalf("call %s: neither answer succeeded", id)
		}
		wins[won]++
		a.mustAPI(t, "alice", http.MethodPost, "/calls/"+id+"/hangup", nil, http.StatusOK)
		// Events come in commit order: every CallAnswer of the call is
		// before its CallHangup.
		for name, ws := range sessions {
			ws.await(t, "CallHangup", event("CallHangup", id))
			n := 0
			for _, m := range ws.pending {
				if m.Type == "CallAnswer" && m.CallID == id {
					n++
					if want := fmt.Sprintf("bob-device-%d", won+1); !strings.Contains(m.raw, `"party_id":"`+want+`"`) {
						t.Errorf("%s: call %s: CallAnswer %s, want the winner's party %s", name, id, m.raw, want)
					}
				}
			}
			if n != 1 {
				t.Errorf("%s: call %s: %d CallAnswer events, want 1", name, id, n)
			}
			ws.pending = nil
		}
	}
	feed := feedCount(t, dsn)
	for _, id := range ids {
		if n := feed[feedKey{id, "CallAnswer"}]; n != 1 {
			t.Errorf("feed: call %s has %d CallAnswer events, want 1", id, n)
		}
	}
	logged, total := transitionsLogged(t, "call answered", ids, a, b, c)
	if total != raceAnswers {
		t.Errorf("the nodes logged %d answers of the %d calls, want one each", total, raceAnswers)
	}
	t.Logf("answers won by device 1 (node B), device 2 (node C): %v; logged by node A, B, C: %v", wins, logged)
}

// feedKey counts a call's feed rows: events by their type, revocations as
// postgres.FeedRevoke.
type feedKey struct{ callID, what string }

// feedCount reads the whole feed of database dsn (the tests write well
// under its retention).
func feedCount(t *testing.T, dsn string) map[feedKey]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT kind, call_id, body FROM icebox_feed ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := map[feedKey]int{}
	for rows.Next() {
		var kind, callID string
		var body []byte
		if err := rows.Scan(&kind, &callID, &body); err != nil {
			t.Fatal(err)
		}
		what := kind
		if kind == postgres.FeedEvent {
			ev, err := postgres.DecodeFeedEvent(body)
			if err != nil {
				t.Fatal(err)
			}
			what = ev.Type
		}
		n[feedKey{callID, what}]++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// callStatus reads a call's status in database dsn.
func callStatus(dsn, callID string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var status string
	err = conn.QueryRow(ctx, `SELECT status FROM icebox_calls WHERE id = $1`, callID).Scan(&status)
	return status, err
}

// transitionsLogged counts, per node, the log lines msg (a transition's
// line: "call expired", "call answered") about the calls ids, and in all.
func transitionsLogged(t *testing.T, msg string, ids []string, nodes ...*callsEnv) ([]int, int) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	per := make([]int, len(nodes))
	total := 0
	for i, n := range nodes {
		for _, line := range strings.Split(n.out.String(), "\n") {
			var l struct {
				Msg    string `json:"message"`
				CallID string `json:"call_id"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg && want[l.CallID] {
				per[i]++
				total++
			}
		}
	}
	return per, total
}
