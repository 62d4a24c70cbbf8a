package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// apiEnv is the HTTP API over a real store and calls service.
type apiEnv struct {
	reg   *prometheus.Registry
	srv   *httptest.Server
	store *store.Store
	calls *signaling.Service
	hub   *Hub
	api   *Server
}

const adminToken = "admin-token-0123456789"

func userToken(user string) string { return "token-of-" + user }

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	return newAPIEnvWith(t, nil)
}

// newAPIEnvWith is newAPIEnv with edit applied to the Config (if not nil).
func newAPIEnvWith(t *testing.T, edit func(*Config, *store.Store)) *apiEnv {
	t.Helper()
	return newAPIEnvHub(t, HubConfig{}, edit)
}

// newAPIEnvHub is newAPIEnvWith with a hub built from hubCfg (its logger
// and registerer are set here).
func newAPIEnvHub(t *testing.T, hubCfg HubConfig, edit func(*Config, *store.Store)) *apiEnv {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	hubCfg.Registerer = prometheus.NewRegistry() // a zero Logger writes nothing
	hub := NewHub(hubCfg)
	t.Cleanup(func() {
		if err := hub.Close(); err != nil {
			t.Error(err)
		}
	})
	calls, err := signaling.NewService(signaling.ServiceConfig{Store: st, Publisher: hub, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	var tokens []StaticToken
	for _, u := range []string{"alice", "bob", "carol"} {
		tokens = append(tokens, StaticToken{SHA256: sha256.Sum256([]byte(userToken(u))), User: u})
	}
	tokens = append(tokens, StaticToken{SHA256: sha256.Sum256([]byte(adminToken)), User: "ops", Admin: true})
	auth, err := NewAuthenticator(AuthConfig{StaticTokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := credentials.NewKeyring([]credentials.Secret{{KID: "k1", Key: []byte("httpapi-test-secret-0123456789")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := Config{
		Registerer:   reg,
		Keyring:      func() *credentials.Keyring { return kr },
		ICE:          ICEConfig{STUN: []string{"stun:127.0.0.1:3478"}, TURN: []string{"turn:127.0.0.1:3478?transport=udp"}, TTL: time.Hour},
		Calls:        calls,
		Auth:         auth,
		Hub:          hub,
		MaxBodyBytes: 1 << 20,
		Logger:       zerolog.Nop(),
	}
	if edit != nil {
		edit(&cfg, st)
	}
	api, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	e := &apiEnv{reg: reg, srv: srv, store: st, calls: calls, hub: hub, api: api}
	e.mustDo(t, adminToken, "PUT", "/admin/conversations/c1", `{"participants":["alice","bob"]}`, http.StatusOK)
	e.mustDo(t, adminToken, "PUT", "/admin/conversations/c2", `{"participants":["carol"]}`, http.StatusOK)
	return e
}

func (e *apiEnv) do(t *testing.T, token, method, path string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, buf.Bytes()
}

func (e *apiEnv) mustDo(t *testing.T, token, method, path, body string, want int) []byte {
	t.Helper()
	code, got := e.do(t, token, method, path, []byte(body))
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, code, got, want)
	}
	return got
}

func (e *apiEnv) initiate(t *testing.T) callResponse {
	t.Helper()
	var c callResponse
	body := e.mustDo(t, userToken("alice"), "POST", "/calls/initiate", `{"conversation_id":"c1","sdp_offer":"v=0 offer"}`, http.StatusCreated)
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestInitiateReturnsPerCallCredentials(t *testing.T) {
	e := newAPIEnv(t)
	c := e.initiate(t)
	if c.Status != signaling.StatusRinging || c.ID == "" {
		t.Fatalf("initiate = %+v", c.callView)
	}
	var turnUser string
	for _, s := range c.ICEServers {
		if s.Username != "" {
			turnUser = s.Username
		}
	}
	if !strings.Contains(turnUser, ":call-"+c.ID+":alice") {
		t.Fatalf("TURN username %q does not name the call %s", turnUser, c.ID)
	}
	// GET /calls/ice_servers?call_id= gives per-call credentials to participants only.
	body := e.mustDo(t, userToken("bob"), "GET", "/calls/ice_servers?call_id="+c.ID, "", http.StatusOK)
	if !strings.Contains(string(body), ":call-"+c.ID+":bob") {
		t.Fatalf("per-call ice_servers for bob = %s", body)
	}
	e.mustDo(t, userToken("carol"), "GET", "/calls/ice_servers?call_id="+c.ID, "", http.StatusForbidden)
}

func TestAPIRefusalsChangeNothing(t *testing.T) {
	e := newAPIEnv(t)
	c := e.initiate(t)
	before, err := e.store.Call(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"sdp_answer":"` + strings.Repeat("a", 2<<20) + `"}`
	for _, tc := range []struct {
		name, token, method, path, body string
		status                          int
		code                            string
	}{
		{"no token", "", "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":"x"}`, 401, "unauthorized"},
		{"bad token", "nope", "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":"x"}`, 401, "unauthorized"},
		{"non-participant answers", userToken("carol"), "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":"x"}`, 403, "forbidden"},
		{"non-participant reads", userToken("carol"), "GET", "/calls/" + c.ID, "", 403, "forbidden"},
		{"non-participant initiates", userToken("carol"), "POST", "/calls/initiate", `{"conversation_id":"c1","sdp_offer":"x"}`, 403, "forbidden"},
		{"invalid JSON", userToken("bob"), "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":`, 400, "invalid_json"},
		{"unknown field", userToken("bob"), "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":"x","sdp":"y"}`, 400, "unknown_field"},
		{"wrong type", userToken("bob"), "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":5}`, 400, "invalid_json"},
		{"trailing data", userToken("bob"), "POST", "/calls/" + c.ID + "/answer", `{"sdp_answer":"x"} {}`, 400, "invalid_json"},
		{"2 MiB body", userToken("bob"), "POST", "/calls/" + c.ID + "/answer", big, 413, "too_large"},
		{"missing answer", userToken("bob"), "POST", "/calls/" + c.ID + "/answer", `{}`, 400, "invalid_request"},
		{"unknown call", userToken("bob"), "POST", "/calls/does-not-exist/answer", `{"sdp_answer":"x"}`, 404, "not_found"},
		{"bad call id", userToken("bob"), "GET", "/calls/bad%20id", "", 400, "invalid_request"},
		{"caller rejects", userToken("alice"), "POST", "/calls/" + c.ID + "/reject", ``, 403, "forbidden"},
		{"negotiate while ringing", userToken("alice"), "POST", "/calls/" + c.ID + "/negotiate", `{"description":{"type":"offer","sdp":"v=0"}}`, 409, "not_answered"},
		{"non-admin admin", userToken("alice"), "PUT", "/admin/conversations/c1", `{"participants":["alice"]}`, 403, "forbidden"},
		{"bad conversation", adminToken, "PUT", "/admin/conversations/c1", `{"participants":[]}`, 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(t, tc.token, tc.method, tc.path, []byte(tc.body))
			var got struct {
				Error Error `json:"error"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q is not an error object: %v", body, err)
			}
			if code != tc.status || got.Error.Code != tc.code {
				t.Fatalf("got %d %q (%s), want %d %q", code, got.Error.Code, got.Error.Message, tc.status, tc.code)
			}
		})
	}
	after, err := e.store.Call(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(before)
	b, _ := json.Marshal(after)
	if !bytes.Equal(a, b) {
		t.Fatalf("the refused requests changed the call:\nbefore %s\nafter  %s", a, b)
	}
	conv, err := e.store.Conversation(context.Background(), "c1")
	if err != nil || len(conv.Participants) != 2 {
		t.Fatalf("conversation after refusals = %+v, %v", conv, err)
	}
}

func TestTransitionConflicts(t *testing.T) {
	e := newAPIEnv(t)
	c := e.initiate(t)
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+c.ID+"/answer", `{"sdp_answer":"v=0 a"}`, http.StatusOK)
	body := e.mustDo(t, userToken("bob"), "POST", "/calls/"+c.ID+"/answer", `{"sdp_answer":"v=0 b","party_id":"other-device"}`, http.StatusConflict)
	if !strings.Contains(string(body), `"already_answered"`) {
		t.Fatalf("second answer: %s", body)
	}
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+c.ID+"/hangup", ``, http.StatusOK)
	body = e.mustDo(t, userToken("bob"), "POST", "/calls/"+c.ID+"/hangup", `{"reason":"user_hangup"}`, http.StatusConflict)
	if !strings.Contains(string(body), `"call_ended"`) {
		t.Fatalf("hangup of an ended call: %s", body)
	}
	body = e.mustDo(t, userToken("alice"), "GET", "/calls?conversation_id=c1&active=true", "", http.StatusOK)
	if string(body) != `{"calls":[],"more":false}`+"\n" {
		t.Fatalf("active calls after hangup = %s", body)
	}
	body = e.mustDo(t, userToken("alice"), "GET", "/calls/ice_servers?call_id="+c.ID, "", http.StatusConflict)
	if !strings.Contains(string(body), `"call_ended"`) {
		t.Fatalf("credentials for an ended call: %s", body)
	}
}

