package main

// End-to-end tests of call signaling: REST and WebSocket clients against a
// real `icebox serve`, and the per-call TURN credentials that die with the
// call, across hangups, admin revocations, expiry and kill -9.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Timeouts of the call tests.
const (
	eventTimeout  = 5 * time.Second  // a WebSocket event after the request that caused it
	revokeWithin  = time.Second      // an ended call's allocations are gone by then
	expiryTimeout = 10 * time.Second // a 5 s invite has expired and been announced by then
	silenceWindow = 300 * time.Millisecond
)

// SDP bodies: opaque to icebox, only carried and stored.
const (
	testOffer  = "v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=e2e offer\r\nt=0 0\r\n"
	testAnswer = "v=0\r\no=bob 2 2 IN IP4 127.0.0.1\r\ns=e2e answer\r\nt=0 0\r\n"
)

// apiTokens are the static bearer tokens of the API users, by user.
type apiTokens map[string]string

// newAPITokens makes a random token for alice, bob, carol and admin (an
// administrator). dave has none: he is only ever a participant.
func newAPITokens() apiTokens {
	tok := apiTokens{}
	for _, u := range []string{"alice", "bob", "carol", "admin"} {
		tok[u] = "e2e-" + u + "-" + rand.Text()
	}
	return tok
}

// env is the ICEBOX_AUTH_STATIC_TOKENS variable that configures tok.
func (tok apiTokens) env() string {
	users := make([]string, 0, len(tok))
	for u := range tok {
		users = append(users, u)
	}
	sort.Strings(users)
	entries := make([]string, 0, len(users))
	for _, u := range users {
		sum := sha256.Sum256([]byte(tok[u]))
		entry := hex.EncodeToString(sum[:]) + ":" + u
		if u == "admin" {
			entry += ":admin"
		}
		entries = append(entries, entry)
	}
	return "ICEBOX_AUTH_STATIC_TOKENS=" + strings.Join(entries, ",")
}

// callsConfig is the test configuration with a calls section; extra holds
// more keys of that section, each indented by two spaces.
func callsConfig(stateDir, extra string) string {
	return testConfig(stateDir, cfgOpts{secret: testSecret}) + "calls:\n  invite_lifetime: 60s\n" + extra
}

// callsEnv is a running icebox with the API users of tok.
type callsEnv struct {
	*instance
	tok apiTokens
}

func startCalls(t *testing.T, cfgYAML string, tok apiTokens) *callsEnv {
	t.Helper()
	return &callsEnv{instance: startIcebox(t, cfgYAML, tok.env()), tok: tok}
}

// startCallsProcess is startCalls with icebox as a process (which crash
// can kill).
func startCallsProcess(t *testing.T, cfgYAML string, tok apiTokens) *callsEnv {
	t.Helper()
	return &callsEnv{instance: startIceboxProcess(t, cfgYAML, tok.env()), tok: tok}
}

// crash kills the process with SIGKILL, as a crash or the OOM killer would,
// and waits for it. The harness's clean-stop check at cleanup is skipped: a
// killed process has no exit code to check.
func (in *instance) crash() {
	in.stopOnce.Do(in.kill)
}

// apiRequest sends method url with the bearer token (if not "") and body:
// nil for none, a string or []byte as is, anything else as JSON.
func apiRequest(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	return clientRequest(t, httpClient, method, url, token, body)
}

// clientRequest is apiRequest through hc (one that dials inside a network
// namespace, say).
func clientRequest(t *testing.T, hc *http.Client, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, data
}

// api sends a request as user ("" = without a token).
func (e *callsEnv) api(t *testing.T, user, method, path string, body any) (int, []byte) {
	t.Helper()
	return apiRequest(t, method, e.httpURL(path), e.tok[user], body)
}

// mustAPI is api that requires the status want.
func (e *callsEnv) mustAPI(t *testing.T, user, method, path string, body any, want int) []byte {
	t.Helper()
	code, data := e.api(t, user, method, path, body)
	if code != want {
		t.Fatalf("%s %s as %s: %d %s, want %d", method, path, user, code, data, want)
	}
	return data
}

// putConversation creates a conversation as admin.
func (e *callsEnv) putConversation(t *testing.T, id string, participants ...string) {
	t.Helper()
	e.mustAPI(t, "admin", http.MethodPut, "/admin/conversations/"+id,
		map[string]any{"participants": participants}, http.StatusOK)
}

