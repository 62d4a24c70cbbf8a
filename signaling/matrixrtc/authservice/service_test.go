package authservice_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

const (
	lkKey    = "APIicebox"
	lkSecret = "a-livekit-secret-of-at-least-32-bytes!"
	lkURL    = "wss://sfu.example.test"
	prefix   = "/livekit/jwt"
)

// Fixed vectors: SHA-256 over the JSON array, unpadded standard base64,
// computed independently (python3: base64.b64encode(hashlib.sha256(
// json.dumps([...], separators=(",", ":")).encode()).digest()).rstrip(b"=")).
func TestDerivationVectors(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{authservice.RoomAlias("!room:example.org", "m.call#ROOM"), "TK4o8wNCXi5t5936bOvIzE/X3XFc7cgp3jGRDqK0j5E"},
		{authservice.Identity("@alice:example.org", "DEVICE", "member-1"), "ZhlrG5pVejj+OlqePjLQQjuMl0gaU5rmJ4LCmZOam2U"},
		{authservice.LegacyIdentity("@alice:example.org", "DEVICE"), "@alice:example.org:DEVICE"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// rooms records the rooms created for full-access users (the real
// livekit-server is the managed mode, a later step).
type rooms struct {
	mu    sync.Mutex
	names []string
	err   error
}

func (r *rooms) CreateRoom(_ context.Context, name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.names = append(r.names, name)
	return nil
}

func (r *rooms) created() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.names...)
}

type bed struct {
	srv   *httptest.Server
	reg   *prometheus.Registry
	rooms *rooms
	hs    *matrixtest.Homeserver
	log   *bytes.Buffer
}

