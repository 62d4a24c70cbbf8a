package main

// Tests of the embedded web UI (package web) in a real icebox: the pages
// need no token and can be turned off (http.ui), and, in headless Chromium
// driven by playwright-core (web/e2e/ui.js) inside a network namespace with
// one veth interface (WebRTC gathers nothing on a loopback-only host; see
// ../shared/reference/turn.md "Test beds"), the ICE test page passes
// through icebox's relay, two browser contexts call each other through the
// call demo, and the status page shows the call's allocation.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// uiScenarioTimeout bounds one node run (it also has its own deadline).
const uiScenarioTimeout = 100 * time.Second

// TestWebUIServed: the pages load without a token, with the security
// headers, and `http.ui: false` turns them off (404) while the API stays.
func TestWebUIServed(t *testing.T) {
	t.Parallel()
	tok := newAPITokens()
	on := startCalls(t, callsConfig(t.TempDir(), ""), tok)
	for _, p := range []string{"/ui/", "/ui/ice-test", "/ui/call", "/ui/status", "/ui/common.js", "/ui/style.css"} {
		resp, err := httpClient.Get(on.httpURL(p))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %d, want 200", p, resp.StatusCode)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: CSP %q, nosniff %q", p, csp, resp.Header.Get("X-Content-Type-Options"))
		}
	}
	// /ui redirects to /ui/ (relative, for reverse proxies).
	noRedirect := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(on.httpURL("/ui"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "ui/" {
		t.Errorf("GET /ui: %d Location %q, want 301 ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The API behind the pages still wants a token.
	if code := httpStatus(on.httpURL("/calls/ice_servers")); code != http.StatusUnauthorized {
		t.Errorf("GET /calls/ice_servers without a token: %d, want 401", code)
	}

	offEnv := startIcebox(t, callsConfig(t.TempDir(), ""), tok.env(), "ICEBOX_HTTP_UI=false")
	for _, p := range []string{"/ui/", "/ui/ice-test", "/ui/common.js", "/ui"} {
		code, body := httpGet(t, offEnv.httpURL(p), "")
		if code != http.StatusNotFound || !strings.Contains(string(body), "http.ui") {
			t.Errorf("http.ui false: GET %s: %d %s, want 404 naming http.ui", p, code, body)
		}
	}
	if code, _ := httpGet(t, offEnv.httpURL("/calls/ice_servers"), tok["alice"]); code != http.StatusOK {
		t.Errorf("http.ui false: GET /calls/ice_servers: %d, want 200", code)
	}
}

// requireBrowser returns web/e2e once Chromium, node and its
// playwright-core are installed; it skips (fails under CI=true) otherwise.
func requireBrowser(t *testing.T) string {
	t.Helper()
	return requireChromium(t, "web UI browser tests", "e2e", func(dir string) string {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
			return "playwright-core not installed in web/e2e (cd web/e2e && npm ci)"
		}
		return ""
	})
}

// uiBed is icebox in a namespace with loopback and one veth interface, where
// the browser runs too.
type uiBed struct {
	ns        *netbed.NS
	e2eDir    string
	shotDir   string
	tok       apiTokens
	hc        *http.Client
	icebox    *instance
	conversID string
}

func newUIBed(t *testing.T) *uiBed {
	t.Helper()
	e2eDir := requireBrowser(t)
	ns := newBrowserNS(t, "ui")
	b := &uiBed{ns: ns, e2eDir: e2eDir, tok: newAPITokens(), conversID: "ui-demo", hc: nsClient(ns, 5*time.Second)}
	// Screenshots land where ICEBOX_SCREENSHOTS_DIR says (relative to the
	// repository root: web/screenshots for the README's), else in a
	// temporary directory, so that a test run does not dirty the tree.
	b.shotDir = os.Getenv("ICEBOX_SCREENSHOTS_DIR")
	switch {
	case b.shotDir == "":
		b.shotDir = t.TempDir()
	case !filepath.IsAbs(b.shotDir):
		b.shotDir = filepath.Join(e2eDir, "..", "..", b.shotDir)
	}
	if err := os.MkdirAll(b.shotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b.icebox = startIceboxIn(t, ns, b.hc, func(stateDir string) string { return browserBedConfig(stateDir, "ui.icebox.test") }, b.tok.env())
	return b
}

// api sends a request to icebox inside the namespace as user.
func (b *uiBed) api(t *testing.T, user, method, path string, body any) (int, []byte) {
	t.Helper()
	return clientRequest(t, b.hc, method, "http://"+nsHTTP+path, b.tok[user], body)
}

// runScenario runs `node ui.js SCENARIO …` inside the namespace and decodes
// its JSON result into out. Chromium and node are stopped by PID at cleanup
// if they are still running.
func (b *uiBed) runScenario(t *testing.T, out any, scenario string, args ...string) {
	t.Helper()
	tokens := map[string]string{"alice": b.tok["alice"], "bob": b.tok["bob"], "admin": b.tok["admin"], "wrong": "not-a-valid-token"}
	tokJSON, err := json.Marshal(tokens)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"UI_E2E_TOKENS=" + string(tokJSON), "UI_E2E_DEADLINE_MS=" + strconv.Itoa(int((uiScenarioTimeout - 10*time.Second).Milliseconds()))}
	start := time.Now()
	p := startProcessEnv(t, env, "ip", append([]string{"netns", "exec", b.ns.Name, "node", filepath.Join(b.e2eDir, "ui.js"), scenario, "http://" + nsHTTP, b.shotDir}, args...)...)
	p.Dir = b.e2eDir
	t.Cleanup(func() { killDescendants(p.Process.Pid) }) // runs before p.kill (registered later)
	select {
	case <-p.done:
	case <-time.After(uiScenarioTimeout):
		killDescendants(p.Process.Pid)
		p.kill()
		t.Fatalf("node ui.js %s did not exit within %s; output:\n%s", scenario, uiScenarioTimeout, tail(p.out.String(), 40))
	}
	lines := strings.Split(strings.TrimSpace(p.out.String()), "\n")
	var last string
	for _, l := range lines {
		if strings.HasPrefix(l, "{") {
			last = l
		}
	}
	var env2 struct {
		OK            bool
		Error         string
		ConsoleErrors []string
	}
	if err := json.Unmarshal([]byte(last), &env2); err != nil || !env2.OK {
		t.Fatalf("node ui.js %s: exit %v, error %q; output:\n%s", scenario, p.waitErr, env2.Error, tail(p.out.String(), 40))
	}
	if err := json.Unmarshal([]byte(last), out); err != nil {
		t.Fatal(err)
	}
	t.Logf("node ui.js %s: %s", scenario, time.Since(start).Round(100*time.Millisecond))
}

// killDescendants SIGKILLs, by PID, every process below pid (Chromium and
// its helpers under node), deepest first.
func killDescendants(pid int) {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces and parentheses.
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			walk(c)
			_ = syscall.Kill(c, syscall.SIGKILL) // it may have exited meanwhile
		}
	}
	walk(pid)
}

