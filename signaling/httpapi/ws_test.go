package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/icebox-voip/icebox/signaling"
)

// wsTestUser carries the user in the test server's requests, standing in
// for authentication.
const wsTestUser = "X-Test-User"

// wsEnv is a hub behind a real HTTP server on 127.0.0.1:0.
type wsEnv struct {
	hub *Hub
	srv *httptest.Server
	reg *prometheus.Registry
	url string
}

// newWSEnv starts a hub and a test server whose handler serves every
// request as a WebSocket of the user named in the X-Test-User header, with
// ctx (nil: the request's context). The hub and server are closed, and
// goroutine leaks checked, when the test ends.
func newWSEnv(t *testing.T, ctx context.Context, cfg HubConfig, cmd CommandFunc) *wsEnv {
	t.Helper()
	checkGoroutineLeaks(t)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	cfg.Logger = zerolog.New(zerolog.NewTestWriter(t))
	if cmd == nil {
		cmd = func(context.Context, string, json.RawMessage) (any, error) { return "ok", nil }
	}
	hub := NewHub(cfg)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		serveCtx := ctx
		if serveCtx == nil {
			serveCtx = r.Context()
		}
		// Errors are the hub's business (logged there); tests look at
		// what clients see and at the metrics.
		_ = hub.Serve(serveCtx, w, r, r.Header.Get(wsTestUser), bearerSubprotocol(r), cmd)
	}))
	t.Cleanup(func() {
		if err := hub.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		srv.Close()
	})
	return &wsEnv{hub: hub, srv: srv, reg: reg, url: "ws" + strings.TrimPrefix(srv.URL, "http")}
}

// bearerSubprotocol picks the "bearer.<token>" subprotocol a client
// offered, as the real handler does.
func bearerSubprotocol(r *http.Request) string {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); strings.HasPrefix(p, "bearer.") {
				return p
			}
		}
	}
	return ""
}

// dial connects as user; the connection is closed when the test ends.
func (e *wsEnv) dial(t *testing.T, user string, opts *websocket.DialOptions) *websocket.Conn {
	t.Helper()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	if opts.HTTPHeader == nil {
		opts.HTTPHeader = http.Header{}
	}
	opts.HTTPHeader.Set(wsTestUser, user)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url, opts)
	if err != nil {
		t.Fatalf("dial as %s: %v", user, err)
	}
	c.SetReadLimit(1 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// waitConnections waits until the hub counts n connections (Accept returns
// to the client before the hub has registered the connection).
func (e *wsEnv) waitConnections(t *testing.T, n int) {
	t.Helper()
	waitFor(t, 5*time.Second, func() bool { return e.hub.Connections() == n },
		fmt.Sprintf("Connections() == %d", n))
}

// checkConnectionsGauge checks icebox_ws_connections as the hub's
// registry exposes it.
func (e *wsEnv) checkConnectionsGauge(t *testing.T, want int) {
	t.Helper()
	exp := fmt.Sprintf("# HELP icebox_ws_connections Open WebSocket connections.\n# TYPE icebox_ws_connections gauge\nicebox_ws_connections %d\n", want)
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(exp), "icebox_ws_connections"); err != nil {
		t.Errorf("icebox_ws_connections: %v", err)
	}
}

// dropped reads icebox_ws_dropped_connections_total{reason}.
func (e *wsEnv) dropped(t *testing.T, reason string) float64 {
	t.Helper()
	return testutil.ToFloat64(e.hub.dropped.WithLabelValues(reason))
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// readMsg reads one text message and decodes it; a read that takes longer
// than 5s fails the test.
func readMsg(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, data, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("got a %v message, want text", typ)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("message %q is not a JSON object: %v", data, err)
	}
	return m
}

// expectNothing asserts that c receives no message within d. It leaves c
// closed: coder/websocket closes a connection whose read context expires.
func expectNothing(t *testing.T, name string, c *websocket.Conn, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if _, data, err := c.Read(ctx); err == nil {
		t.Errorf("%s got %s, want nothing", name, data)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s: read error %v, want a timeout", name, err)
	}
}

// readClose reads until the connection ends and returns the close status
// (-1 if it ended without a close frame) and the number of data messages
// read before that.
func readClose(t *testing.T, c *websocket.Conn, timeout time.Duration) (websocket.StatusCode, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for n := 0; ; n++ {
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("connection still open after %v", timeout)
			}
			return websocket.CloseStatus(err), n
		}
	}
}

