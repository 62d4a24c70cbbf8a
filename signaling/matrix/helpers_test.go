package matrix_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/internal/syncbuf"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
)

var _ matrix.Store = (*store.Store)(nil)

// openStore opens a real store in a temporary directory.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("store close: %v", err)
		}
	})
	return st
}

// recorder is a signaling.Publisher that keeps what it is given.
type recorder struct {
	mu     sync.Mutex
	events []signaling.Event
}

func (r *recorder) Publish(ev signaling.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) all() []signaling.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]signaling.Event(nil), r.events...)
}

// logBuffer collects log lines from several goroutines.
type logBuffer = syncbuf.Buffer

// testBridge is a Bridge with what a test looks at.
type testBridge struct {
	*matrix.Bridge
	reg  *prometheus.Registry
	logs *logBuffer
	pub  *recorder
	st   *store.Store
}

// newBridge makes a Bridge over st with a fresh registry, a debug-level
// logger into a buffer, and a recording publisher.
func newBridge(t *testing.T, cfg matrix.Config, timing matrix.Timing) *testBridge {
	t.Helper()
	tb := &testBridge{reg: prometheus.NewRegistry(), logs: &logBuffer{}, pub: &recorder{}}
	cfg.Registerer = tb.reg
	cfg.Publisher = tb.pub
	cfg.Logger = zerolog.New(tb.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	if st, ok := cfg.Store.(*store.Store); ok {
		tb.st = st
	}
	b, err := matrix.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	matrix.SetTiming(b, timing)
	tb.Bridge = b
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bridge log:\n%s", tb.logs.String())
		}
	})
	return tb
}

// newTestBridgeNoServer is a bridge pointed at a closed port.
func newTestBridgeNoServer(t *testing.T) (*store.Store, *testBridge) {
	t.Helper()
	st := openStore(t)
	return st, newBridge(t, matrix.Config{
		HomeserverURL: closedURL(t), UserID: "@icebox:localhost", AccessToken: noServerToken, Store: st,
	}, matrix.Timing{})
}

// closedURL is an http URL on a loopback port nobody listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

// run starts b.Run; the returned stop cancels it, waits for it to return
// nil, and checks the bridge left no goroutine behind (runScoped).
func (tb *testBridge) run(t *testing.T) (stop func()) {
	t.Helper()
	return runScoped(t, tb)
}

// runScoped starts tb.Run under a pprof label of its own, which every
// goroutine Run starts inherits. The returned stop (also a cleanup)
// cancels it, waits for it to return nil, and checks that no goroutine of
// that run in package matrix is left — unlike testBridge.run, whatever
// other bridges of parallel tests are doing.
func runScoped(t *testing.T, tb *testBridge) (stop func()) {
	t.Helper()
	label := strconv.FormatInt(runLabel.Add(1), 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go pprof.Do(ctx, pprof.Labels(runLabelKey, label), func(ctx context.Context) { done <- tb.Run(ctx) })
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil after cancel", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return within 10 s of cancel")
			}
			var left string
			waitFor(t, 5*time.Second, "the bridge's goroutines to end", func() bool {
				left = labelledGoroutine(label, "icebox/signaling/matrix.")
				return left == ""
			}, func() string { return left })
		})
	}
	t.Cleanup(stop)
	return stop
}

const runLabelKey = "icebox_test_run"

// runLabel tells one runScoped run's goroutines from all others.
var runLabel atomic.Int64

// labelledGoroutine returns the first goroutine stack (pprof's debug=1
// form) carrying the run's label and a frame of pkg; "" if none.
func labelledGoroutine(label, pkg string) string {
	var buf bytes.Buffer
	if err := pprof.Lookup("goroutine").WriteTo(&buf, 1); err != nil {
		return err.Error()
	}
	for _, g := range strings.Split(buf.String(), "\n\n") {
		if strings.Contains(g, `"`+runLabelKey+`":"`+label+`"`) && strings.Contains(g, pkg) {
			return g
		}
	}
	return ""
}

// waitFor polls cond every 10 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			for _, f := range detail {
				msg += "\n" + f()
			}
			t.Fatalf("timed out after %v waiting for %s%s", d, what, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric returns the value of b's counter or gauge name; labels are name,
// value pairs.
func metric(t *testing.T, b *testBridge, name string, labels ...string) float64 {
	t.Helper()
	c := matrix.Collector(b.Bridge, name, labels...)
	if c == nil {
		t.Fatalf("the bridge has no metric %s%v", name, labels)
	}
	return testutil.ToFloat64(c)
}

// depth reads the outbox depth from the store.
func depth(t *testing.T, st *store.Store) int {
	t.Helper()
	n, err := st.OutboxDepth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// --- a Matrix user's view, with plain HTTP ---

var httpClient = &http.Client{Timeout: 30 * time.Second}

// api sends a client-server API request and decodes a 200 response into out.
func api(t *testing.T, base, method, path, token string, body, out any) {
	t.Helper()
	if err := apiErr(base, method, path, token, body, out); err != nil {
		t.Fatal(err)
	}
}

func apiErr(base, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return errors.New(method + " " + strings.SplitN(path, "?", 2)[0] + ": " + resp.Status + ": " + string(b))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []roomEvent `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
		Invite map[string]json.RawMessage `json:"invite"`
	} `json:"rooms"`
}

type roomEvent struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

// matrixUser is a Matrix account seen from outside icebox.
type matrixUser struct {
	base, id, token string
}

func (u matrixUser) sync(t *testing.T, since string, timeout time.Duration) syncResponse {
	t.Helper()
	q := url.Values{"timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if since != "" {
		q.Set("since", since)
	}
	var resp syncResponse
	api(t, u.base, http.MethodGet, "/_matrix/client/v3/sync?"+q.Encode(), u.token, nil, &resp)
	return resp
}

func (u matrixUser) join(t *testing.T, room string) {
	t.Helper()
	api(t, u.base, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/join", u.token, map[string]any{}, nil)
}

// callEvents long-polls /sync from since, collecting room's m.call.*
// events, until done(events) holds; at most d.
func (u matrixUser) callEvents(t *testing.T, since, room string, d time.Duration, done func([]roomEvent) bool) ([]roomEvent, string) {
	t.Helper()
	var evs []roomEvent
	deadline := time.Now().Add(d)
	for {
		resp := u.sync(t, since, time.Second)
		since = resp.NextBatch
		for _, ev := range resp.Rooms.Join[room].Timeline.Events {
			if strings.HasPrefix(ev.Type, "m.call.") {
				evs = append(evs, ev)
			}
		}
		if done(evs) {
			return evs, since
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, %s saw %d call events in %s: %s", d, u.id, len(evs), room, typesOf(evs))
		}
	}
}

// hasType is a done func for callEvents: an event of type typ arrived.
func hasType(typ string) func([]roomEvent) bool {
	return func(evs []roomEvent) bool {
		for _, ev := range evs {
			if ev.Type == typ {
				return true
			}
		}
		return false
	}
}

func typesOf(evs []roomEvent) string {
	var s []string
	for _, ev := range evs {
		s = append(s, ev.Type)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// noServerToken is the access token of newTestBridgeNoServer's bridge.
const noServerToken = "syt_aWNlYm94_secret_token_value"