// iceTestResult is what ui.js ice-test prints.
type iceTestResult struct {
	Good struct {
		Verdict, Title, Detail string
		CandidateRows          int
		RelayRows              int
		Result                 struct {
			Verdict, Cause string
			Gathered       []struct {
				URL        string
				Candidates []struct{ Type, Protocol, Address string }
				Errors     []struct {
					Code int
					Text string
				}
				MS       int
				Complete bool
			}
			Call struct {
				Connected     bool
				ConnectMS     int     `json:"connectMs"`
				RTTMS         float64 `json:"rttMs"`
				Local, Remote string
				Error         string
			}
		}
	}
	Bad           struct{ Verdict, Cause, Title, Detail string }
	Layout        map[string]pageLayout
	ConsoleErrors []string
}

// pageLayout is ui.js's measure of one page in one view (NAME,
// NAME-phone: 390 px wide, NAME-dark: prefers-color-scheme dark).
type pageLayout struct {
	ScrollWidth, Width int
	BG                 string
	Dark               bool
	Wide               []string
}

// checkLayouts: every view named in want was measured; the phone views
// (390 px) do not scroll sideways, the dark views have a dark background
// and the light ones a light one.
func checkLayouts(t *testing.T, got map[string]pageLayout, want ...string) {
	t.Helper()
	for _, name := range want {
		l, ok := got[name]
		if !ok {
			t.Errorf("layout of %s not measured (have %d views)", name, len(got))
			continue
		}
		dark := strings.Contains(name, "dark")
		lum, err := luminance(l.BG)
		t.Logf("%s: %d px wide in %d, background %s (luminance %.2f)", name, l.ScrollWidth, l.Width, l.BG, lum)
		if err != nil {
			t.Errorf("%s: background %q: %v", name, l.BG, err)
		}
		if strings.Contains(name, "phone") && (l.Width != 390 || l.ScrollWidth > 390) {
			t.Errorf("%s: document %d px wide in a %d px viewport, want ≤ 390 (sticking out: %v)", name, l.ScrollWidth, l.Width, l.Wide)
		}
		if l.Dark != dark {
			t.Errorf("%s: prefers-color-scheme dark %v, want %v", name, l.Dark, dark)
		}
		if dark && lum > 0.2 || !dark && lum < 0.8 {
			t.Errorf("%s: background %s (luminance %.2f), want %s", name, l.BG, lum, map[bool]string{true: "dark (≤ 0.2)", false: "light (≥ 0.8)"}[dark])
		}
	}
}