// endLiveCallsAtCleanup revokes, at cleanup, the calls of conv (which alice
// takes part in) still live then, so that SIGTERM has no call to drain.
func (e *callsEnv) endLiveCallsAtCleanup(t *testing.T, conv string) {
	t.Cleanup(func() {
		var resp struct {
			Calls []callJSON `json:"calls"`
		}
		body := e.mustAPI(t, "alice", http.MethodGet, "/calls?conversation_id="+conv+"&active=true", nil, http.StatusOK)
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatalf("GET /calls?active=true: %s: %v", body, err)
		}
		for _, c := range resp.Calls {
			e.mustAPI(t, "admin", http.MethodPost, "/admin/calls/"+c.ID+"/revoke", nil, http.StatusOK)
		}
	})
}

// callJSON is a call as the API writes it.
type callJSON struct {
	ID             string          `json:"id"`
	ConversationID string          `json:"conversation_id"`
	Initiator      string          `json:"initiator"`
	Status         string          `json:"status"`
	SDPOffer       string          `json:"sdp_offer"`
	SDPAnswer      string          `json:"sdp_answer"`
	Answerer       string          `json:"answerer"`
	EndReason      string          `json:"end_reason"`
	LifetimeMS     int64           `json:"lifetime_ms"`
	ICEServers     []iceServerJSON `json:"ice_servers"`
}

type iceServerJSON struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username"`
	Credential string   `json:"credential"`
}

// turnCred is a TURN username and password.
type turnCred struct{ user, pass string }

func decodeCall(t *testing.T, what string, data []byte) callJSON {
	t.Helper()
	var c callJSON
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatalf("%s: body %s: %v", what, data, err)
	}
	return c
}

// initiate starts a call in conv as user and returns it.
func (e *callsEnv) initiate(t *testing.T, user, conv string, extra map[string]any) callJSON {
	t.Helper()
	req := map[string]any{"conversation_id": conv, "sdp_offer": testOffer}
	for k, v := range extra {
		req[k] = v
	}
	c := decodeCall(t, "initiate", e.mustAPI(t, user, http.MethodPost, "/calls/initiate", req, http.StatusCreated))
	if c.ID == "" || c.Status != "ringing" || c.SDPOffer != testOffer || c.Initiator != user {
		t.Fatalf("initiate: got %+v, want a ringing call by %s with the offer", c, user)
	}
	return c
}

// answer answers callID as user and returns the call.
func (e *callsEnv) answer(t *testing.T, user, callID string) callJSON {
	t.Helper()
	c := decodeCall(t, "answer", e.mustAPI(t, user, http.MethodPost, "/calls/"+callID+"/answer",
		map[string]any{"sdp_answer": testAnswer}, http.StatusOK))
	if c.Status != "answered" || c.SDPAnswer != testAnswer || c.Answerer != user {
		t.Fatalf("answer: got %+v, want answered by %s with the answer", c, user)
	}
	return c
}

// getCall reads a call as user.
func (e *callsEnv) getCall(t *testing.T, user, callID string) callJSON {
	t.Helper()
	return decodeCall(t, "get call", e.mustAPI(t, user, http.MethodGet, "/calls/"+callID, nil, http.StatusOK))
}

// callCred returns the per-call TURN credential of a call response, after
// checking that it names the call and the user and that the TURN URIs are
// the instance's.
func (e *callsEnv) callCred(t *testing.T, c callJSON, user string) turnCred {
	t.Helper()
	wantURI := "turn:" + e.turnAddr() + "?transport=udp"
	for _, s := range c.ICEServers {
		if s.Username == "" {
			continue
		}
		if !strings.HasSuffix(s.Username, ":call-"+c.ID+":"+user) || s.Credential == "" {
			t.Fatalf("ice_servers of call %s for %s: username %q, want one ending in :call-%s:%s and a credential",
				c.ID, user, s.Username, c.ID, user)
		}
		found := false
		for _, u := range s.URLs {
			found = found || u == wantURI
		}
		if !found {
			t.Errorf("ice_servers of call %s: URLs %v lack %s", c.ID, s.URLs, wantURI)
		}
		return turnCred{s.Username, s.Credential}
	}
	t.Fatalf("call %s for %s: no TURN credential in ice_servers %+v", c.ID, user, c.ICEServers)
	return turnCred{}
}

