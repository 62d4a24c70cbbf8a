package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/web"
)

// get sends GET path with token (if any) and without following redirects.
func (e *apiEnv) get(t *testing.T, token, path string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// TestUIMounted: the pages load without a token (they are static and ask
// for one), with the web package's headers; the API still needs a token.
func TestUIMounted(t *testing.T) {
	ui, err := web.New()
	if err != nil {
		t.Fatal(err)
	}
	e := newAPIEnvWith(t, func(c *Config, _ *store.Store) { c.UI = ui })
	for path, ctype := range map[string]string{
		"/ui/":          "text/html; charset=utf-8",
		"/ui/ice-test":  "text/html; charset=utf-8",
		"/ui/call":      "text/html; charset=utf-8",
		"/ui/status":    "text/html; charset=utf-8",
		"/ui/call.js":   "text/javascript; charset=utf-8",
		"/ui/style.css": "text/css; charset=utf-8",
	} {
		resp := e.get(t, "", path)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ctype {
			t.Errorf("GET %s without a token: %d %q, want 200 %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), ctype)
		}
		if resp.Header.Get("Content-Security-Policy") != web.ContentSecurityPolicy || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: CSP %q, nosniff %q", path, resp.Header.Get("Content-Security-Policy"), resp.Header.Get("X-Content-Type-Options"))
		}
	}
	if resp := e.get(t, "", "/ui"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "ui/" {
		t.Errorf("GET /ui: %d Location %q, want 301 ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := e.get(t, "", "/ui/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /ui/nope: %d, want 404", resp.StatusCode)
	}
	if resp := e.get(t, "", "/calls/ice_servers"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /calls/ice_servers without a token: %d, want 401", resp.StatusCode)
	}
}

// TestUIOff: without a UI handler (http.ui: false) /ui/ is 404, with or
// without a token, not the 401 of the authenticated catch-all.
func TestUIOff(t *testing.T) {
	e := newAPIEnv(t)
	for _, path := range []string{"/ui", "/ui/", "/ui/call", "/ui/common.js"} {
		for _, token := range []string{"", userToken("alice")} {
			code, body := e.do(t, token, http.MethodGet, path, nil)
			if code != http.StatusNotFound || !strings.Contains(string(body), "http.ui") {
				t.Errorf("GET %s (token %v): %d %s, want 404 naming http.ui", path, token != "", code, body)
			}
		}
	}
}

// TestAdminActiveCalls: GET /admin/calls counts the live calls by state
// and lists them without their SDP; admins only.
func TestAdminActiveCalls(t *testing.T) {
	e := newAPIEnvWith(t, func(c *Config, st *store.Store) { c.ActiveCalls = st.ActiveCalls })
	list := func() activeCallsResponse {
		t.Helper()
		var r activeCallsResponse
		body := e.mustDo(t, adminToken, "GET", "/admin/calls", "", http.StatusOK)
		if strings.Contains(string(body), "sdp") {
			t.Errorf("GET /admin/calls shows an SDP: %s", body)
		}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	counts := func(r activeCallsResponse) [2]int {
		return [2]int{r.ByStatus[signaling.StatusRinging], r.ByStatus[signaling.StatusAnswered]}
	}
	if r := list(); counts(r) != [2]int{0, 0} || len(r.Calls) != 0 {
		t.Errorf("before any call: %+v, want 0 ringing, 0 answered, no calls", r)
	}
	ringing := e.initiate(t)
	answered := e.initiate(t)
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+answered.ID+"/answer", `{"sdp_answer":"v=0 answer"}`, http.StatusOK)
	r := list()
	if counts(r) != [2]int{1, 1} || len(r.Calls) != 2 {
		t.Fatalf("one ringing, one answered: %+v", r)
	}
	for _, c := range r.Calls {
		want := map[string]signaling.Status{ringing.ID: signaling.StatusRinging, answered.ID: signaling.StatusAnswered}[c.ID]
		if c.Status != want || c.ConversationID != "c1" || c.Initiator != "alice" || c.CreatedAt.IsZero() {
			t.Errorf("call %+v, want status %q in c1 by alice", c, want)
		}
		if c.ID == answered.ID && (c.Answerer != "bob" || c.AnsweredAt == nil) {
			t.Errorf("answered call %+v, want answerer bob and answered_at", c)
		}
	}
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+answered.ID+"/hangup", "", http.StatusOK)
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+ringing.ID+"/reject", "", http.StatusOK)
	if r := list(); counts(r) != [2]int{0, 0} || len(r.Calls) != 0 {
		t.Errorf("after hangup and reject: %+v, want nothing live", r)
	}

	e.mustDo(t, userToken("alice"), "GET", "/admin/calls", "", http.StatusForbidden)
	e.mustDo(t, "", "GET", "/admin/calls", "", http.StatusUnauthorized)

	// Without a source (a relay-only deployment's wiring): empty, not an error.
	bare := newAPIEnv(t)
	body := bare.mustDo(t, adminToken, "GET", "/admin/calls", "", http.StatusOK)
	if string(body) != `{"by_status":{"answered":0,"ringing":0},"calls":[]}`+"\n" {
		t.Errorf("no source: %s", body)
	}
}
