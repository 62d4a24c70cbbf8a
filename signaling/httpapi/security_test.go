package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/icebox-voip/icebox/signaling"
)

// TestSecurityMetricLabels: no request, authenticated or not, can add a
// series to the HTTP metrics. Made-up methods and paths share fixed label
// values ("other", "unmatched"), so their number does not matter.
func TestSecurityMetricLabels(t *testing.T) {
	e := newAPIEnv(t)
	names := []string{"icebox_http_requests_total", "icebox_http_request_duration_seconds"}
	count := func() int {
		t.Helper()
		n, err := testutil.GatherAndCount(e.reg, names...)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// One request of each shape first, so that every fixed label value the
	// attack can reach exists before the count.
	send := func(i int) {
		t.Helper()
		for _, r := range []struct{ method, path, token string }{
			{fmt.Sprintf("X%dMETHOD", i), "/healthz", ""},
			{fmt.Sprintf("X%dMETHOD", i), fmt.Sprintf("/no/such/path/%d", i), ""},
			{"GET", fmt.Sprintf("/made-up-%d", i), ""},
			{"GET", fmt.Sprintf("/made-up-%d", i), userToken("alice")},
			{fmt.Sprintf("Y%d", i), fmt.Sprintf("/calls/%d/answer", i), userToken("alice")},
			{"GET", fmt.Sprintf("/ui/x%d", i), ""},
		} {
			if code, body := e.do(t, r.token, r.method, r.path, nil); code < 400 {
				t.Fatalf("%s %s: %d %s, want an error", r.method, r.path, code, body)
			}
		}
	}
	send(0)
	before := count()
	const rounds = 200
	for i := 1; i <= rounds; i++ {
		send(i)
	}
	after := count()
	t.Logf("HTTP metric series: %d before, %d after %d rounds of made-up methods and paths", before, after, rounds)
	if after != before {
		t.Errorf("series grew from %d to %d with made-up methods and paths", before, after)
	}
	text, err := testutil.GatherAndFormat(e.reg, expfmt.TypeTextPlain, names...)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other"} {
		known[m] = true
	}
	found := methodLabelRE.FindAllStringSubmatch(string(text), -1)
	if len(found) == 0 {
		t.Fatalf("no series with a method label in:\n%s", text)
	}
	var bad []string
	for _, m := range found {
		if !known[m[1]] {
			bad = append(bad, m[1])
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d series with a method label outside the fixed set, e.g. %q", len(bad), bad[:min(len(bad), 3)])
	}
}

// methodLabelRE finds the values of method labels in the text exposition.
var methodLabelRE = regexp.MustCompile(`[{,]method="([^"]*)"`)

// TestSecurityListCallsBounded: GET /calls lists calls without their SDPs,
// at most listLimitMax of them, so one request cannot make the server
// encode (and the client download) every SDP of a conversation. The SDPs
// stay readable one call at a time, by participants.
func TestSecurityListCallsBounded(t *testing.T) {
	e := newAPIEnv(t)
	const calls = 210                                           // more than the largest limit
	sdp := "v=0\r\n" + strings.Repeat("a=x:<&>\r\n", 60<<10/10) // near the 64 KiB maximum, and escaped ×6 by HTML-safe JSON
	base := time.Now().Add(-time.Hour).UTC()
	for i := range calls {
		c := signaling.Call{
			ID: fmt.Sprintf("big%03d", i), ConversationID: "c1", Initiator: "alice", PartyID: "p1",
			Status: signaling.StatusRinging, SDPOffer: sdp, SDPAnswer: sdp, LifetimeMS: 60000,
			Version: signaling.VoIPVersion, CreatedAt: base.Add(time.Duration(i) * time.Second),
		}
		if err := e.store.CreateCall(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	posted := calls * 2 * len(sdp)
	for _, tc := range []struct {
		query     string
		wantCalls int
		wantMore  bool
	}{
		{"", 50, true},
		{"&limit=10", 10, true},
		{"&limit=200", 200, true},
		{"&active=true&limit=200", 200, true},
	} {
		body := e.mustDo(t, userToken("bob"), "GET", "/calls?conversation_id=c1"+tc.query, "", http.StatusOK)
		var got struct {
			Calls []map[string]json.RawMessage `json:"calls"`
			More  bool                         `json:"more"`
		}
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("%s: %v", tc.query, err)
		}
		t.Logf("GET /calls%s: %d calls in %d bytes (SDPs stored: %d bytes)", tc.query, len(got.Calls), len(body), posted)
		if len(got.Calls) != tc.wantCalls || got.More != tc.wantMore {
			t.Errorf("%s: %d calls, more=%v; want %d, more=%v", tc.query, len(got.Calls), got.More, tc.wantCalls, tc.wantMore)
		}
		if max := tc.wantCalls * 1024; len(body) > max {
			t.Errorf("%s: response is %d bytes; want at most %d (no SDPs)", tc.query, len(body), max)
		}
		for _, c := range got.Calls {
			for k := range c {
				if strings.Contains(k, "sdp") {
					t.Fatalf("%s: list item has field %q", tc.query, k)
				}
			}
		}
		if len(got.Calls) > 0 {
			if id := string(got.Calls[0]["id"]); id != fmt.Sprintf("%q", fmt.Sprintf("big%03d", calls-1)) {
				t.Errorf("%s: first call %s, want the newest", tc.query, id)
			}
		}
	}
	for _, q := range []string{"&limit=0", "&limit=201", "&limit=1000", "&limit=x"} {
		body := e.mustDo(t, userToken("bob"), "GET", "/calls?conversation_id=c1"+q, "", http.StatusBadRequest)
		if want := "limit must be 1-200"; !strings.Contains(string(body), want) {
			t.Errorf("%s: %s; want %q", q, body, want)
		}
	}
	// One call, to a participant, still has its SDPs.
	body := e.mustDo(t, userToken("bob"), "GET", "/calls/big007", "", http.StatusOK)
	var one callResponse
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatal(err)
	}
	if one.SDPOffer != sdp || one.SDPAnswer != sdp {
		t.Errorf("GET /calls/{id}: SDPs of %d and %d bytes, want %d", len(one.SDPOffer), len(one.SDPAnswer), len(sdp))
	}
}

// dialWS opens /ws as the holder of token; closed when the test ends.
func (e *apiEnv) dialWS(t *testing.T, token string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		return nil, resp, err
	}
	c.SetReadLimit(4 << 20)
	t.Cleanup(func() { _ = c.CloseNow() })
	return c, resp, nil
}

