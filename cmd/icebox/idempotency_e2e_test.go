package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// Idempotent retries under a real kill -9 (issue 18, "a node killed between
// commit and response"): icebox built with the tag crashpoint kills itself
// with SIGKILL right after an operation's transaction committed and before
// its response is written (internal/crashpoint, CRASHPOINT=after-commit:op).
// The client sees its connection break, retries the same request with the
// same Idempotency-Key on the restarted node or on another node, and must
// find what committed: the same call, no second call, no second invite.

var (
	crashOnce sync.Once
	crashPath string
	crashErr  error
)

// crashpointBin builds icebox as iceboxBin is built (the test binary's tags,
// -race under go test -race) plus the tag crashpoint; once per test run.
func crashpointBin(t *testing.T) string {
	t.Helper()
	crashOnce.Do(func() {
		crashPath = iceboxBin + "-crashpoint"
		args := buildArgs()
		tagged := false
		for i := range args {
			switch {
			case args[i] == iceboxBin:
				args[i] = crashPath
			case i > 0 && args[i-1] == "-tags":
				args[i] += ",crashpoint"
				tagged = true
			}
		}
		if !tagged {
			args = append([]string{args[0], "-tags", "crashpoint"}, args[1:]...)
		}
		if out, err := exec.Command(goTool(), args...).CombinedOutput(); err != nil {
			crashErr = errors.New("go " + strings.Join(args, " ") + ": " + err.Error() + "\n" + string(out))
		}
	})
	if crashErr != nil {
		t.Fatal(crashErr)
	}
	return crashPath
}

// startCrashing starts the crashpoint build of icebox that kills itself
// after the commit of each operation named in ops.
func startCrashing(t *testing.T, cfgYAML string, tok apiTokens, ops ...string) *callsEnv {
	t.Helper()
	points := make([]string, len(ops))
	for i, op := range ops {
		points[i] = "after-commit:" + op
	}
	in := startIceboxBin(t, crashpointBin(t), cfgYAML, tok.env(), "CRASHPOINT="+strings.Join(points, ","))
	return &callsEnv{instance: in, tok: tok}
}

// keyedResult is the outcome of one keyed request.
type keyedResult struct {
	code     int
	body     []byte
	replayed string // the Idempotent-Replayed header
	err      error  // the connection broke before a response
}

