package node_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

// authFromConfig is what icebox serve builds from the auth section (static
// tokens and the JWT secret), for BuildAuth.
func authFromConfig(c config.Config) (*httpapi.Authenticator, error) {
	var ac httpapi.AuthConfig
	for _, st := range c.Auth.StaticTokens {
		raw, err := hex.DecodeString(st.SHA256)
		if err != nil {
			return nil, err
		}
		ac.StaticTokens = append(ac.StaticTokens, httpapi.StaticToken{SHA256: [32]byte(raw), User: st.User, Admin: st.Admin})
	}
	secret, err := c.Auth.JWT.SecretValue()
	if err != nil {
		return nil, err
	}
	ac.JWTSecret = secret
	return httpapi.NewAuthenticator(ac)
}

func staticToken(token, user string) config.StaticToken {
	sum := sha256.Sum256([]byte(token))
	return config.StaticToken{SHA256: hex.EncodeToString(sum[:]), User: user, Admin: true}
}

// apiGet GETs path on the node's API with token and an Origin; it returns
// the status, the Access-Control-Allow-Origin header and the body.
func apiGet(t *testing.T, addr, method, path, token, origin string) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "GET")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), body
}

// TestNodeReloadConfig: SIGHUP applies the changed live keys of a
// reloaded configuration — a peer denied after the reload is refused to a
// live and a new allocation, the old static token is 401 and the new one
// 200, the log level drops to debug, the per-user bandwidth and CORS
// follow — while a changed listen address is named as needing a restart
// and not applied, and no secret reaches the log. An invalid configuration
// is then refused whole: the running one stays.
func TestNodeReloadConfig(t *testing.T) {
	const (
		oldToken  = "reload-old-token-0123456789"
		newToken  = "reload-new-token-9876543210"
		jwtSecret = "reload-jwt-secret-that-must-never-be-logged"
		origin    = "https://app.example.test"
	)
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	other, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("127.0.0.2 (loopback) is not usable: %v", err)
	}
	defer other.Close()

	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.Auth.StaticTokens = []config.StaticToken{staticToken(oldToken, "ops")}

	var mu sync.Mutex
	load := func() (config.Config, error) { return cfg, nil }
	logs := &syncBuffer{}
	level := node.NewLevelFilter(logs, zerolog.InfoLevel)
	logger := zerolog.New(level).Level(zerolog.DebugLevel)
	auth, err := authFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reload := make(chan struct{}, 1)
	n := nodetest.Start(t, cfg, node.Options{
		Logger: logger, Auth: auth, Reload: reload, BuildAuth: authFromConfig, LogLevel: level,
		LoadConfig: func() (config.Config, error) { mu.Lock(); defer mu.Unlock(); return load() },
	})
	httpAddr, udp := n.Addrs.HTTP, first(n.Addrs.TURNUDP)
	kr, err := credentials.NewKeyring([]credentials.Secret{{KID: "k1", Key: []byte(testSecret), Compat: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := kr.Mint(credentials.Subject{User: "alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, live := turnClient(t, udp, cred.Username, cred.Password)
	echo(t, live, peer)
	if code, _, _ := apiGet(t, httpAddr, http.MethodGet, "/calls/ice_servers", oldToken, ""); code != http.StatusOK {
		t.Fatalf("before the reload: the old token got %d", code)
	}
	logger.Debug().Msg("debug-before-reload")

	next := cfg
	next.TURN.DeniedPeers = []string{"127.0.0.1/32"}
	next.Auth.StaticTokens = []config.StaticToken{staticToken(newToken, "ops")}
	next.Auth.JWT.HS256Secret = jwtSecret
	next.Log.Level = "debug"
	next.TURN.Quotas.MaxBPSPerUser = 2_000_000
	next.TURN.BindingRate = 10
	next.HTTP.CORS.AllowedOrigins = []string{origin}
	next.HTTP.Listen = "127.0.0.1:1" // needs a restart
	mu.Lock()
	load = func() (config.Config, error) { return next, nil }
	mu.Unlock()
	reload <- struct{}{}
	poll(t, 10*time.Second, "the reload's summary", func() bool { return strings.Contains(logs.String(), "configuration reloaded") })

	// Peer policy: the live allocation's datagram to the now denied peer
	// goes first, a new allocation's to it next, an allowed peer's after
	// both; the denied peer got nothing.
	if _, err := live.WriteTo([]byte("to-denied"), peer.LocalAddr()); err != nil {
		t.Logf("live allocation WriteTo the denied peer: %v", err)
	}
	_, fresh := turnClient(t, udp, cred.Username, cred.Password)
	if _, err := fresh.WriteTo([]byte("to-denied"), peer.LocalAddr()); err != nil {
		t.Logf("new allocation WriteTo the denied peer: %v", err)
	}
	echo(t, fresh, other)
	_ = peer.SetReadDeadline(time.Now())
	if n, _, err := peer.ReadFrom(make([]byte, 64)); err == nil {
		t.Errorf("the peer denied after the reload still got %d bytes", n)
	}

	// Auth: the old token is refused, the new one works.
	if code, _, _ := apiGet(t, httpAddr, http.MethodGet, "/calls/ice_servers", oldToken, ""); code != http.StatusUnauthorized {
		t.Errorf("after the reload: the old token got %d, want 401", code)
	}
	if code, _, _ := apiGet(t, httpAddr, http.MethodGet, "/calls/ice_servers", newToken, ""); code != http.StatusOK {
		t.Errorf("after the reload: the new token got %d, want 200", code)
	}
	// Bandwidth: the per-user default follows.
	code, _, body := apiGet(t, httpAddr, http.MethodGet, "/admin/users/alice/bandwidth", newToken, "")
	var bw struct {
		Default int64 `json:"default_max_bps"`
	}
	if err := json.Unmarshal(body, &bw); code != http.StatusOK || err != nil || bw.Default != 2_000_000 {
		t.Errorf("GET /admin/users/alice/bandwidth: %d %s, want default_max_bps 2000000", code, body)
	}
	// CORS: a preflight from the newly allowed origin, without a token.
	if code, acao, _ := apiGet(t, httpAddr, http.MethodOptions, "/_matrix/client/v3/voip/turnServer", "", origin); code != http.StatusNoContent || acao != origin {
		t.Errorf("preflight from %s: %d, Access-Control-Allow-Origin %q", origin, code, acao)
	}
	// Log level.
	logger.Debug().Msg("debug-after-reload")
	out := logs.String()
	if strings.Contains(out, "debug-before-reload") || !strings.Contains(out, "debug-after-reload") {
		t.Errorf("log level: debug lines before/after the reload written = %v/%v, want false/true",
			strings.Contains(out, "debug-before-reload"), strings.Contains(out, "debug-after-reload"))
	}
	summary := reloadSummary(t, out)
	t.Logf("reload summary: applied %q, needs_restart %q", summary.Applied, summary.Restart)
	for _, k := range []string{"turn.denied_peers", "auth.static_tokens", "auth.jwt.hs256_secret", "log.level",
		"turn.quotas.max_bps_per_user", "http.cors.allowed_origins", "turn.binding_rate"} {
		if !contains(summary.Applied, k) {
			t.Errorf("applied %q: %s missing", summary.Applied, k)
		}
	}
	if len(summary.Restart) != 1 || summary.Restart[0] != "http.listen" {
		t.Errorf("needs_restart %q, want [http.listen]", summary.Restart)
	}
	// The listen address did not change: everything above was served on
	// the old one.
	for _, secret := range []string{jwtSecret, newToken, oldToken} {
		if strings.Contains(out, secret) {
			t.Errorf("the log holds a secret (%.8s…)", secret)
		}
	}

	// An invalid file is refused whole.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("turn:\n  denied_peers: [not-an-address]\nlog:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	load = func() (config.Config, error) { return config.Load(bad, nil) }
	mu.Unlock()
	reload <- struct{}{}
	poll(t, 10*time.Second, "the refusal", func() bool { return strings.Contains(logs.String(), "the configuration is invalid") })
	if code, _, _ := apiGet(t, httpAddr, http.MethodGet, "/calls/ice_servers", newToken, ""); code != http.StatusOK {
		t.Errorf("after the refused reload: the token in effect got %d, want 200", code)
	}
	if level.Level() != zerolog.DebugLevel {
		t.Errorf("after the refused reload: log level %s, want debug still", level.Level())
	}
	if !strings.Contains(logs.String(), "turn.denied_peers") {
		t.Errorf("the refusal does not name the bad key")
	}
}

// TestNodeReloadJWTSecretFile: a JWT secret file rewritten under the same
// name is read again on SIGHUP, as the keyring's files are: a JWT of the
// new secret is accepted, one of the old refused.
func TestNodeReloadJWTSecretFile(t *testing.T) {
	oldSecret, newSecret := "jwt-file-old-secret-0123456789abcdef", "jwt-file-new-secret-0123456789abcdef"
	file := filepath.Join(t.TempDir(), "jwt")
	if err := os.WriteFile(file, []byte(oldSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.Auth.JWT.HS256SecretFile = file
	auth, err := authFromConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	reload := make(chan struct{}, 1)
	n := nodetest.Start(t, cfg, node.Options{
		Logger: zerolog.New(logs), Auth: auth, Reload: reload, BuildAuth: authFromConfig,
		LoadConfig: func() (config.Config, error) { return cfg, nil },
	})
	mint := func(secret string) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if code, _, _ := apiGet(t, n.Addrs.HTTP, http.MethodGet, "/calls/ice_servers", mint(oldSecret), ""); code != http.StatusOK {
		t.Fatalf("before the reload: a JWT of the file's secret got %d", code)
	}
	if err := os.WriteFile(file, []byte(newSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reload <- struct{}{}
	poll(t, 10*time.Second, "the reload's summary", func() bool { return strings.Contains(logs.String(), "configuration reloaded") })
	if code, _, _ := apiGet(t, n.Addrs.HTTP, http.MethodGet, "/calls/ice_servers", mint(newSecret), ""); code != http.StatusOK {
		t.Errorf("after the reload: a JWT of the new secret got %d, want 200", code)
	}
	if code, _, _ := apiGet(t, n.Addrs.HTTP, http.MethodGet, "/calls/ice_servers", mint(oldSecret), ""); code != http.StatusUnauthorized {
		t.Errorf("after the reload: a JWT of the old secret got %d, want 401", code)
	}
}

type reloadLine struct {
	Message string   `json:"message"`
	Applied []string `json:"applied"`
	Restart []string `json:"needs_restart"`
}

// reloadSummary finds the reload's summary line in the JSON log.
func reloadSummary(t *testing.T, log string) reloadLine {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var l reloadLine
		if json.Unmarshal([]byte(line), &l) == nil && strings.Contains(l.Message, "configuration reloaded") {
			return l
		}
	}
	t.Fatalf("no reload summary in the log:\n%s", log)
	return reloadLine{}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