// apiErrorJSON is the error body of every refusal.
type apiErrorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// wantAPIError checks a refusal's status and error code.
func wantAPIError(t *testing.T, what string, code int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var e struct {
		Error *apiErrorJSON `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Errorf("%s: %d %q, want %d with an error body (%v)", what, code, body, wantStatus, err)
		return
	}
	if code != wantStatus || e.Error.Code != wantCode || e.Error.Message == "" {
		t.Errorf("%s: %d %s, want %d with error code %q and a message", what, code, body, wantStatus, wantCode)
	}
}

// --- WebSocket clients ---

// wsMessage is any message the server sends on /ws: an event, or the reply
// or error answering a command.
type wsMessage struct {
	Type           string          `json:"type"`
	Ref            string          `json:"ref"`
	CallID         string          `json:"call_id"`
	ConversationID string          `json:"conversation_id"`
	InitiatorID    string          `json:"initiator_id"`
	ParticipantID  string          `json:"participant_id"`
	SDPOffer       string          `json:"sdp_offer"`
	SDPAnswer      string          `json:"sdp_answer"`
	Candidates     []candidateJSON `json:"candidates"`
	Reason         string          `json:"reason"`
	Status         string          `json:"status"`
	Result         json.RawMessage `json:"result"`
	Error          *apiErrorJSON   `json:"error"`

	raw string
}

type candidateJSON struct {
	Candidate     string `json:"candidate"`
	SDPMid        string `json:"sdpMid"`
	SDPMLineIndex int    `json:"sdpMLineIndex"`
}

// wsClient is a WebSocket client of one user. A goroutine reads every
// message into msgs, so the connection answers pings and closes cleanly
// whatever the test waits for.
type wsClient struct {
	user    string
	conn    *websocket.Conn
	msgs    chan wsMessage
	readErr error         // set before done is closed
	done    chan struct{} // closed when the reader stops
	refs    int
	// pending are messages received but not yet taken by await, oldest
	// first: a command's reply may come after an event a later await wants.
	pending []wsMessage
}

// dialWS connects as user to /ws, with the token in the Authorization
// header or, if viaSubprotocol, as the subprotocol "bearer.<token>" (what
// browsers do). It returns once the hub has registered the connection, so
// no event published after that can miss it.
func (e *callsEnv) dialWS(t *testing.T, user string, viaSubprotocol bool) *wsClient {
	t.Helper()
	token := e.tok[user]
	opts := &websocket.DialOptions{}
	if viaSubprotocol {
		opts.Subprotocols = []string{"bearer." + token}
	} else {
		opts.HTTPHeader = http.Header{"Authorization": {"Bearer " + token}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, "ws://"+loopback(e.httpPort)+"/ws", opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial /ws as %s: %v (HTTP status %d)", user, err, status)
	}
	if viaSubprotocol && conn.Subprotocol() != "bearer."+token {
		t.Errorf("/ws as %s: server selected subprotocol %q, want the offered bearer.<token>", user, conn.Subprotocol())
	}
	conn.SetReadLimit(1 << 20)
	c := &wsClient{user: user, conn: conn, msgs: make(chan wsMessage, 256), done: make(chan struct{})}
	stop := make(chan struct{})
	go c.read(stop)
	t.Cleanup(func() {
		close(stop)
		_ = conn.Close(websocket.StatusNormalClosure, "test done") // the server may be gone already
		<-c.done
	})
	c.sync(t)
	return c
}

func (c *wsClient) read(stop <-chan struct{}) {
	defer close(c.done)
	for {
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			c.readErr = err
			return
		}
		m := wsMessage{raw: string(data)}
		if typ != websocket.MessageText {
			m.Type = "binary frame"
		} else if err := json.Unmarshal(data, &m); err != nil {
			m.Type = "not JSON: " + err.Error()
		}
		select {
		case c.msgs <- m:
		case <-stop:
			return
		}
	}
}

// next returns the next message, or false when none came within timeout.
// It fails the test if the connection broke.
func (c *wsClient) next(t *testing.T, timeout time.Duration) (wsMessage, bool) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case m := <-c.msgs:
		return m, true
	case <-c.done:
		t.Fatalf("%s's WebSocket closed: %v (not taken: %s)", c.user, c.readErr, c.pendingText())
	case <-timer.C:
	}
	return wsMessage{}, false
}

// await returns the first message, received or pending, that match
// accepts, keeping the others pending (a participant also hears its own
// actions); it fails if none comes within eventTimeout.
func (c *wsClient) await(t *testing.T, what string, match func(wsMessage) bool) wsMessage {
	t.Helper()
	return c.awaitWithin(t, eventTimeout, what, match)
}

func (c *wsClient) awaitWithin(t *testing.T, timeout time.Duration, what string, match func(wsMessage) bool) wsMessage {
	t.Helper()
	for i, m := range c.pending {
		if match(m) {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			return m
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		m, ok := c.next(t, time.Until(deadline))
		if !ok {
			t.Fatalf("%s did not receive %s within %s; not taken: %s", c.user, what, timeout, c.pendingText())
		}
		if match(m) {
			return m
		}
		c.pending = append(c.pending, m)
	}
}

func (c *wsClient) pendingText() string {
	raws := make([]string, len(c.pending))
	for i, m := range c.pending {
		raws[i] = m.raw
	}
	return "[" + strings.Join(raws, " ") + "]"
}

// event matches an event of type typ about callID.
func event(typ, callID string) func(wsMessage) bool {
	return func(m wsMessage) bool { return m.Type == typ && m.CallID == callID }
}

// command sends a command (a "ref" is added) and returns the server's
// reply or error to it.
func (c *wsClient) command(t *testing.T, cmd map[string]any) wsMessage {
	t.Helper()
	c.refs++
	ref := c.user + "-" + strconv.Itoa(c.refs)
	cmd["ref"] = ref
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, data); err != nil {
		t.Fatalf("%s: write command %s: %v", c.user, data, err)
	}
	return c.await(t, fmt.Sprintf("the answer to command %s", data), func(m wsMessage) bool {
		return (m.Type == "reply" || m.Type == "error") && m.Ref == ref
	})
}

// sync sends a command and requires its answer to be the very next message.
// The hub writes a connection's messages in the order it queued them, so
// right after the dial this proves the hub has registered the connection (no
// later event can miss it), and later it proves that nothing published to
// this client before the command is still unread.
func (c *wsClient) sync(t *testing.T) {
	t.Helper()
	c.refs++
	ref := c.user + "-sync-" + strconv.Itoa(c.refs)
	data, _ := json.Marshal(map[string]any{"type": "get", "ref": ref, "call_id": "no-such-call"})
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, data); err != nil {
		t.Fatalf("%s: write sync command: %v", c.user, err)
	}
	m, ok := c.next(t, eventTimeout)
	switch {
	case !ok:
		t.Fatalf("%s: no answer to the sync command within %s", c.user, eventTimeout)
	case m.Type != "error" || m.Ref != ref || m.Error == nil || m.Error.Code != "not_found":
		t.Fatalf("%s: got %s, want nothing before the not_found error answering the sync command (ref %s)", c.user, m.raw, ref)
	}
}

// expectSilence requires that nothing arrives (and the connection stays
// open) for silenceWindow.
func (c *wsClient) expectSilence(t *testing.T) {
	t.Helper()
	if len(c.pending) > 0 {
		t.Errorf("%s received %s, want nothing", c.user, c.pendingText())
	}
	if m, ok := c.next(t, silenceWindow); ok {
		t.Errorf("%s received %s, want nothing", c.user, m.raw)
	}
}

// --- relay ---

// relayDelivers reports whether a datagram the client sends through its
// relay reaches peer within d. The payload is unique, so a late duplicate of
// an earlier round trip does not count.
func relayDelivers(a *turnAlloc, peer net.PacketConn, d time.Duration) bool {
	want := []byte("late datagram " + rand.Text())
	peerAddr := peer.LocalAddr()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := a.relay.WriteTo(want, peerAddr); err != nil {
			return false // the client learnt that the allocation is gone
		}
		_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, _, err := peer.ReadFrom(buf)
			if err != nil {
				break
			}
			if bytes.Equal(buf[:n], want) {
				_ = peer.SetReadDeadline(time.Time{})
				return true
			}
		}
	}
	_ = peer.SetReadDeadline(time.Time{})
	return false
}

// allocationJSON is an entry of GET /admin/allocations.
type allocationJSON struct {
	User   string `json:"user"`
	CallID string `json:"call_id"`
}

// callAllocations lists the live allocations of callID, by user.
func (e *callsEnv) callAllocations(t *testing.T, callID string) []string {
	t.Helper()
	var resp struct {
		Allocations []allocationJSON `json:"allocations"`
	}
	body := e.mustAPI(t, "admin", http.MethodGet, "/admin/allocations", nil, http.StatusOK)
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("/admin/allocations: %s: %v", body, err)
	}
	var users []string
	for _, a := range resp.Allocations {
		if a.CallID == callID {
			users = append(users, a.User)
		}
	}
	sort.Strings(users)
	return users
}

const (
	mRevokedClosed = "icebox_turn_revoked_allocations_closed_total"
	mAuthRevoked   = `icebox_turn_auth_total{outcome="revoked"}`
)

// callLeg is one participant's allocation in a call, with its peer.
type callLeg struct {
	user  string
	cred  turnCred
	alloc *turnAlloc
	peer  net.PacketConn
}

// allocateLegs allocates with each participant's per-call credential and
// relays a datagram each way through every allocation.
func (e *callsEnv) allocateLegs(t *testing.T, callID string, legs []callLeg) {
	t.Helper()
	for i := range legs {
		a, err := allocate(t, "udp", e.turnAddr(), nil, legs[i].cred.user, legs[i].cred.pass)
		if err != nil {
			t.Fatalf("%s's credential for live call %s: %v", legs[i].user, callID, err)
		}
		legs[i].alloc, legs[i].peer = a, listenPeer(t)
		relayRoundTrip(t, a, legs[i].peer)
	}
	if got, want := e.callAllocations(t, callID), []string{"alice", "bob"}; !slices.Equal(got, want) {
		t.Fatalf("/admin/allocations for live call %s: users %v, want %v", callID, got, want)
	}
}

// requireRelayDead checks that ending callID (at start, with the metrics
// before) closed its allocations within revokeWithin — in the admin list,
// the revocation counter and the relay itself — and that its credentials no
// longer allocate.
func (e *callsEnv) requireRelayDead(t *testing.T, callID string, legs []callLeg, start time.Time, before map[string]float64) {
	t.Helper()
	var left []string
	var m map[string]float64
	closed := waitFor(time.Until(start.Add(revokeWithin)), func() bool {
		left, m = e.callAllocations(t, callID), e.metrics(t)
		return len(left) == 0 && m[mRevokedClosed]-before[mRevokedClosed] >= float64(len(legs))
	})
	if !closed {
		t.Errorf("%s after call %s ended: /admin/allocations still lists %v; %s moved by %v, want %d",
			time.Since(start).Round(time.Millisecond), callID, left, mRevokedClosed,
			m[mRevokedClosed]-before[mRevokedClosed], len(legs))
	}
	for _, l := range legs {
		if relayDelivers(l.alloc, l.peer, revokeWithin) {
			t.Errorf("%s's relay of ended call %s still carries data", l.user, callID)
		}
	}
	authBefore := e.metrics(t)[mAuthRevoked]
	for _, l := range legs {
		if _, err := allocate(t, "udp", e.turnAddr(), nil, l.cred.user, l.cred.pass); err == nil {
			t.Errorf("a new Allocate with %s's credential of ended call %s succeeded", l.user, callID)
		}
	}
	if got := e.metrics(t)[mAuthRevoked]; got < authBefore+float64(len(legs)) {
		t.Errorf("%s went from %v to %v over %d refused Allocates, want them counted as revoked",
			mAuthRevoked, authBefore, got, len(legs))
	}
}

// --- tests ---

// TestCallOverWebSocket runs a call between alice and bob: REST requests,
// events on their WebSockets, candidates over REST and over the WebSocket
// command path, a hangup over the WebSocket. carol, in another
// conversation, hears nothing and may neither read nor answer the call.
func TestCallOverWebSocket(t *testing.T) {
	t.Parallel()
	e := startCalls(t, callsConfig(filepath.Join(t.TempDir(), "state"), ""), newAPITokens())
	e.putConversation(t, "c1", "alice", "bob")
	e.putConversation(t, "c2", "carol", "dave")

	alice := e.dialWS(t, "alice", false)
	bob := e.dialWS(t, "bob", false)
	carol := e.dialWS(t, "carol", true)

	call := e.initiate(t, "alice", "c1", nil)
	inv := bob.await(t, "CallInvite", event("CallInvite", call.ID))
	if inv.SDPOffer != testOffer || inv.InitiatorID != "alice" || inv.ConversationID != "c1" || inv.Status != "ringing" {
		t.Errorf("bob's CallInvite: %s; want alice's offer in c1, ringing", inv.raw)
	}

	e.answer(t, "bob", call.ID)
	ans := alice.await(t, "CallAnswer", event("CallAnswer", call.ID))
	if ans.SDPAnswer != testAnswer || ans.ParticipantID != "bob" || ans.Status != "answered" {
		t.Errorf("alice's CallAnswer: %s; want bob's answer, answered", ans.raw)
	}

	// bob's candidates over the WebSocket command path.
	bobCand := candidateJSON{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", SDPMid: "0"}
	reply := bob.command(t, map[string]any{"type": "candidates", "call_id": call.ID, "candidates": []candidateJSON{bobCand}})
	if reply.Type != "reply" || !strings.Contains(string(reply.Result), `"sent"`) {
		t.Errorf("bob's candidates command: %s, want a reply with status sent", reply.raw)
	}
	got := alice.await(t, "bob's CallCandidates", func(m wsMessage) bool {
		return m.Type == "CallCandidates" && m.CallID == call.ID && m.ParticipantID == "bob"
	})
	if len(got.Candidates) != 1 || got.Candidates[0] != bobCand {
		t.Errorf("alice's CallCandidates: %s, want bob's %+v", got.raw, bobCand)
	}

	// alice's over REST.
	aliceCand := candidateJSON{Candidate: "candidate:2 1 udp 2130706431 127.0.0.1 50001 typ host", SDPMid: "0"}
	e.mustAPI(t, "alice", http.MethodPost, "/calls/"+call.ID+"/candidates",
		map[string]any{"candidates": []candidateJSON{aliceCand}}, http.StatusNoContent)
	got = bob.await(t, "alice's CallCandidates", func(m wsMessage) bool {
		return m.Type == "CallCandidates" && m.CallID == call.ID && m.ParticipantID == "alice"
	})
	if len(got.Candidates) != 1 || got.Candidates[0] != aliceCand {
		t.Errorf("bob's CallCandidates: %s, want alice's %+v", got.raw, aliceCand)
	}

	// carol is in no conversation of the call: refused, and the call is untouched.
	before := e.mustAPI(t, "alice", http.MethodGet, "/calls/"+call.ID, nil, http.StatusOK)
	code, body := e.api(t, "carol", http.MethodGet, "/calls/"+call.ID, nil)
	wantAPIError(t, "carol GET /calls/{id}", code, body, http.StatusForbidden, "forbidden")
	code, body = e.api(t, "carol", http.MethodPost, "/calls/"+call.ID+"/answer", map[string]any{"sdp_answer": "v=0\r\n"})
	wantAPIError(t, "carol POST /calls/{id}/answer", code, body, http.StatusForbidden, "forbidden")
	if after := e.mustAPI(t, "alice", http.MethodGet, "/calls/"+call.ID, nil, http.StatusOK); !bytes.Equal(before, after) {
		t.Errorf("carol's refused answer changed the call:\nbefore %s\nafter  %s", before, after)
	}

	// alice hangs up over the WebSocket.
	reply = alice.command(t, map[string]any{"type": "hangup", "call_id": call.ID})
	var ended callJSON
	if reply.Type != "reply" || json.Unmarshal(reply.Result, &ended) != nil || ended.Status != "ended" || ended.EndReason != "user_hangup" {
		t.Errorf("alice's hangup command: %s, want a reply with the call ended (user_hangup)", reply.raw)
	}
	for _, c := range []*wsClient{alice, bob} {
		h := c.await(t, "CallHangup", event("CallHangup", call.ID))
		if h.Status != "ended" || h.Reason != "user_hangup" || h.ParticipantID != "alice" {
			t.Errorf("%s's CallHangup: %s, want ended by alice, user_hangup", c.user, h.raw)
		}
	}

	// Anything published to carol would have been queued before this answer.
	carol.sync(t)
	carol.expectSilence(t)
}

// TestCallCredentialsDieWithCall relays through the per-call credentials of
// alice and bob, then checks that a hangup, and an admin's revocation of
// another call, close the allocations at once and refuse the credentials.
func TestCallCredentialsDieWithCall(t *testing.T) {
	t.Parallel()
	e := startCalls(t, callsConfig(filepath.Join(t.TempDir(), "state"), ""), newAPITokens())
	e.putConversation(t, "c1", "alice", "bob")

	for _, end := range []struct {
		name string
		do   func(t *testing.T, callID string) callJSON
		want string // end_reason
	}{{
		name: "hangup",
		do: func(t *testing.T, callID string) callJSON {
			return decodeCall(t, "hangup", e.mustAPI(t, "alice", http.MethodPost, "/calls/"+callID+"/hangup", nil, http.StatusOK))
		},
		want: "user_hangup",
	}, {
		name: "admin revoke",
		do: func(t *testing.T, callID string) callJSON {
			return decodeCall(t, "revoke", e.mustAPI(t, "admin", http.MethodPost, "/admin/calls/"+callID+"/revoke", nil, http.StatusOK))
		},
		want: "revoked",
	}} {
		t.Run(end.name, func(t *testing.T) {
			offer := e.initiate(t, "alice", "c1", nil)
			ans := e.answer(t, "bob", offer.ID)
			legs := []callLeg{
				{user: "alice", cred: e.callCred(t, offer, "alice")},
				{user: "bob", cred: e.callCred(t, ans, "bob")},
			}
			e.allocateLegs(t, offer.ID, legs)

			before := e.metrics(t)
			start := time.Now()
			if c := end.do(t, offer.ID); c.Status != "ended" || c.EndReason != end.want {
				t.Errorf("%s: call is %s (%s), want ended (%s)", end.name, c.Status, c.EndReason, end.want)
			}
			e.requireRelayDead(t, offer.ID, legs, start, before)
		})
	}
}

// TestCallSurvivesKill9 kills icebox with SIGKILL during a call and
// restarts it on the same state: the call is still answered with its SDP;
// once it is hung up, a second crash does not bring its credentials back.
func TestCallSurvivesKill9(t *testing.T) {
	t.Parallel()
	cfg := callsConfig(filepath.Join(t.TempDir(), "state"), "")
	tok := newAPITokens()

	first := startCallsProcess(t, cfg, tok)
	first.putConversation(t, "c1", "alice", "bob")
	offer := first.initiate(t, "alice", "c1", nil)
	cred := first.callCred(t, offer, "alice")
	first.answer(t, "bob", offer.ID)
	first.crash()

	second := startCallsProcess(t, cfg, tok)
	c := second.getCall(t, "alice", offer.ID)
	if c.Status != "answered" || c.SDPOffer != testOffer || c.SDPAnswer != testAnswer || c.Answerer != "bob" {
		t.Fatalf("after kill -9: call %+v, want answered by bob with the same offer and answer", c)
	}
	// The live call's credential still works after the crash: what refuses
	// it below is the revocation, not the restart.
	if _, err := allocate(t, "udp", second.turnAddr(), nil, cred.user, cred.pass); err != nil {
		t.Fatalf("alice's credential of the live call after kill -9: %v", err)
	}
	second.mustAPI(t, "alice", http.MethodPost, "/calls/"+offer.ID+"/hangup", map[string]any{"reason": "user_hangup"}, http.StatusOK)
	second.crash()

	third := startCallsProcess(t, cfg, tok)
	if c := third.getCall(t, "alice", offer.ID); c.Status != "ended" || c.EndReason != "user_hangup" {
		t.Errorf("after the second kill -9: call is %s (%s), want ended (user_hangup)", c.Status, c.EndReason)
	}
	if _, err := allocate(t, "udp", third.turnAddr(), nil, cred.user, cred.pass); err == nil {
		t.Errorf("after kill -9 and restart, the credential of ended call %s allocates again", offer.ID)
	}
	if got := third.metrics(t)[mAuthRevoked]; got < 1 {
		t.Errorf("%s = %v after the refused Allocate, want it refused as revoked", mAuthRevoked, got)
	}
	fresh := mintCreds(t, third.cfgPath, "alice")
	if _, err := allocate(t, "udp", third.turnAddr(), nil, fresh.Username, fresh.Password); err != nil {
		t.Errorf("a fresh credential from icebox creds after the restart: %v", err)
	}
}

// TestInviteExpires lets a 5 s invite ring out: both sides hear a hangup
// with reason invite_timeout, the call reads as expired, and its
// credentials die with it.
func TestInviteExpires(t *testing.T) {
	t.Parallel()
	e := startCalls(t, callsConfig(filepath.Join(t.TempDir(), "state"), ""), newAPITokens())
	e.putConversation(t, "c1", "alice", "bob")
	alice := e.dialWS(t, "alice", false)
	bob := e.dialWS(t, "bob", true)

	call := e.initiate(t, "alice", "c1", map[string]any{"lifetime_ms": 5000})
	if call.LifetimeMS != 5000 {
		t.Errorf("lifetime_ms %d, want 5000", call.LifetimeMS)
	}
	cred := e.callCred(t, call, "alice")
	start := time.Now()
	for _, c := range []*wsClient{alice, bob} {
		h := c.awaitWithin(t, time.Until(start.Add(expiryTimeout)), "CallHangup", event("CallHangup", call.ID))
		if h.Reason != "invite_timeout" || h.Status != "expired" {
			t.Errorf("%s's CallHangup: %s, want reason invite_timeout, status expired", c.user, h.raw)
		}
	}
	if el := time.Since(start); el < 4*time.Second {
		t.Errorf("the 5 s invite expired after %s", el)
	}
	c := e.getCall(t, "bob", call.ID)
	if c.Status != "expired" || c.EndReason != "invite_timeout" {
		t.Errorf("GET expired call: status %s, end_reason %s; want expired, invite_timeout", c.Status, c.EndReason)
	}
	if _, err := allocate(t, "udp", e.turnAddr(), nil, cred.user, cred.pass); err == nil {
		t.Errorf("the credential of expired call %s allocates", call.ID)
	}
}

// TestAPIRefusals sends requests the API must refuse, checks the status and
// error code of each, and that a refused write changed nothing.
func TestAPIRefusals(t *testing.T) {
	t.Parallel()
	e := startCalls(t, callsConfig(filepath.Join(t.TempDir(), "state"), "  initiate_rate: 0.01\n  initiate_burst: 2\n"), newAPITokens())
	e.putConversation(t, "c1", "alice", "bob", "carol")
	e.endLiveCallsAtCleanup(t, "c1")
	// bob starts the calls, so alice's initiation budget is left for the
	// rate limit at the end.
	answered := e.initiate(t, "bob", "c1", nil).ID
	e.answer(t, "alice", answered)
	ended := e.initiate(t, "bob", "c1", nil).ID
	e.mustAPI(t, "bob", http.MethodPost, "/calls/"+ended+"/hangup", nil, http.StatusOK)

	const callsOfC1 = "/calls?conversation_id=c1"
	answerOf := func(id string) string { return "/calls/" + id + "/answer" }
	goodAnswer := map[string]any{"sdp_answer": testAnswer}
	for _, tc := range []struct {
		name       string
		method     string
		path       string
		token      string // "" = none
		body       any
		wantStatus int
		wantCode   string
		unchanged  string // GET path (as admin for /admin/*, else alice) that must read the same after
	}{
		{"no token", http.MethodPost, "/calls/initiate", "",
			map[string]any{"conversation_id": "c1", "sdp_offer": testOffer}, 401, "unauthorized", callsOfC1},
		{"wrong token", http.MethodPost, "/calls/initiate", "e2e-wrong-" + rand.Text(),
			map[string]any{"conversation_id": "c1", "sdp_offer": testOffer}, 401, "unauthorized", callsOfC1},
		{"wrong token on GET", http.MethodGet, "/calls/" + answered, "e2e-wrong-" + rand.Text(), nil, 401, "unauthorized", ""},
		{"invalid JSON", http.MethodPost, answerOf(answered), e.tok["carol"], `{"sdp_answer":`, 400, "invalid_json", "/calls/" + answered},
		{"unknown field", http.MethodPost, answerOf(answered), e.tok["carol"],
			map[string]any{"sdp_answer": testAnswer, "sdp_anwser": "typo"}, 400, "unknown_field", "/calls/" + answered},
		{"2 MiB body", http.MethodPost, answerOf(answered), e.tok["carol"],
			map[string]any{"sdp_answer": strings.Repeat("a", 2<<20)}, 413, "too_large", "/calls/" + answered},
		{"unknown call", http.MethodGet, "/calls/no-such-call", e.tok["alice"], nil, 404, "not_found", ""},
		{"answer unknown call", http.MethodPost, answerOf("no-such-call"), e.tok["alice"], goodAnswer, 404, "not_found", callsOfC1},
		{"answer an ended call", http.MethodPost, answerOf(ended), e.tok["alice"], goodAnswer, 409, "call_ended", "/calls/" + ended},
		{"second answer", http.MethodPost, answerOf(answered), e.tok["carol"], goodAnswer, 409, "already_answered", "/calls/" + answered},
		{"non-admin PUT conversation", http.MethodPut, "/admin/conversations/c1", e.tok["alice"],
			map[string]any{"participants": []string{"alice", "mallory"}}, 403, "forbidden", "/admin/conversations/c1"},
		{"non-admin revoke", http.MethodPost, "/admin/calls/" + answered + "/revoke", e.tok["bob"], nil, 403, "forbidden", "/calls/" + answered},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := "alice"
			if strings.HasPrefix(tc.unchanged, "/admin/") {
				reader = "admin"
			}
			var before []byte
			if tc.unchanged != "" {
				before = e.mustAPI(t, reader, http.MethodGet, tc.unchanged, nil, http.StatusOK)
			}
			code, body := apiRequest(t, tc.method, e.httpURL(tc.path), tc.token, tc.body)
			wantAPIError(t, tc.method+" "+tc.path, code, body, tc.wantStatus, tc.wantCode)
			if tc.unchanged != "" {
				if after := e.mustAPI(t, reader, http.MethodGet, tc.unchanged, nil, http.StatusOK); !bytes.Equal(before, after) {
					t.Errorf("GET %s changed after the refused request:\nbefore %s\nafter  %s", tc.unchanged, before, after)
				}
			}
		})
	}

	t.Run("rate limit", func(t *testing.T) {
		e.initiate(t, "alice", "c1", nil)
		e.initiate(t, "alice", "c1", nil)
		before := e.mustAPI(t, "alice", http.MethodGet, callsOfC1, nil, http.StatusOK)
		code, body := e.api(t, "alice", http.MethodPost, "/calls/initiate",
			map[string]any{"conversation_id": "c1", "sdp_offer": testOffer})
		wantAPIError(t, "alice's third initiate in a row", code, body, http.StatusTooManyRequests, "rate_limited")
		if after := e.mustAPI(t, "alice", http.MethodGet, callsOfC1, nil, http.StatusOK); !bytes.Equal(before, after) {
			t.Errorf("the rate-limited initiate changed the calls of c1:\nbefore %s\nafter  %s", before, after)
		}
		// The limit is per user: carol has not started a call yet.
		e.initiate(t, "carol", "c1", nil)
	})
}