func hangupEvent(callID string, recipients ...string) signaling.Event {
	return signaling.Event{
		Type:           signaling.EventCallHangup,
		CallID:         callID,
		ConversationID: "conv-1",
		Recipients:     recipients,
		Payload: signaling.EndPayload{
			Type:           signaling.EventCallHangup,
			CallID:         callID,
			ConversationID: "conv-1",
			ParticipantID:  "alice",
			Reason:         signaling.ReasonUserHangup,
			Status:         signaling.StatusEnded,
		},
	}
}

func TestHubPublishReachesEveryConnectionOfRecipients(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	conns := []struct {
		name string
		c    *websocket.Conn
	}{
		{"alice#1", e.dial(t, "alice", nil)},
		{"alice#2", e.dial(t, "alice", nil)},
		{"bob", e.dial(t, "bob", nil)},
	}
	carol := e.dial(t, "carol", nil)
	e.waitConnections(t, 4)

	e.hub.Publish(hangupEvent("call-1", "alice", "bob", "alice", "dave"))
	// carol's marker comes after call-1 in her queue, had call-1 been put
	// there: her first message tells whether it was.
	e.hub.Publish(hangupEvent("marker", "carol"))

	for _, c := range conns {
		got := readMsg(t, c.c)
		if got["type"] != signaling.EventCallHangup || got["call_id"] != "call-1" || got["reason"] != "user_hangup" {
			t.Errorf("%s got %v, want the CallHangup of call-1", c.name, got)
		}
	}
	if got := readMsg(t, carol); got["call_id"] != "marker" {
		t.Errorf("carol got %v, want only the marker event (she is not a recipient of call-1)", got)
	}
	// One delivery per connection, even with alice listed twice.
	for _, c := range conns {
		expectNothing(t, c.name, c.c, 100*time.Millisecond)
	}
	expectNothing(t, "carol", carol, 10*time.Millisecond)

	// The writer counts a message once Write returns, maybe after the
	// client has read it.
	waitFor(t, 5*time.Second, func() bool { return testutil.ToFloat64(e.hub.sent) == 4 },
		"icebox_ws_messages_sent_total == 4")
}

func TestHubPublishWithoutConnections(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	// A payload that cannot be encoded is logged, not sent, and nobody is
	// dropped for it.
	c := e.dial(t, "alice", nil)
	e.waitConnections(t, 1)
	e.hub.Publish(signaling.Event{Type: "Bad", Recipients: []string{"alice"}, Payload: func() {}})
	e.hub.Publish(hangupEvent("call-1", "nobody"))
	e.hub.Publish(hangupEvent("call-2", "alice"))
	if got := readMsg(t, c); got["call_id"] != "call-2" {
		t.Errorf("got %v, want call-2", got)
	}
	if got := e.hub.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1", got)
	}
}

