package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestSIGHUPReloadsConfig: the real process, its config file edited and
// SIGHUP sent — the static token swaps (old 401, new 200), the log level
// drops to debug, a browser origin is allowed (CORS preflight without a
// token, /ws from it), the changed TURN listen address is named as needing
// a restart and not applied, and the inline JWT secret is never logged.
func TestSIGHUPReloadsConfig(t *testing.T) {
	t.Parallel()
	const (
		oldToken  = "sighup-old-token-0123456789"
		newToken  = "sighup-new-token-9876543210"
		jwtSecret = "sighup-jwt-secret-never-in-the-log-0123"
		origin    = "https://app.example.test"
	)
	hash := func(tok string) string { s := sha256.Sum256([]byte(tok)); return hex.EncodeToString(s[:]) }
	dir := t.TempDir()
	base := testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret})
	in := startIceboxProcess(t, base+"auth:\n  static_tokens: [{sha256: "+hash(oldToken)+", user: alice}]\n")
	if code, body := httpGet(t, in.httpURL("/calls/ice_servers"), oldToken); code != http.StatusOK {
		t.Fatalf("before the reload: %d %s", code, body)
	}

	next := strings.Replace(base, "level: info", "level: debug", 1)
	next = strings.Replace(next, `udp: ["127.0.0.1:`+phTURNPort+`"]`, `udp: ["127.0.0.1:`+phTURNPort+`", "127.0.0.1:`+strconv.Itoa(freePort(t))+`"]`, 1)
	next += "  cors: {allowed_origins: [\"" + origin + "\"]}\n"
	next += "auth:\n  static_tokens: [{sha256: " + hash(newToken) + ", user: alice}]\n  jwt: {hs256_secret: " + jwtSecret + "}\n"
	next = strings.NewReplacer(phTURNPort, strconv.Itoa(in.turnPort), phTLSPort, strconv.Itoa(in.tlsPort),
		phHTTPPort, strconv.Itoa(in.httpPort)).Replace(next)
	if err := os.WriteFile(in.cfgPath, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return strings.Contains(in.out.String(), "configuration reloaded") }) {
		t.Fatalf("no reload summary after SIGHUP:\n%s", in.out.String())
	}

	if code, _ := httpGet(t, in.httpURL("/calls/ice_servers"), oldToken); code != http.StatusUnauthorized {
		t.Errorf("after the reload the old token got %d, want 401", code)
	}
	if code, body := httpGet(t, in.httpURL("/_matrix/client/v3/voip/turnServer"), newToken); code != http.StatusOK {
		t.Errorf("after the reload the new token got %d %s, want 200", code, body)
	}
	req, _ := http.NewRequest(http.MethodOptions, in.httpURL("/_matrix/client/v3/voip/turnServer"), nil)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Errorf("preflight from %s: %d, Access-Control-Allow-Origin %q", origin, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	// /ws from the new origin, hung up without a close handshake: the
	// server logs the broken socket at debug level (the hub's reader sees
	// the client gone; the request's context, which net/http may end first,
	// is not the session's).
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	ws, _, err := websocket.Dial(ctx, "ws://"+loopback(in.httpPort)+"/ws?access_token="+newToken,
		&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
	cancel()
	if err != nil {
		t.Errorf("/ws from %s after the reload: %v", origin, err)
	} else {
		_ = ws.CloseNow()
	}

	out := in.out.String()
	var summary struct {
		Level   string   `json:"level"`
		Applied []string `json:"applied"`
		Restart []string `json:"needs_restart"`
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "configuration reloaded") {
			if err := json.Unmarshal([]byte(line), &summary); err != nil {
				t.Fatalf("summary line %q: %v", line, err)
			}
		}
	}
	t.Logf("reload: applied %q, needs_restart %q", summary.Applied, summary.Restart)
	if !slices.Equal(summary.Restart, []string{"turn.listen.udp"}) {
		t.Errorf("needs_restart %q, want [turn.listen.udp]", summary.Restart)
	}
	for _, k := range []string{"log.level", "http.cors.allowed_origins", "auth.static_tokens", "auth.jwt.hs256_secret"} {
		if !slices.Contains(summary.Applied, k) {
			t.Errorf("applied %q: %s missing", summary.Applied, k)
		}
	}
	// The dropped WebSocket is logged at debug level.
	if !waitFor(10*time.Second, func() bool { return strings.Contains(in.out.String(), `"level":"debug"`) }) {
		t.Errorf("no debug line after log.level became debug")
	}
	if strings.Contains(out, jwtSecret) {
		t.Errorf("the JWT secret is in the log")
	}
}