func newBed(t *testing.T, hs *matrixtest.Homeserver, fullAccess []string, overrides map[string]string, opts ...func(*authservice.Config)) *bed {
	t.Helper()
	b := &bed{reg: prometheus.NewRegistry(), rooms: &rooms{}, hs: hs, log: &bytes.Buffer{}}
	cfg := authservice.Config{
		LiveKitURL: lkURL, APIKey: lkKey, APISecret: lkSecret,
		FullAccessHomeservers: fullAccess,
		HomeserverURLs:        overrides,
		JWTLifetime:           30 * time.Minute,
		VerifyTimeout:         3 * time.Second,
		Rooms:                 b.rooms,
		Registerer:            b.reg,
		Logger:                zerolog.New(&syncWriter{w: b.log}),
	}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := authservice.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	b.srv = httptest.NewServer(svc.Handler(prefix))
	t.Cleanup(b.srv.Close)
	return b
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (b *bed) post(t *testing.T, path string, body any) (int, map[string]string, http.Header) {
	t.Helper()
	var rd io.Reader
	switch v := body.(type) {
	case string:
		rd = strings.NewReader(v)
	default:
		js, _ := json.Marshal(v)
		rd = bytes.NewReader(js)
	}
	resp, err := http.Post(b.srv.URL+prefix+path, "application/json", rd)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s: body %q: %v", path, raw, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

type openID struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int    `json:"expires_in"`
}

func requestOpenID(t *testing.T, hs *matrixtest.Homeserver, userID, token string) openID {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, hs.URL()+"/_matrix/client/v3/user/"+url.PathEscape(userID)+"/openid/request_token", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o openID
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != 200 || o.AccessToken == "" {
		t.Fatalf("openid request_token: status %d, %+v, %v", resp.StatusCode, o, err)
	}
	return o
}

// verifyJWT checks the JWT with LiveKit's own verifier and the configured
// key/secret, and returns its claims.
func verifyJWT(t *testing.T, jwt string) *auth.ClaimGrants {
	t.Helper()
	v, err := auth.ParseAPIToken(jwt)
	if err != nil {
		t.Fatal(err)
	}
	if v.APIKey() != lkKey {
		t.Errorf("api key %q, want %q", v.APIKey(), lkKey)
	}
	_, grants, err := v.Verify(lkSecret)
	if err != nil {
		t.Fatalf("jwt does not verify with the configured secret: %v", err)
	}
	return grants
}

func checkGrants(t *testing.T, g *auth.ClaimGrants, room, identity string) {
	t.Helper()
	if g.Identity != identity {
		t.Errorf("identity %q, want %q", g.Identity, identity)
	}
	vg := g.Video
	if vg == nil {
		t.Fatal("no video grant")
	}
	if vg.Room != room || !vg.RoomJoin || vg.RoomCreate {
		t.Errorf("grant room=%q join=%v create=%v, want room=%q join=true create=false", vg.Room, vg.RoomJoin, vg.RoomCreate, room)
	}
	if vg.CanPublish == nil || !*vg.CanPublish || vg.CanSubscribe == nil || !*vg.CanSubscribe ||
		vg.CanUpdateOwnMetadata == nil || !*vg.CanUpdateOwnMetadata {
		t.Errorf("grant publish/subscribe/update-own-metadata not all true: %+v", vg)
	}
}

func TestAgainstDendrite(t *testing.T) {
	// The userinfo endpoint is a federation route: keep those on.
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, aliceTok, _ := hs.Register(t, "alice", "alice-password-1", false)
	bob, bobTok, _ := hs.Register(t, "bob", "bob-password-1", false)
	overrides := map[string]string{hs.ServerName(): hs.URL()}

	full := newBed(t, hs, []string{hs.ServerName()}, overrides)
	restricted := newBed(t, hs, []string{"elsewhere.example"}, overrides)
	const roomID = "!abc:localhost"

	t.Run("sfu/get full access", func(t *testing.T) {
		tok := requestOpenID(t, hs, alice, aliceTok)
		if tok.MatrixServerName != hs.ServerName() {
			t.Fatalf("matrix_server_name %q", tok.MatrixServerName)
		}
		status, out, hdr := full.post(t, "/sfu/get", map[string]any{"room": roomID, "openid_token": tok, "device_id": "ALICEDEV"})
		if status != 200 {
			t.Fatalf("status %d %v; log: %s", status, out, full.log)
		}
		if out["url"] != lkURL {
			t.Errorf("url %q, want %q", out["url"], lkURL)
		}
		if hdr.Get("Access-Control-Allow-Origin") != "*" || hdr.Get("Access-Control-Allow-Methods") != "POST" {
			t.Errorf("CORS headers %v", hdr)
		}
		g := verifyJWT(t, out["jwt"])
		wantRoom := authservice.RoomAlias(roomID, "m.call#ROOM")
		checkGrants(t, g, wantRoom, alice+":ALICEDEV")
		if got := full.rooms.created(); len(got) != 1 || got[0] != wantRoom {
			t.Errorf("rooms created %q, want [%q]", got, wantRoom)
		}
		if got := metricValue(t, full.reg, "icebox_matrixrtc_tokens_issued_total", "sfu_get", "full"); got != 1 {
			t.Errorf("issued{sfu_get,full} = %v", got)
		}
		if strings.Contains(full.log.String(), tok.AccessToken) || strings.Contains(full.log.String(), out["jwt"]) {
			t.Error("a token is in the log")
		}
	})

	t.Run("get_token restricted: no room created", func(t *testing.T) {
		tok := requestOpenID(t, hs, bob, bobTok)
		status, out, _ := restricted.post(t, "/get_token", map[string]any{
			"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": tok,
			"member": map[string]string{"id": "member-bob", "claimed_user_id": bob, "claimed_device_id": "BOBDEV"},
		})
		if status != 200 {
			t.Fatalf("status %d %v", status, out)
		}
		g := verifyJWT(t, out["jwt"])
		checkGrants(t, g, authservice.RoomAlias(roomID, "m.call#ROOM"), authservice.Identity(bob, "BOBDEV", "member-bob"))
		if got := restricted.rooms.created(); len(got) != 0 {
			t.Errorf("rooms created for a restricted user: %q", got)
		}
		if got := metricValue(t, restricted.reg, "icebox_matrixrtc_tokens_issued_total", "get_token", "restricted"); got != 1 {
			t.Errorf("issued{get_token,restricted} = %v", got)
		}
		// The room name is the one /sfu/get gives for the same room's call:
		// both endpoints' clients meet.
	})

	unauthorized := map[string]string{"errcode": "M_UNAUTHORIZED", "error": "The request could not be authorised."}
	check401 := func(t *testing.T, b *bed, path string, body any, reason string) {
		t.Helper()
		status, out, _ := b.post(t, path, body)
		if status != 401 || out["errcode"] != unauthorized["errcode"] || out["error"] != unauthorized["error"] {
			t.Errorf("status %d %v, want 401 %v", status, out, unauthorized)
		}
		ep := strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "_")
		if got := metricValue(t, b.reg, "icebox_matrixrtc_tokens_refused_total", ep, reason); got < 1 {
			t.Errorf("refused{%s,%s} = %v", ep, reason, got)
		}
	}

	t.Run("forged token", func(t *testing.T) {
		forged := openID{AccessToken: "forgedforgedforged", TokenType: "Bearer", MatrixServerName: hs.ServerName(), ExpiresIn: 3600}
		check401(t, restricted, "/sfu/get", map[string]any{"room": roomID, "openid_token": forged, "device_id": "X"}, "invalid_token")
		if got := metricValue(t, restricted.reg, "icebox_matrixrtc_openid_verify_failures_total", hs.ServerName(), "invalid_token"); got != 1 {
			t.Errorf("verify failures{localhost,invalid_token} = %v", got)
		}
	})

	t.Run("claimed user mismatch", func(t *testing.T) {
		tok := requestOpenID(t, hs, bob, bobTok)
		check401(t, restricted, "/get_token", map[string]any{
			"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": tok,
			"member": map[string]string{"id": "m", "claimed_user_id": alice, "claimed_device_id": "D"},
		}, "user_mismatch")
	})

	t.Run("token of one server claimed for another", func(t *testing.T) {
		// A homeserver vouches for its own users only: a token sent with a
		// server name that resolves elsewhere is refused there.
		tok := requestOpenID(t, hs, alice, aliceTok)
		tok.MatrixServerName = "other.invalid"
		b := newBed(t, hs, nil, map[string]string{"other.invalid": hs.URL()})
		check401(t, b, "/sfu/get", map[string]any{"room": roomID, "openid_token": tok, "device_id": "D"}, "foreign_user")
	})

	t.Run("unreachable homeserver", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := "http://" + l.Addr().String()
		l.Close()
		b := newBed(t, hs, nil, map[string]string{"down.example": dead})
		tok := openID{AccessToken: "sometoken", MatrixServerName: "down.example"}
		// lk-jwt-service answers 401 for any failed verification; icebox
		// answers 503 naming the homeserver when it could not ask it (the
		// token may be good), and tells the cases apart in metrics and the log.
		for _, path := range []string{"/sfu/get", "/get_token"} {
			body := map[string]any{"room": roomID, "openid_token": tok, "device_id": "D"}
			if path == "/get_token" {
				body = map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": tok,
					"member": map[string]string{"id": "m", "claimed_user_id": "@u:down.example", "claimed_device_id": "D"}}
			}
			status, out, _ := b.post(t, path, body)
			if status != 503 || out["errcode"] != "M_UNKNOWN" || !strings.Contains(out["error"], "down.example") {
				t.Errorf("%s with the homeserver down: %d %v, want 503 M_UNKNOWN naming down.example", path, status, out)
			}
		}
		if got := metricValue(t, b.reg, "icebox_matrixrtc_tokens_refused_total", "sfu_get", "homeserver_unreachable"); got != 1 {
			t.Errorf("refused{sfu_get,homeserver_unreachable} = %v, want 1", got)
		}
		if got := metricValue(t, b.reg, "icebox_matrixrtc_openid_verify_failures_total", "down.example", "homeserver_unreachable"); got != 2 {
			t.Errorf("verify failures{down.example,homeserver_unreachable} = %v", got)
		}
		if !strings.Contains(b.log.String(), `"homeserver":"down.example"`) {
			t.Errorf("log does not name the homeserver: %s", b.log.String())
		}
	})

	t.Run("room create failure", func(t *testing.T) {
		b := newBed(t, hs, []string{"*"}, overrides)
		b.rooms.err = fmt.Errorf("sfu down")
		tok := requestOpenID(t, hs, alice, aliceTok)
		status, out, _ := b.post(t, "/sfu/get", map[string]any{"room": roomID, "openid_token": tok, "device_id": "D"})
		if status != 500 || out["errcode"] != "M_UNKNOWN" || out["error"] != "Unable to create room on SFU" {
			t.Errorf("status %d %v", status, out)
		}
	})
}