// testCommand is the CommandFunc of the command tests.
func testCommand(started chan<- string, release <-chan struct{}) CommandFunc {
	return func(ctx context.Context, user string, msg json.RawMessage) (any, error) {
		var m struct {
			Type string `json:"type"`
			Ref  string `json:"ref"`
			N    int    `json:"n"`
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			return nil, fmt.Errorf("the hub passed invalid JSON %q: %w", msg, err)
		}
		switch m.Type {
		case "echo":
			return map[string]any{"user": user, "n": m.N}, nil
		case "forbid":
			return nil, fmt.Errorf("%w: x", signaling.ErrForbidden)
		case "transition":
			return nil, &signaling.TransitionError{Code: "call_ended", Status: signaling.StatusEnded, Msg: "too late"}
		case "boom":
			return nil, errors.New("store: secret internal detail")
		case "panic":
			panic("secret panic detail")
		case "unencodable":
			return func() {}, nil
		case "wait":
			started <- m.Ref
			select {
			case <-release:
				return "released", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return nil, apiError(http.StatusBadRequest, "unknown_command", "unknown command")
	}
}

func writeText(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
}

func TestHubCommands(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, testCommand(nil, nil))
	c := e.dial(t, "alice", nil)

	tests := []struct {
		send string
		want string
	}{
		{`{"type":"echo","ref":"r1","n":3}`, `{"type":"reply","ref":"r1","result":{"user":"alice","n":3}}`},
		{`{"type":"echo","n":4}`, `{"type":"reply","result":{"user":"alice","n":4}}`},
		{`{"type":"forbid","ref":"r2"}`, `{"type":"error","ref":"r2","error":{"code":"forbidden","message":"forbidden: x"}}`},
		{`{"type":"transition","ref":"r3"}`, `{"type":"error","ref":"r3","error":{"code":"call_ended","message":"call_ended: too late (call is ended)"}}`},
		{`{"type":"nope","ref":"r4"}`, `{"type":"error","ref":"r4","error":{"code":"unknown_command","message":"unknown command"}}`},
		// Internal errors keep their details to the log.
		{`{"type":"boom","ref":"r5"}`, `{"type":"error","ref":"r5","error":{"code":"internal","message":"internal error"}}`},
		{`{"type":"panic","ref":"r6"}`, `{"type":"error","ref":"r6","error":{"code":"internal","message":"internal error"}}`},
		{`{"type":"unencodable","ref":"r7"}`, `{"type":"error","ref":"r7","error":{"code":"internal","message":"internal error"}}`},
		// Not commands: an error each, and the connection stays usable.
		{`{not json`, `{"type":"error","error":{"code":"invalid_request","message":"a command is a JSON object"}}`},
		{`null`, `{"type":"error","error":{"code":"invalid_request","message":"a command is a JSON object"}}`},
		{`["echo"]`, `{"type":"error","error":{"code":"invalid_request","message":"a command is a JSON object"}}`},
		{`"echo"`, `{"type":"error","error":{"code":"invalid_request","message":"a command is a JSON object"}}`},
		{`{"ref":"r8"}`, `{"type":"error","ref":"r8","error":{"code":"invalid_request","message":"\"type\" must be a non-empty string"}}`},
		{`{"type":5,"ref":"r9"}`, `{"type":"error","ref":"r9","error":{"code":"invalid_request","message":"\"type\" must be a non-empty string"}}`},
		{`{"type":"","ref":"r10"}`, `{"type":"error","ref":"r10","error":{"code":"invalid_request","message":"\"type\" must be a non-empty string"}}`},
		{`{"type":"echo","ref":11}`, `{"type":"error","error":{"code":"invalid_request","message":"\"ref\" must be a string"}}`},
		{`{"type":"echo","ref":"r12","n":12}`, `{"type":"reply","ref":"r12","result":{"user":"alice","n":12}}`},
	}
	for _, tt := range tests {
		writeText(t, c, tt.send)
		got := readMsg(t, c)
		var want map[string]any
		if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
			t.Fatalf("bad want %s: %v", tt.want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("sent %s\ngot  %v\nwant %v", tt.send, got, want)
		}
	}
	if got, want := testutil.ToFloat64(e.hub.received), float64(len(tests)); got != want {
		t.Errorf("icebox_ws_messages_received_total = %v, want %v", got, want)
	}
	if got := e.hub.Connections(); got != 1 {
		t.Errorf("Connections() = %d after bad messages, want 1", got)
	}
}

func TestHubSlowCommandDoesNotStallEvents(t *testing.T) {
	started := make(chan string, 1)
	release := make(chan struct{})
	e := newWSEnv(t, nil, HubConfig{}, testCommand(started, release))
	c := e.dial(t, "alice", nil)

	writeText(t, c, `{"type":"wait","ref":"w1"}`)
	writeText(t, c, `{"type":"echo","ref":"e1","n":1}`)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the command did not start")
	}
	e.hub.Publish(hangupEvent("call-1", "alice"))
	if got := readMsg(t, c); got["call_id"] != "call-1" {
		t.Fatalf("got %v while a command runs, want the event", got)
	}
	close(release)
	// Replies come in the order of the commands.
	for _, ref := range []string{"w1", "e1"} {
		if got := readMsg(t, c); got["type"] != "reply" || got["ref"] != ref {
			t.Errorf("got %v, want the reply to %s", got, ref)
		}
	}
}

func TestHubCommandContextEndsWithConnection(t *testing.T) {
	started := make(chan string, 1)
	e := newWSEnv(t, nil, HubConfig{}, testCommand(started, make(chan struct{})))
	c := e.dial(t, "bob", nil)
	writeText(t, c, `{"type":"wait","ref":"w"}`)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("the command did not start")
	}
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Errorf("client Close: %v", err)
	}
	// Serve waits for the command: it has seen its context end.
	e.waitConnections(t, 0)
	if got := e.dropped(t, "error"); got != 0 {
		t.Errorf("error drops = %v after a normal close, want 0", got)
	}
}