// keyed sends a request as user with an Idempotency-Key; a broken
// connection is a result, not a failure.
func (e *callsEnv) keyed(t *testing.T, user, method, path, key string, body any) keyedResult {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(method, e.httpURL(path), strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+e.tok[user])
	req.Header.Set("Idempotency-Key", key)
	resp, err := httpClient.Do(req)
	if err != nil {
		return keyedResult{err: err}
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return keyedResult{code: resp.StatusCode, body: out, replayed: resp.Header.Get("Idempotent-Replayed"), err: err}
}

// mustDie sends a keyed request to a node that must die of its crash point
// for op before answering, and checks that it did.
func (e *callsEnv) mustDie(t *testing.T, op, user, method, path, key string, body any) {
	t.Helper()
	r := e.keyed(t, user, method, path, key, body)
	if r.err == nil {
		t.Fatalf("%s on the crashing node answered %d %s; want the connection to break", op, r.code, r.body)
	}
	e.requireCrashed(t, op)
	t.Logf("%s: the node died by SIGKILL after the commit; the client saw: %v", op, r.err)
}

// requireCrashed waits for the process to end by SIGKILL at op's crash
// point, and marks it stopped (a killed process has no exit code to check).
func (e *callsEnv) requireCrashed(t *testing.T, op string) {
	t.Helper()
	if !waitFor(10*time.Second, e.exited) {
		t.Fatalf("%s: the node still runs", op)
	}
	e.crash()
	if !strings.Contains(e.out.String(), "crashpoint: after-commit:"+op+": SIGKILL") {
		t.Fatalf("%s: the node died (%v) but not at its crash point; output:\n%s", op, e.waitErr, e.out.String())
	}
}

// mustReplay retries a keyed request that committed before its node died:
// it must answer want; the answer must be marked as replayed, which is
// checked at the end of the test (so that what a retry without
// idempotency does wrong shows first).
func (e *callsEnv) mustReplay(t *testing.T, op, user, method, path, key string, body any, want int) callJSON {
	t.Helper()
	r := e.keyed(t, user, method, path, key, body)
	if r.err != nil || r.code != want {
		t.Fatalf("%s retried with its key: %d %s (%v); want %d from the committed request", op, r.code, r.body, r.err, want)
	}
	if r.replayed != "true" {
		t.Cleanup(func() { t.Errorf("%s retried with its key: no Idempotent-Replayed: true", op) })
	}
	return decodeCall(t, op+" retried", r.body)
}

// callsOf lists the calls of conv as user.
func (e *callsEnv) callsOf(t *testing.T, user, conv string) []callJSON {
	t.Helper()
	var resp struct {
		Calls []callJSON `json:"calls"`
	}
	if err := json.Unmarshal(e.mustAPI(t, user, http.MethodGet, "/calls?conversation_id="+conv, nil, http.StatusOK), &resp); err != nil {
		t.Fatal(err)
	}
	return resp.Calls
}

// until returns the messages c receives, pending ones first, up to the
// first that barrier matches (which it does not return). Events of one
// node reach a connection in the order they were published, so an event
// published before the barrier's is among them.
func (c *wsClient) until(t *testing.T, what string, barrier func(wsMessage) bool) []wsMessage {
	t.Helper()
	var seen []wsMessage
	for i, m := range c.pending {
		if barrier(m) {
			seen = append(seen, c.pending[:i]...)
			c.pending = append(c.pending[:0:0], c.pending[i+1:]...)
			return seen
		}
	}
	seen, c.pending = c.pending, nil
	deadline := time.Now().Add(eventTimeout)
	for {
		m, ok := c.next(t, time.Until(deadline))
		if !ok {
			t.Fatalf("%s did not receive %s within %s; received: %v", c.user, what, eventTimeout, seen)
		}
		if barrier(m) {
			return seen
		}
		seen = append(seen, m)
	}
}

// drained is what a client of a node that died received before the end.
func (c *wsClient) drained() []wsMessage {
	<-c.done
	out := c.pending
	for {
		select {
		case m := <-c.msgs:
			out = append(out, m)
		default:
			return out
		}
	}
}

func count(ms []wsMessage, typ string) (n int, callIDs []string) {
	for _, m := range ms {
		if m.Type == typ {
			n++
			callIDs = append(callIDs, m.CallID)
		}
	}
	return n, callIDs
}

// candidatesBody is a candidates request: the barrier of the event checks
// (every participant hears it after what came before).
var candidatesBody = map[string]any{"candidates": []map[string]any{{"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0}}}

// TestRetryAfterKillOnBBolt: one node on bbolt is killed with SIGKILL
// between the commit and the response of initiate, then of answer (REST),
// then of hangup (a WebSocket command); after each restart on the same
// state directory the retry with the same key answers from what committed:
// the same call (one call in the conversation, not two, and no second
// invite to bob), the answer as answered (not 409 already_answered), the
// hangup as ended (not 409 call_ended).
func TestRetryAfterKillOnBBolt(t *testing.T) {
	tok := newAPITokens()
	cfg := callsConfig(filepath.Join(t.TempDir(), "state"), "")
	initiate := map[string]any{"conversation_id": "c1", "sdp_offer": testOffer}

	n1 := startCrashing(t, cfg, tok, "initiate")
	n1.putConversation(t, "c1", "alice", "bob")
	bob1 := n1.dialWS(t, "bob", false)
	n1.mustDie(t, "initiate", "alice", http.MethodPost, "/calls/initiate", "init-1", initiate)
	invites1, _ := count(bob1.drained(), "CallInvite")

	n2 := startCrashing(t, cfg, tok, "answer")
	bob2 := n2.dialWS(t, "bob", false)
	call := n2.mustReplay(t, "initiate", "alice", http.MethodPost, "/calls/initiate", "init-1", initiate, http.StatusCreated)
	if calls := n2.callsOf(t, "alice", "c1"); len(calls) != 1 || calls[0].ID != call.ID || call.Status != "ringing" || len(call.ICEServers) == 0 {
		t.Fatalf("after the retried initiate: calls %+v; want the one ringing call %s (answered with its ICE servers)", calls, call.ID)
	}
	n2.mustAPI(t, "alice", http.MethodPost, "/calls/"+call.ID+"/candidates", candidatesBody, http.StatusNoContent)
	seen := bob2.until(t, "alice's candidates", event("CallCandidates", call.ID))
	if n, ids := count(seen, "CallInvite"); n != 0 || invites1 > 1 {
		t.Fatalf("bob heard %d invites on the killed node and %d (%v) after the retry; want at most the one before the kill and none after", invites1, n, ids)
	}
	t.Logf("initiate: the retry after the restart answered call %s; 1 call in the conversation; bob's invites: %d before the kill, 0 after", call.ID, invites1)

	n2.mustDie(t, "answer", "bob", http.MethodPost, "/calls/"+call.ID+"/answer", "answer-1", map[string]any{"sdp_answer": testAnswer})

	n3 := startCrashing(t, cfg, tok, "hangup")
	ans := n3.mustReplay(t, "answer", "bob", http.MethodPost, "/calls/"+call.ID+"/answer", "answer-1", map[string]any{"sdp_answer": testAnswer}, http.StatusOK)
	if ans.ID != call.ID || ans.Status != "answered" || ans.Answerer != "bob" || ans.SDPAnswer != testAnswer || len(ans.ICEServers) == 0 {
		t.Fatalf("answer retried: %+v; want call %s answered by bob with his answer and ICE servers", ans, call.ID)
	}
	// The hangup as a WebSocket command: the command's idempotency_key.
	alice3 := n3.dialWS(t, "alice", false)
	hangup := map[string]any{"type": "hangup", "call_id": call.ID, "idempotency_key": "hangup-1", "reason": "user_hangup"}
	writeCommand(t, alice3, hangup)
	alice3.drained()
	n3.requireCrashed(t, "hangup")

	n4 := startCalls(t, cfg, tok) // the build that ships; no crash point
	alice4 := n4.dialWS(t, "alice", false)
	reply := alice4.command(t, hangup)
	var ended callJSON
	if reply.Type != "reply" || json.Unmarshal(reply.Result, &ended) != nil || ended.ID != call.ID || ended.Status != "ended" || ended.EndReason != "user_hangup" {
		t.Fatalf("hangup command retried: %s; want the result: call %s ended (user_hangup)", reply.raw, call.ID)
	}
	if calls := n4.callsOf(t, "alice", "c1"); len(calls) != 1 {
		t.Errorf("at the end: %d calls in the conversation, want 1", len(calls))
	}
	// Without its key the same hangup is refused: the retry above was
	// answered from the record, not run again.
	code, body := n4.api(t, "alice", http.MethodPost, "/calls/"+call.ID+"/hangup", nil)
	wantAPIError(t, "a hangup without the key", code, body, http.StatusConflict, "call_ended")
}

// writeCommand sends a command without waiting for its reply (the node
// dies first).
func writeCommand(t *testing.T, c *wsClient, cmd map[string]any) {
	t.Helper()
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, data); err != nil {
		t.Fatalf("%s: write command: %v", c.user, err)
	}
}

// TestClusterRetryAfterKill: three nodes on one PostgreSQL database. Node
// A is killed between the commit and the response of alice's initiate;
// alice retries on node B with the same key and gets the call A committed;
// bob's WebSocket on B hears exactly one invite (the one A wrote into the
// feed with its transition). Node C is killed between the commit and the
// response of bob's answer; bob's retry on B answers the call as answered,
// and alice hears exactly one CallAnswer.
func TestClusterRetryAfterKill(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	tok := newAPITokens()
	cfg := func() string {
		return callsConfig(filepath.Join(t.TempDir(), "state"), "") +
			"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n"
	}
	initiate := map[string]any{"conversation_id": "c1", "sdp_offer": testOffer}

	b := startCalls(t, cfg(), tok)
	b.putConversation(t, "c1", "alice", "bob")
	bobWS := b.dialWS(t, "bob", false)
	aliceWS := b.dialWS(t, "alice", false)

	a := startCrashing(t, cfg(), tok, "initiate")
	a.mustDie(t, "initiate", "alice", http.MethodPost, "/calls/initiate", "init-1", initiate)
	call := b.mustReplay(t, "initiate on another node", "alice", http.MethodPost, "/calls/initiate", "init-1", initiate, http.StatusCreated)
	b.mustAPI(t, "alice", http.MethodPost, "/calls/"+call.ID+"/candidates", candidatesBody, http.StatusNoContent)
	seen := bobWS.until(t, "alice's candidates", event("CallCandidates", call.ID))
	if n, ids := count(seen, "CallInvite"); n != 1 || ids[0] != call.ID {
		t.Errorf("bob's WebSocket on B heard %d invites (%v); want exactly one, of %s", n, ids, call.ID)
	}
	if calls := b.callsOf(t, "alice", "c1"); len(calls) != 1 || calls[0].ID != call.ID {
		t.Fatalf("after the retry on B: calls %+v; want only %s", calls, call.ID)
	}
	t.Logf("initiate committed on A (killed), retried on B: call %s, 1 call, bob heard 1 invite on B", call.ID)

	c := startCrashing(t, cfg(), tok, "answer")
	c.mustDie(t, "answer", "bob", http.MethodPost, "/calls/"+call.ID+"/answer", "answer-1", map[string]any{"sdp_answer": testAnswer})
	ans := b.mustReplay(t, "answer on another node", "bob", http.MethodPost, "/calls/"+call.ID+"/answer", "answer-1", map[string]any{"sdp_answer": testAnswer}, http.StatusOK)
	if ans.ID != call.ID || ans.Status != "answered" || ans.Answerer != "bob" || len(ans.ICEServers) == 0 {
		t.Fatalf("answer retried on B: %+v; want call %s answered by bob, with ICE servers", ans, call.ID)
	}
	b.mustAPI(t, "bob", http.MethodPost, "/calls/"+call.ID+"/candidates", candidatesBody, http.StatusNoContent)
	seen = aliceWS.until(t, "bob's candidates", func(m wsMessage) bool { return m.Type == "CallCandidates" && m.ParticipantID == "bob" })
	if n, _ := count(seen, "CallAnswer"); n != 1 {
		t.Fatalf("alice's WebSocket on B heard %d answers; want exactly one", n)
	}
	b.mustAPI(t, "alice", http.MethodPost, "/calls/"+call.ID+"/hangup", nil, http.StatusOK)
}