// luminance is the relative luminance (0 black … 1 white, WCAG) of a
// computed CSS colour "rgb(r, g, b)".
func luminance(css string) (float64, error) {
	var r, g, b float64
	if _, err := fmt.Sscanf(css, "rgb(%g, %g, %g)", &r, &g, &b); err != nil {
		return 0, fmt.Errorf("not rgb(r, g, b): %w", err)
	}
	lin := func(c float64) float64 {
		c /= 255
		if c <= 0.04045 {
			return c / 12.92
		}
		return math.Pow((c+0.055)/1.055, 2.4)
	}
	return 0.2126*lin(r) + 0.7152*lin(g) + 0.0722*lin(b), nil
}

// TestWebUIBrowser runs the pages in Chromium inside the namespace bed.
func TestWebUIBrowser(t *testing.T) {
	t.Parallel()
	b := newUIBed(t)

	t.Run("ice test", func(t *testing.T) {
		var r iceTestResult
		b.runScenario(t, &r, "ice-test")
		g := r.Good
		if g.Verdict != "pass" {
			t.Fatalf("ICE test verdict %q: %s %s; result %+v", g.Verdict, g.Title, g.Detail, g.Result)
		}
		if g.RelayRows == 0 || !strings.HasPrefix(g.Result.Call.Local, "relay "+browserBedIP+":") {
			t.Errorf("relay rows %d, selected local candidate %q; want relay candidates on %s", g.RelayRows, g.Result.Call.Local, browserBedIP)
		}
		for _, gath := range g.Result.Gathered {
			t.Logf("%s: %d candidates in %d ms (complete %v), errors %v", gath.URL, len(gath.Candidates), gath.MS, gath.Complete, gath.Errors)
		}
		t.Logf("relay-only call: connected in %d ms, RTT %.1f ms, %s -> %s", g.Result.Call.ConnectMS, g.Result.Call.RTTMS, g.Result.Call.Local, g.Result.Call.Remote)
		if r.Bad.Verdict != "fail" || r.Bad.Cause != "bad_token" || !strings.Contains(r.Bad.Detail, "refused the token") {
			t.Errorf("wrong token: verdict %q cause %q: %s %s; want fail, bad_token, a sentence about the token", r.Bad.Verdict, r.Bad.Cause, r.Bad.Title, r.Bad.Detail)
		}
		checkLayouts(t, r.Layout, "ice-test", "ice-test-phone", "ice-test-dark", "index", "index-phone", "index-dark", "ice-test-bad-token-phone-dark")
		for _, e := range r.ConsoleErrors {
			// The bad-token run's refused request is logged by the browser.
			if strings.Contains(e, "Content Security Policy") || strings.Contains(e, "uncaught") {
				t.Errorf("page error: %s", e)
			}
		}
	})

	t.Run("call demo and status", b.callDemo)
}