// wsTally is what one client connection received until a CallHangup came
// or the server closed it.
type wsTally struct {
	bytes, candidateEvents, largestCandidates int
	closed                                    websocket.StatusCode // -1: not closed by the server
}

// tally reads c until it gets a CallHangup or is closed.
func tally(ctx context.Context, c *websocket.Conn) (wsTally, error) {
	tl := wsTally{closed: -1}
	for {
		_, data, err := c.Read(ctx)
		if err != nil {
			if tl.closed = websocket.CloseStatus(err); tl.closed == -1 {
				return tl, err
			}
			return tl, nil
		}
		tl.bytes += len(data)
		var ev struct{ Type string }
		if err := json.Unmarshal(data, &ev); err != nil {
			return tl, err
		}
		switch ev.Type {
		case signaling.EventCallCandidates:
			tl.candidateEvents++
			tl.largestCandidates = max(tl.largestCandidates, len(data))
		case signaling.EventCallHangup:
			return tl, nil
		}
	}
}

// TestSecurityCandidateFanout: candidates posted by one participant reach
// another participant's 16 connections once each, encoded without HTML
// escaping, and no more than that user's output budget allows in all.
// Before the fix: 1 048 170 bytes posted became 92 802 224 bytes sent to
// bob (88.5×; each event 5.5× its body, to 16 connections).
func TestSecurityCandidateFanout(t *testing.T) {
	hubCfg := HubConfig{UserBytesPerSecond: 64 << 10, UserBurstBytes: 1 << 20}
	start := time.Now() // bob's budget starts full when he first connects
	e := newAPIEnvHub(t, hubCfg, nil)
	const conns = 16
	var bobs []*websocket.Conn
	for range conns {
		c, _, err := e.dialWS(t, userToken("bob"))
		if err != nil {
			t.Fatal(err)
		}
		bobs = append(bobs, c)
	}
	waitFor(t, 5*time.Second, func() bool { return e.hub.Connections() == conns }, "bob's connections registered")

	type result struct {
		tl  wsTally
		err error
	}
	results := make(chan result, conns)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for _, c := range bobs {
		go func() {
			tl, err := tally(ctx, c)
			results <- result{tl, err}
		}()
	}

	call := e.initiate(t)
	// 100 candidates of 1000 bytes, mostly '<' (6 bytes as \u003c when
	// HTML-escaped), per message: what the attack posted.
	cand := "candidate:1 1 udp 2122260223 192.0.2.1 9 typ host " + strings.Repeat("<", 950)
	var cs []map[string]any
	for range 100 {
		cs = append(cs, map[string]any{"candidate": cand, "sdpMid": "0", "sdpMLineIndex": 0})
	}
	var buf strings.Builder
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // '<' as one byte, as a client may send it
	if err := enc.Encode(map[string]any{"candidates": cs}); err != nil {
		t.Fatal(err)
	}
	body := buf.String()
	const messages = 10
	for range messages {
		e.mustDo(t, userToken("alice"), "POST", "/calls/"+call.ID+"/candidates", body, http.StatusNoContent)
	}
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+call.ID+"/hangup", "", http.StatusOK)

	var total, largest, closed int
	for range conns {
		r := <-results
		if r.err != nil {
			t.Fatalf("reading events: %v", r.err)
		}
		total += r.tl.bytes
		largest = max(largest, r.tl.largestCandidates)
		if r.tl.candidateEvents > messages {
			t.Errorf("a connection got %d candidate events for %d messages", r.tl.candidateEvents, messages)
		}
		if r.tl.closed != -1 {
			closed++
		}
	}
	elapsed := time.Since(start)
	posted := messages * len(body)
	t.Logf("posted %d bytes of candidates; bob's %d connections received %d bytes: amplification %.2f×; largest candidates event %d bytes for a %d-byte body (%.2f×); %d connections closed by the server",
		posted, conns, total, float64(total)/float64(posted), largest, len(body), float64(largest)/float64(len(body)), closed)
	if largest > len(body)+1024 {
		t.Errorf("a candidates event of %d bytes for a %d-byte body: re-encoded with escaping", largest, len(body))
	}
	if budget := hubCfg.UserBurstBytes + int(float64(hubCfg.UserBytesPerSecond)*elapsed.Seconds()); total > budget {
		t.Errorf("bob received %d bytes in %v; his budget allows %d", total, elapsed, budget)
	}
	if closed == 0 {
		t.Errorf("no connection closed for its budget")
	}
	if got := testutil.ToFloat64(e.hub.dropped.WithLabelValues(dropBudget)); got != float64(closed) {
		t.Errorf("dropped{reason=budget} = %v, want %d", got, closed)
	}
}