func TestRequestMetricsByRoute(t *testing.T) {
	e := newAPIEnv(t)
	c := e.initiate(t)
	e.mustDo(t, userToken("carol"), "GET", "/calls/"+c.ID, "", http.StatusForbidden)
	e.mustDo(t, userToken("bob"), "GET", "/calls/"+c.ID, "", http.StatusOK)
	// The two PUTs are newAPIEnv's conversations.
	const want = `# HELP icebox_http_requests_total HTTP requests by method (GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or other), route template (or unmatched) and status code.
# TYPE icebox_http_requests_total counter
icebox_http_requests_total{code="200",method="GET",route="/calls/:id"} 1
icebox_http_requests_total{code="200",method="PUT",route="/admin/conversations/:id"} 2
icebox_http_requests_total{code="201",method="POST",route="/calls/initiate"} 1
icebox_http_requests_total{code="403",method="GET",route="/calls/:id"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "icebox_http_requests_total"); err != nil {
		t.Error(err)
	}
}

func TestWebSocketEndsWhenTheTokenExpires(t *testing.T) {
	srv := &Server{cfg: Config{Hub: NewHub(HubConfig{Logger: zerolog.Nop(), Registerer: prometheus.NewRegistry()})}, log: zerolog.Nop()}
	t.Cleanup(func() { _ = srv.cfg.Hub.Close() })
	ec := echo.New()
	ec.GET("/ws", srv.websocket, func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			// What the auth middleware stores for a JWT that expires very soon.
			c.Set(identityKey, Identity{User: "alice", Method: MethodJWT, Expires: time.Now().Add(300 * time.Millisecond)})
			return next(c)
		}
	})
	hs := httptest.NewServer(ec)
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	start := time.Now()
	_, _, err = conn.Read(ctx)
	if err == nil {
		t.Fatal("read a message; want the session closed at the token's expiry")
	}
	if websocket.CloseStatus(err) == -1 || time.Since(start) > 5*time.Second {
		t.Fatalf("session ended with %v after %v; want a close frame soon after the token expired", err, time.Since(start))
	}
	// Not "server shutting down" (1001): the client must renew its token,
	// not look for another server.
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "token expired" {
		t.Errorf("closed with %v; want 1008 \"token expired\"", err)
	}
}

// TestPprofAdminOnly: Go's profiles are served to administrators only.
func TestPprofAdminOnly(t *testing.T) {
	e := newAPIEnv(t)
	if got := e.mustDo(t, adminToken, "GET", "/admin/debug/pprof/goroutine?debug=1", "", http.StatusOK); !bytes.Contains(got, []byte("goroutine profile:")) {
		t.Fatalf("goroutine profile: %.200s", got)
	}
	e.mustDo(t, adminToken, "GET", "/admin/debug/pprof/heap", "", http.StatusOK)
	e.mustDo(t, adminToken, "GET", "/admin/debug/pprof/no-such-profile", "", http.StatusNotFound)
	e.mustDo(t, userToken("alice"), "GET", "/admin/debug/pprof/heap", "", http.StatusForbidden)
	e.mustDo(t, userToken("alice"), "GET", "/admin/debug/pprof/profile?seconds=1", "", http.StatusForbidden)
	e.mustDo(t, "", "GET", "/admin/debug/pprof/heap", "", http.StatusUnauthorized)
}