func TestUnknownHomeserverLabel(t *testing.T) {
	b := newBed(t, nil, []string{"full.example"}, map[string]string{})
	tok := openID{AccessToken: "t", MatrixServerName: "not a server name"}
	status, _, _ := b.post(t, "/sfu/get", map[string]any{"room": "!r:x", "openid_token": tok, "device_id": "D"})
	if status != 401 {
		t.Fatalf("status %d", status)
	}
	if got := metricValue(t, b.reg, "icebox_matrixrtc_openid_verify_failures_total", "other", "homeserver_unreachable"); got != 1 {
		t.Errorf("verify failures{other,...} = %v", got)
	}
	mfs, _ := b.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "homeserver" && l.GetValue() != "other" && l.GetValue() != "full.example" {
					t.Errorf("%s has homeserver label %q from a request", mf.GetName(), l.GetValue())
				}
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	b := newBed(t, nil, nil, nil)
	tok := map[string]any{"access_token": "t", "matrix_server_name": "x.example"}
	for _, tc := range []struct {
		name, path string
		body       any
		errcode    string
		msg        string
	}{
		{"not json", "/sfu/get", "{", "M_NOT_JSON", "Error reading request"},
		{"unknown field", "/sfu/get", `{"room":"!r:x","bogus":1}`, "M_NOT_JSON", "Error reading request"},
		{"empty", "/get_token", "", "M_NOT_JSON", "Error reading request"},
		{"no room", "/sfu/get", map[string]any{"openid_token": tok}, "M_BAD_JSON", "Missing room parameter"},
		{"no token", "/sfu/get", map[string]any{"room": "!r:x"}, "M_BAD_JSON", "Missing OpenID token parameters"},
		{"half delay", "/sfu/get", map[string]any{"room": "!r:x", "openid_token": tok, "delay_id": "d"}, "M_BAD_JSON", "The request body is missing `delay_id` or `delay_timeout`"},
		{"no slot", "/get_token", map[string]any{"room_id": "!r:x", "openid_token": tok}, "M_BAD_JSON", "The request body is missing `room_id` or `slot_id`"},
		{"no member", "/get_token", map[string]any{"room_id": "!r:x", "slot_id": "s", "openid_token": tok}, "M_BAD_JSON", "The request body `member` is missing a `id`, `claimed_user_id` or `claimed_device_id`"},
		{"member no token", "/get_token", map[string]any{"room_id": "!r:x", "slot_id": "s", "member": map[string]string{"id": "m", "claimed_user_id": "@u:x", "claimed_device_id": "D"}}, "M_BAD_JSON", "The request body `openid_token` is missing a `access_token` or `matrix_server_name`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out, _ := b.post(t, tc.path, tc.body)
			if status != 400 || out["errcode"] != tc.errcode || out["error"] != tc.msg {
				t.Errorf("got %d %v, want 400 %s %q", status, out, tc.errcode, tc.msg)
			}
		})
	}
	// Preflight, wrong method, healthz.
	req, _ := http.NewRequest(http.MethodOptions, b.srv.URL+prefix+"/get_token", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Headers") == "" {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}
	resp, err = http.Get(b.srv.URL + prefix + "/sfu/get")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET /sfu/get: %d, want 405", resp.StatusCode)
	}
	resp, err = http.Get(b.srv.URL + prefix + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
	// What Element Call probes, and any other path under the prefix:
	// JSON 404s a browser on another origin can read, preflight included.
	for path, errcode := range map[string]string{"/delegate_delayed_leave": "M_UNRECOGNIZED", "/nope": "M_NOT_FOUND"} {
		status, out, hdr := b.post(t, path, map[string]any{})
		if status != 404 || out["errcode"] != errcode || hdr.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("POST %s: %d %v %v, want 404 %s with CORS", path, status, out, hdr, errcode)
		}
		req, _ := http.NewRequest(http.MethodOptions, b.srv.URL+prefix+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("OPTIONS %s: %d %v", path, resp.StatusCode, resp.Header)
		}
	}
	if got := metricValue(t, b.reg, "icebox_matrixrtc_tokens_refused_total", "sfu_get", "not_json"); got != 2 {
		t.Errorf("refused{sfu_get,not_json} = %v, want 2", got)
	}
}

// metricValue is the value of the one series of name in reg whose label
// values are values (in any order); 0 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(values) {
				continue
			}
			for _, l := range m.GetLabel() { // labels come sorted by name
				if !slices.Contains(values, l.GetValue()) {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