func TestHubSlowConsumerIsDropped(t *testing.T) {
	const queue = 4
	e := newWSEnv(t, nil, HubConfig{
		QueueSize:    queue,
		PingInterval: time.Hour, // the slow client does not answer pings either
	}, nil)

	// The slow client never reads; a small receive buffer (no autotuning)
	// fills up after a few KiB, then the server's send buffer (at most
	// tcp_wmem's 4 MiB on Linux) fills, then its queue.
	var slowTCP *net.TCPConn
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			slowTCP = conn.(*net.TCPConn)
			err = slowTCP.SetReadBuffer(4096)
		}
		return conn, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	slow := e.dial(t, "slow", &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	fast := e.dial(t, "fast", nil)
	e.waitConnections(t, 2)

	sdp := strings.Repeat("a", 1024)
	seq := 0
	publish := func() {
		e.hub.Publish(signaling.Event{
			Type:       signaling.EventCallInvite,
			Recipients: []string{"slow", "fast"},
			Payload: signaling.InvitePayload{
				Type:     signaling.EventCallInvite,
				CallID:   strconv.Itoa(seq),
				SDPOffer: sdp,
			},
		})
		seq++
	}
	received := 0
	readFast := func() {
		t.Helper()
		got := readMsg(t, fast)
		if got["call_id"] != strconv.Itoa(received) {
			t.Fatalf("fast client got call_id %v, want %d", got["call_id"], received)
		}
		received++
	}
	// The fast client keeps up: half a queue in flight at a time.
	const limit = 50_000 // 50 MiB: well past the kernel buffers
	for seq < limit && e.dropped(t, "slow") == 0 {
		for range queue / 2 {
			publish()
		}
		for received < seq {
			readFast()
		}
	}
	if e.dropped(t, "slow") != 1 {
		t.Fatalf("no slow drop after %d messages", seq)
	}
	t.Logf("slow client dropped after %d messages", seq)
	// The fast client is not affected.
	for range 10 {
		publish()
		readFast()
	}

	// The slow client got a prefix of the events, then 1013. (With a
	// 4 KiB window, reading the backlog would crawl at a window per delayed
	// ACK.)
	if err := slowTCP.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	code, n := readClose(t, slow, 30*time.Second)
	if code != websocket.StatusTryAgainLater {
		t.Errorf("slow client closed with %v, want %v", code, websocket.StatusTryAgainLater)
	}
	// It may have got none: with a queue of 4 the hub can drop it before
	// its writer has run at all.
	if n > seq {
		t.Errorf("slow client read %d events, more than the %d published", n, seq)
	}
	e.waitConnections(t, 1)
	if got := e.dropped(t, "error") + e.dropped(t, "ping_timeout"); got != 0 {
		t.Errorf("other drops = %v, want 0", got)
	}
}

func TestHubPingTimeout(t *testing.T) {
	const interval = 100 * time.Millisecond
	e := newWSEnv(t, nil, HubConfig{PingInterval: interval}, nil)
	deaf := e.dial(t, "alice", nil) // never reads, so never answers a ping
	live := e.dial(t, "bob", nil)
	live.CloseRead(context.Background()) // reads control frames: answers pings
	e.waitConnections(t, 2)

	waitFor(t, 50*interval, func() bool { return e.dropped(t, "ping_timeout") == 1 }, "a ping_timeout drop")
	e.waitConnections(t, 1)
	// bob has been through as many pings as alice, and answered them.
	if got := e.hub.Connections(); got != 1 {
		t.Errorf("Connections() = %d, want 1 (bob)", got)
	}
	if got := e.dropped(t, "ping_timeout"); got != 1 {
		t.Errorf("ping_timeout drops = %v, want 1", got)
	}
	// The server hung up without a close handshake.
	if code, _ := readClose(t, deaf, 5*time.Second); code != -1 {
		t.Errorf("deaf client closed with %v, want no close frame", code)
	}
}

func TestHubSubprotocol(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	tests := []struct {
		offer []string
		want  string
	}{
		{[]string{"bearer.abc"}, "bearer.abc"},
		{[]string{"other", "bearer.abc"}, "bearer.abc"},
		{nil, ""},
	}
	for _, tt := range tests {
		c := e.dial(t, "alice", &websocket.DialOptions{Subprotocols: tt.offer})
		if got := c.Subprotocol(); got != tt.want {
			t.Errorf("offered %q: Subprotocol() = %q, want %q", tt.offer, got, tt.want)
		}
	}
}

func TestHubOrigin(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{
		HTTPHeader: http.Header{wsTestUser: {"alice"}, "Origin": {"https://evil.example"}},
	})
	if err == nil {
		t.Fatal("a cross-origin socket was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin dial: %v, want 403", err)
	}
	if resp != nil {
		resp.Body.Close()
	}

	e2 := newWSEnv(t, nil, HubConfig{OriginPatterns: []string{"app.example"}}, nil)
	e2.dial(t, "alice", &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"https://app.example"}}})
}

