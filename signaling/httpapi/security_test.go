package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

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
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range []string{"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other"} {
		known[m] = true
	}
	var bad []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && !known[l.GetValue()] {
					bad = append(bad, l.GetValue())
				}
			}
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d series with a method label outside the fixed set, e.g. %q", len(bad), bad[:min(len(bad), 3)])
	}
}

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