// TestSecurityWSConnectionCapAtomic: 40 upgrades of one user at once get
// exactly MaxPerUser connections; the rest are refused with 429. A few
// rounds, as a race shows in some rounds only (before the fix, about two
// rounds in three accepted 17).
func TestSecurityWSConnectionCapAtomic(t *testing.T) {
	e := newWSEnv(t, nil, HubConfig{}, nil)
	const rounds, attempts, maxPerUser = 5, 40, 16
	type result struct {
		c      *websocket.Conn
		status int
		err    error
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for round := range rounds {
		results := make(chan result, attempts)
		startGate := make(chan struct{})
		for range attempts {
			go func() {
				<-startGate
				c, resp, err := websocket.Dial(ctx, e.url, &websocket.DialOptions{HTTPHeader: http.Header{wsTestUser: {"alice"}}})
				r := result{c: c, err: err}
				if resp != nil {
					r.status = resp.StatusCode
				}
				results <- r
			}()
		}
		close(startGate)
		var conns []*websocket.Conn
		refused := 0
		for range attempts {
			r := <-results
			switch {
			case r.err == nil:
				conns = append(conns, r.c)
			case r.status == http.StatusTooManyRequests:
				refused++
			default:
				t.Errorf("dial: %v (status %d)", r.err, r.status)
			}
		}
		t.Logf("round %d: %d simultaneous upgrades of one user: %d accepted, %d refused with 429", round, attempts, len(conns), refused)
		if len(conns) != maxPerUser || refused != attempts-maxPerUser {
			t.Errorf("round %d: accepted %d, refused %d; want %d and %d", round, len(conns), refused, maxPerUser, attempts-maxPerUser)
		}
		e.waitConnections(t, len(conns))
		for _, c := range conns {
			_ = c.CloseNow()
		}
		e.waitConnections(t, 0)
	}
}