func TestHubBinaryFrameCloses(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	c := e.dial(t, "alice", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, []byte(`{"type":"echo"}`)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if code, n := readClose(t, c, 5*time.Second); code != websocket.StatusUnsupportedData || n != 0 {
		t.Errorf("got %d messages and close %v, want none and %v", n, code, websocket.StatusUnsupportedData)
	}
	e.waitConnections(t, 0)
	if got := e.dropped(t, "error"); got != 1 {
		t.Errorf("error drops = %v, want 1", got)
	}
}

func TestHubMessageTooBig(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{MaxMessage: 1024}, nil)
	c := e.dial(t, "alice", nil)
	writeText(t, c, `{"type":"echo","pad":"`+strings.Repeat("x", 1024)+`"}`)
	if code, _ := readClose(t, c, 5*time.Second); code != websocket.StatusMessageTooBig {
		t.Errorf("closed with %v, want %v", code, websocket.StatusMessageTooBig)
	}
	e.waitConnections(t, 0)
}

func TestHubClose(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	var clients []*websocket.Conn
	for _, u := range []string{"alice", "alice", "bob"} {
		clients = append(clients, e.dial(t, u, nil))
	}
	e.waitConnections(t, 3)

	closed := make(chan error, 1)
	go func() { closed <- e.hub.Close() }()
	for i, c := range clients {
		if code, _ := readClose(t, c, 5*time.Second); code != websocket.StatusGoingAway {
			t.Errorf("client %d closed with %v, want %v", i, code, websocket.StatusGoingAway)
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if got := e.hub.Connections(); got != 0 {
		t.Errorf("Connections() = %d after Close, want 0", got)
	}
	e.checkConnectionsGauge(t, 0)
	if err := e.hub.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	// Later sockets are refused with the API's error body.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL, nil)
	req.Header.Set(wsTestUser, "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET after Close: %v", err)
	}
	defer resp.Body.Close()
	var body struct{ Error Error }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("decoding refusal: %v", err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || body.Error.Code != "unavailable" {
		t.Errorf("after Close: %d %+v, want 503 unavailable", resp.StatusCode, body.Error)
	}
}

func TestHubServeContextEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newWSEnv(t, ctx, HubConfig{}, nil)
	c := e.dial(t, "alice", nil)
	e.waitConnections(t, 1)
	cancel()
	if code, _ := readClose(t, c, 5*time.Second); code != websocket.StatusGoingAway {
		t.Errorf("closed with %v, want %v", code, websocket.StatusGoingAway)
	}
	e.waitConnections(t, 0)
}

func TestHubMetricsRegistered(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	e.dial(t, "alice", nil)
	e.waitConnections(t, 1)
	e.checkConnectionsGauge(t, 1)
	// Every reason is exported from the start.
	if n, err := testutil.GatherAndCount(e.reg, "icebox_ws_dropped_connections_total"); err != nil || n != 4 {
		t.Errorf("icebox_ws_dropped_connections_total has %d series (%v), want 4", n, err)
	}
	for _, r := range []string{"slow", "budget", "ping_timeout", "error"} {
		if got := e.dropped(t, r); got != 0 {
			t.Errorf("dropped{reason=%q} = %v, want 0", r, got)
		}
	}
	// Zero values take the defaults.
	h := NewHub(HubConfig{})
	want := HubConfig{MaxPerUser: 16, UserBytesPerSecond: 512 << 10, UserBurstBytes: 4 << 20,
		QueueSize: 256, PingInterval: 20 * time.Second, WriteTimeout: 10 * time.Second, MaxMessage: 1 << 20}
	got := h.cfg
	got.Logger, got.Registerer = zerolog.Logger{}, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults: got %+v, want %+v", got, want)
	}
}