// rtpSummary is the call demo's getStats() summary of one side.
type rtpSummary struct {
	VideoIn, AudioIn, PacketsOut int
	Local, Remote                *struct {
		Type, Address, Protocol, RelayProtocol string
		Port                                   int
	}
}

// callDemoResult is what ui.js call prints.
type callDemoResult struct {
	SignedIn               struct{ Alice, Bob string }
	BobRang, AliceRinging  string
	CallID                 string
	ConnectMS              int `json:"connectMs"`
	AliceStats, BobStats   rtpSummary
	StatusAllocationsFirst []struct {
		User     string
		To, From int64
	}
	StatusAllocationsLater []struct {
		User     string
		To, From int64
	}
	StatusCalls struct {
		Answered, Ringing string
		Rows              []struct{ ID, Status string }
		ChartPoints       int
		Keyring           []string
		Matrix            string
	}
	Layout map[string]pageLayout
	// The call page's conversation list (GET /conversations) of each
	// side, with the invitees offered for the picked one.
	ConversationList, BobConversationList conversationList
	ChartWindow                           struct {
		Minutes int
		Heading string
	}
	Ended            struct{ Alice, Bob string }
	AliceLog, BobLog []string
	ConsoleErrors    []string
}

type conversationList struct {
	Options  []struct{ ID, Text string }
	Picked   string
	Invitees []string
}

func (l conversationList) ids() []string {
	var out []string
	for _, o := range l.Options {
		out = append(out, o.ID)
	}
	return out
}

