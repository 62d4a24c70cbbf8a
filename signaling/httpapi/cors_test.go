package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/icebox-voip/icebox/store"
)

const (
	allowedOrigin = "https://app.example.test"
	otherOrigin   = "https://evil.example.test"
)

// corsDo sends method path with an Origin (and a token, if any) and returns
// the response, body closed.
func corsDo(t *testing.T, e *apiEnv, method, path, origin, token string, hdr map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp
}

func preflight(t *testing.T, e *apiEnv, path, origin string) *http.Response {
	t.Helper()
	return corsDo(t, e, http.MethodOptions, path, origin, "", map[string]string{
		"Access-Control-Request-Method":  "GET",
		"Access-Control-Request-Headers": "authorization",
	})
}

// wsDial opens /ws as alice with an Origin header; it returns the HTTP
// status of a refused upgrade (0 when it connected).
func wsDial(t *testing.T, e *apiEnv, origin string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/ws"
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{
		"Origin": {origin}, "Authorization": {"Bearer " + userToken("alice")}}})
	if err != nil {
		if resp == nil {
			t.Fatalf("dial /ws from %s: %v", origin, err)
		}
		return resp.StatusCode
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	return 0
}

func TestCORSAllowedOrigin(t *testing.T) {
	e := newAPIEnvWith(t, func(c *Config, _ *store.Store) { c.CORSOrigins = []string{allowedOrigin} })
	for _, path := range []string{"/calls/ice_servers", "/_matrix/client/v3/voip/turnServer", "/calls/initiate"} {
		resp := preflight(t, e, path, allowedOrigin)
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("preflight %s from %s without a token: %d, want 204", path, allowedOrigin, resp.StatusCode)
		}
		h := resp.Header
		if got := h.Get("Access-Control-Allow-Origin"); got != allowedOrigin {
			t.Errorf("preflight %s: Access-Control-Allow-Origin %q, want %q", path, got, allowedOrigin)
		}
		if got := h.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "Authorization") || !strings.Contains(got, "Content-Type") {
			t.Errorf("preflight %s: Access-Control-Allow-Headers %q, want Authorization and Content-Type", path, got)
		}
		if got := h.Get("Access-Control-Allow-Methods"); !strings.Contains(got, "GET") || !strings.Contains(got, "POST") {
			t.Errorf("preflight %s: Access-Control-Allow-Methods %q", path, got)
		}
		if got := h.Get("Access-Control-Allow-Credentials"); got != "" {
			t.Errorf("preflight %s: Access-Control-Allow-Credentials %q, want none", path, got)
		}
		if resp := preflight(t, e, path, otherOrigin); resp.Header.Get("Access-Control-Allow-Origin") != "" ||
			resp.Header.Get("Access-Control-Allow-Methods") != "" {
			t.Errorf("preflight %s from %s: CORS headers %v, want none", path, otherOrigin, resp.Header)
		}
	}
	// The request itself, with the token, from the allowed origin.
	for _, path := range []string{"/calls/ice_servers", "/_matrix/client/v3/voip/turnServer"} {
		resp := corsDo(t, e, http.MethodGet, path, allowedOrigin, userToken("alice"), nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != allowedOrigin {
			t.Errorf("GET %s from %s: %d, Access-Control-Allow-Origin %q; want 200 and the origin", path, allowedOrigin,
				resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		resp = corsDo(t, e, http.MethodGet, path, otherOrigin, userToken("alice"), nil)
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("GET %s from %s: Access-Control-Allow-Origin %q, want none", path, otherOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
		}
	}
	// The WebSocket checks the same list.
	if code := wsDial(t, e, allowedOrigin); code != 0 {
		t.Errorf("/ws from %s: refused with %d, want connected", allowedOrigin, code)
	}
	if code := wsDial(t, e, otherOrigin); code != http.StatusForbidden {
		t.Errorf("/ws from %s: %d, want 403", otherOrigin, code)
	}

	// A reload that drops the origin takes effect for the next request.
	e.api.SetCORS(nil)
	if resp := preflight(t, e, "/calls/ice_servers", allowedOrigin); resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("after SetCORS(nil): preflight from %s still allowed", allowedOrigin)
	}
	if code := wsDial(t, e, allowedOrigin); code != http.StatusForbidden {
		t.Errorf("after SetCORS(nil): /ws from %s: %d, want 403", allowedOrigin, code)
	}
	e.api.SetCORS([]string{"*"})
	if resp := preflight(t, e, "/calls/ice_servers", otherOrigin); resp.Header.Get("Access-Control-Allow-Origin") == "" {
		t.Errorf(`with "*": preflight from %s not allowed`, otherOrigin)
	}
	if code := wsDial(t, e, otherOrigin); code != 0 {
		t.Errorf(`with "*": /ws from %s: %d, want connected`, otherOrigin, code)
	}
}

func TestCORSDefaultSameOriginOnly(t *testing.T) {
	e := newAPIEnv(t)
	resp := preflight(t, e, "/calls/ice_servers", allowedOrigin)
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("no origins configured: preflight answered Access-Control-Allow-Origin %q", got)
	}
	if code := wsDial(t, e, allowedOrigin); code != http.StatusForbidden {
		t.Errorf("no origins configured: /ws from %s: %d, want 403", allowedOrigin, code)
	}
}

// A mounted service (the MatrixRTC authorization service) answers its own
// CORS; the API's must not add a second Access-Control-Allow-Origin.
func TestCORSLeavesMountsAlone(t *testing.T) {
	mount := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		w.WriteHeader(http.StatusOK)
	})
	e := newAPIEnvWith(t, func(c *Config, _ *store.Store) {
		c.CORSOrigins = []string{allowedOrigin}
		c.Mounts = map[string]http.Handler{"/livekit/jwt": mount}
	})
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		resp := corsDo(t, e, method, "/livekit/jwt/sfu/get", allowedOrigin, "", nil)
		if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "*" {
			t.Errorf("%s on the mount: Access-Control-Allow-Origin %q, want the mount's own [*]", method, got)
		}
	}
}