func TestWSParseCommand(t *testing.T) {
	tests := []struct {
		in            string
		typ, ref, err string
	}{
		{in: `{"type":"answer","ref":"1","call_id":"c"}`, typ: "answer", ref: "1"},
		{in: ` {"type":"hangup"} `, typ: "hangup"},
		{in: `{"type":"a","ref":null}`, typ: "a"},
		{in: `{"type":null}`, err: `"type" must be a non-empty string`},
		{in: `{"type":["a"],"ref":"2"}`, ref: "2", err: `"type" must be a non-empty string`},
		{in: `{"type":"a","ref":{}}`, err: `"ref" must be a string`},
		{in: `{"type":"a"`, err: "a command is a JSON object"},
		{in: `{"type":"a"} {}`, err: "a command is a JSON object"},
		{in: `{}`, err: `"type" must be a non-empty string`},
		{in: ``, err: "a command is a JSON object"},
		{in: `12`, err: "a command is a JSON object"},
	}
	for _, tt := range tests {
		got := parseCommand([]byte(tt.in))
		gotErr := ""
		if got.err != nil {
			gotErr = got.err.Message
			if got.err.Code != "invalid_request" {
				t.Errorf("parse %s: code %q, want invalid_request", tt.in, got.err.Code)
			}
		}
		if got.typ != tt.typ || got.ref != tt.ref || gotErr != tt.err {
			t.Errorf("parse %s: got type %q ref %q err %q, want %q %q %q", tt.in, got.typ, got.ref, gotErr, tt.typ, tt.ref, tt.err)
		}
		if got.err == nil && !bytes.Equal(got.msg, []byte(tt.in)) {
			t.Errorf("parse %s: msg %s, want the message as is", tt.in, got.msg)
		}
	}
}

func FuzzWSParseCommand(f *testing.F) {
	for _, s := range []string{`{"type":"answer","ref":"1"}`, `{"type":5}`, `null`, `[]`, `{"ref":"x"}`, "{\"type\":\"\xff\"}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pc := parseCommand(data)
		if pc.err == nil {
			if pc.typ == "" || !json.Valid(data) || !bytes.Equal(pc.msg, data) {
				t.Errorf("accepted %q as type %q msg %q", data, pc.typ, pc.msg)
			}
			return
		}
		// Whatever the input, the error reply must encode.
		if _, err := json.Marshal(wsError{Type: "error", Ref: pc.ref, Error: pc.err}); err != nil {
			t.Errorf("error reply to %q: %v", data, err)
		}
	})
}

// checkGoroutineLeaks fails the test if goroutines started during it are
// still running when it ends (goleak retries for a while first). Register
// it before any other cleanup, so that it runs last. The tests of this
// package do not run in parallel, so the goroutines that started during
// the test are the test's.
func checkGoroutineLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

func TestHubCapsConnectionsPerUser(t *testing.T) {
	hub := NewHub(HubConfig{Logger: zerolog.Nop(), Registerer: prometheus.NewRegistry(), MaxPerUser: 2})
	t.Cleanup(func() { _ = hub.Close() })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = hub.Serve(r.Context(), w, r, r.Header.Get("X-User"), "", func(context.Context, string, json.RawMessage) (any, error) { return nil, nil })
	}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dial := func(user string) (*websocket.Conn, *http.Response, error) {
		return websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{HTTPHeader: http.Header{"X-User": {user}}})
	}
	for range 2 {
		c, _, err := dial("alice")
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
	}
	deadline := time.Now().Add(5 * time.Second)
	for hub.Connections() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if _, resp, err := dial("alice"); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third connection of alice: %v, %+v; want 429", err, resp)
	}
	c, _, err := dial("bob")
	if err != nil {
		t.Fatalf("bob is not limited by alice: %v", err)
	}
	c.CloseNow()
}

// TestHubBudgetSurvivesReconnect: a user whose output budget is spent gets
// a fresh connection, not a fresh budget; the connection that finds it
// spent is closed with 1013 "output budget exceeded".
func TestHubBudgetSurvivesReconnect(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{UserBytesPerSecond: 1, UserBurstBytes: 1000}, nil)
	ev := hangupEvent("call-1", "alice")
	p := ev.Payload.(signaling.EndPayload)
	p.Reason = strings.Repeat("r", 600) // one event fits the budget, two do not
	ev.Payload = p

	c := e.dial(t, "alice", nil)
	e.waitConnections(t, 1)
	e.hub.Publish(ev)
	if got := readMsg(t, c); got["reason"] != p.Reason {
		t.Fatalf("first event: %v", got)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	e.waitConnections(t, 0)

	c = e.dial(t, "alice", nil)
	e.waitConnections(t, 1)
	e.hub.Publish(ev)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusTryAgainLater || ce.Reason != "output budget exceeded" {
		t.Fatalf("second event after reconnecting: %v; want 1013 \"output budget exceeded\"", err)
	}
	if got := e.dropped(t, "budget"); got != 1 {
		t.Errorf("dropped{reason=budget} = %v, want 1", got)
	}
}