func (b *uiBed) callDemo(t *testing.T) {
	if code, body := b.api(t, "admin", http.MethodPut, "/admin/conversations/"+b.conversID,
		map[string]any{"participants": []string{"alice", "bob"}}); code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, body)
	}
	// Another of bob's, newer, that alice is not in: her list must not
	// show it, his shows it first.
	if code, body := b.api(t, "admin", http.MethodPut, "/admin/conversations/ui-other",
		map[string]any{"participants": []string{"bob", "carol"}}); code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, body)
	}
	var r callDemoResult
	b.runScenario(t, &r, "call", b.conversID)
	t.Logf("signed in as %q and %q; bob %s, alice %s; media in %d ms", r.SignedIn.Alice, r.SignedIn.Bob, r.BobRang, r.AliceRinging, r.ConnectMS)
	if r.SignedIn.Alice != "alice" || r.SignedIn.Bob != "bob" {
		t.Errorf("signed in as %q and %q, want alice and bob", r.SignedIn.Alice, r.SignedIn.Bob)
	}
	if r.BobRang != "ringing" || r.AliceRinging != "ringing" || r.CallID == "" {
		t.Errorf("after Call: bob %q, alice %q, call %q; want both ringing and a call ID", r.BobRang, r.AliceRinging, r.CallID)
	}
	for side, s := range map[string]rtpSummary{"alice": r.AliceStats, "bob": r.BobStats} {
		if s.VideoIn == 0 || s.Local == nil || s.Remote == nil {
			t.Errorf("%s: %+v; want inbound video RTP over a selected pair", side, s)
			continue
		}
		t.Logf("%s: %d video and %d audio packets in, %d out, over %s %s:%d (%s) -> %s %s:%d", side, s.VideoIn, s.AudioIn, s.PacketsOut,
			s.Local.Type, s.Local.Address, s.Local.Port, s.Local.RelayProtocol, s.Remote.Type, s.Remote.Address, s.Remote.Port)
		if s.Local.Type != "relay" || s.Local.Address != browserBedIP || s.Remote.Type != "relay" {
			t.Errorf("%s: pair %s %s -> %s %s; want relay to relay on %s", side, s.Local.Type, s.Local.Address, s.Remote.Type, s.Remote.Address, browserBedIP)
		}
	}
	// The status page showed the call's two allocations (one per side,
	// with the per-call credentials) and their counters moved.
	var before, after int64
	users := map[string]bool{}
	for _, a := range r.StatusAllocationsFirst {
		before += a.To + a.From
		users[a.User] = true
	}
	for _, a := range r.StatusAllocationsLater {
		after += a.To + a.From
	}
	if !users["alice"] || !users["bob"] || after <= before {
		t.Errorf("status page allocations of call %s: %+v then %+v; want alice's and bob's, with growing counters", r.CallID, r.StatusAllocationsFirst, r.StatusAllocationsLater)
	}
	sc := r.StatusCalls
	if sc.Answered != "1" || len(sc.Rows) != 1 || sc.Rows[0].ID != r.CallID || sc.Rows[0].Status != "answered" {
		t.Errorf("status page calls: %+v; want call %s answered", sc, r.CallID)
	}
	if sc.ChartPoints < 3 || len(sc.Keyring) == 0 || sc.Matrix != "off" {
		t.Errorf("status page: %d chart points, keyring %v, matrix %q; want ≥3 points, kids, off", sc.ChartPoints, sc.Keyring, sc.Matrix)
	}
	checkLayouts(t, r.Layout, "status", "status-phone", "status-dark", "call", "call-phone", "call-dark")
	// The chart says its window, in local times of day (not ISO strings).
	if r.ChartWindow.Minutes != 5 || !regexp.MustCompile(`last 5 minutes \(\d{1,2}:\d\d:\d\d[^–]*–\d{1,2}:\d\d:\d\d`).MatchString(r.ChartWindow.Heading) {
		t.Errorf("status chart window %d min, heading %q; want 5 and \"last 5 minutes (HH:MM:SS–HH:MM:SS)\"", r.ChartWindow.Minutes, r.ChartWindow.Heading)
	}
	// Each side picked the conversation from their own list (GET
	// /conversations, newest first): alice's has hers only, with who else
	// is in it and its last call; bob's has his two; the invitees offered
	// are the picked conversation's other participants.
	t.Logf("alice's conversation list %+v; bob's %+v", r.ConversationList, r.BobConversationList)
	al := r.ConversationList
	if !slices.Equal(al.ids(), []string{b.conversID}) || al.Picked != b.conversID ||
		!regexp.MustCompile(`^`+b.conversID+` · with bob · last call: answered \d`).MatchString(al.Options[0].Text) ||
		!slices.Equal(al.Invitees, []string{"bob"}) {
		t.Errorf("alice's conversation list %+v; want only %s, with bob, its last call answered, bob as the invitee", al, b.conversID)
	}
	bl := r.BobConversationList
	if !slices.Equal(bl.ids(), []string{"ui-other", b.conversID}) || bl.Picked != b.conversID || !slices.Equal(bl.Invitees, []string{"alice"}) {
		t.Errorf("bob's conversation list %+v; want ui-other then %s, %s picked, alice as the invitee", bl, b.conversID, b.conversID)
	}
	if !strings.Contains(r.Ended.Alice, "ended") || !strings.Contains(r.Ended.Bob, "ended (user_hangup)") {
		t.Errorf("after hangup: alice %q, bob %q; want both ended (user_hangup)", r.Ended.Alice, r.Ended.Bob)
	}
	t.Logf("bob's page log:\n  %s", strings.Join(r.BobLog, "\n  "))
	for _, e := range r.ConsoleErrors {
		t.Errorf("page error: %s", e)
	}
	// icebox agrees: the call ended and its allocations are gone.
	code, body := b.api(t, "admin", http.MethodGet, "/admin/calls/"+r.CallID, nil)
	var call struct{ Status string }
	_ = json.Unmarshal(body, &call)
	if code != http.StatusOK || call.Status != "ended" {
		t.Errorf("GET /admin/calls/%s: %d %s; want ended", r.CallID, code, body)
	}
	if !waitFor(5*time.Second, func() bool {
		_, body := b.api(t, "admin", http.MethodGet, "/admin/allocations", nil)
		return !strings.Contains(string(body), r.CallID)
	}) {
		t.Errorf("allocations of call %s still listed after the hangup", r.CallID)
	}
}
