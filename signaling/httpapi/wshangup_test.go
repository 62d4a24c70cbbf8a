package httpapi

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/internal/syncbuf"
)

// disconnectReasons returns the reason of every "websocket disconnected" line.
func disconnectReasons(t *testing.T, logs *syncbuf.Buffer) []string {
	t.Helper()
	var reasons []string
	for line := range strings.Lines(logs.String()) {
		var rec struct{ Message, Reason string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Message == "websocket disconnected" {
			reasons = append(reasons, rec.Reason)
		}
	}
	return reasons
}

// A client whose connection drops without a close frame is a client gone
// (its own reason, the error at debug), never a server going away.
func TestWSClientHangUpIsClientGone(t *testing.T) {
	var logs syncbuf.Buffer
	e := newAPIEnvHub(t, HubConfig{Logger: zerolog.New(&logs)}, nil)
	const hangUps = 40
	for i := range hangUps {
		var raw net.Conn
		client := &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				raw = c
				return c, err
			},
		}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/ws", &websocket.DialOptions{
			HTTPClient: client,
			HTTPHeader: http.Header{"Authorization": {"Bearer " + userToken("alice")}},
		})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.Close() // no close frame: the client is killed
		_ = ws          // left unclosed on purpose
		deadline := time.Now().Add(5 * time.Second)
		for len(disconnectReasons(t, &logs)) < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("hang-up %d: no disconnect logged", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	for i, r := range disconnectReasons(t, &logs) {
		if r != causeClientGone.name {
			t.Errorf("hang-up %d logged as %q, want %q", i, r, causeClientGone.name)
		}
	}
}

// net/http ends a request's context when its connection's background read
// sees the client go, which can happen between the upgrade's 101 and the
// hijack; the hub takes its Serve context's end for a server shutdown
// (1001, "going_away" at info). So the API server must not hand the hub a
// context that net/http ends. The race itself cannot be steered from a
// test; ending every request context (through BaseContext) while the
// session lives shows which context the hub was given.
func TestWSSessionOutlivesRequestContext(t *testing.T) {
	var logs syncbuf.Buffer
	e := newAPIEnvHub(t, HubConfig{Logger: zerolog.New(&logs)}, nil)
	base, endRequests := context.WithCancel(context.Background())
	defer endRequests()
	srv := httptest.NewUnstartedServer(e.api.Handler())
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Start()
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + userToken("alice")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	endRequests()
	// The session goes on: a command sent after the request context ended
	// is answered (an unknown type gets its error reply).
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"no_such_command","ref":"r1"}`)); err != nil {
		t.Fatal(err)
	}
	_, msg, err := ws.Read(ctx)
	if err != nil {
		t.Fatalf("reading the reply after the request context ended: %v (logged: %q)", err, disconnectReasons(t, &logs))
	}
	if !strings.Contains(string(msg), `"ref":"r1"`) {
		t.Errorf("reply %s, want one for ref r1", msg)
	}
	if got := disconnectReasons(t, &logs); len(got) != 0 {
		t.Errorf("disconnected as %q while the client was still there", got)
	}
}
