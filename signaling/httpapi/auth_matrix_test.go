package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	bobMatrixToken = "mx_bob_Zm9vYmFyYmF6cXV4MTIz"
	bobMatrixID    = "@bob:hs.test"
)

// fakeHomeserver serves /_matrix/client/v3/account/whoami for the tokens in
// users, counting the requests; down makes it answer 502.
type fakeHomeserver struct {
	*httptest.Server
	mu    sync.Mutex
	users map[string]string // token → user ID
	down  bool
	hits  atomic.Int64
}

func newFakeHomeserver(t *testing.T) *fakeHomeserver {
	t.Helper()
	hs := &fakeHomeserver{users: map[string]string{bobMatrixToken: bobMatrixID}}
	hs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.hits.Add(1)
		if r.URL.Path != "/_matrix/client/v3/account/whoami" {
			http.NotFound(w, r)
			return
		}
		hs.mu.Lock()
		defer hs.mu.Unlock()
		if hs.down {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		user, ok := hs.users[tok]
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"user_id": user})
	}))
	t.Cleanup(hs.Close)
	return hs
}

func (hs *fakeHomeserver) revoke(token string) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.users, token)
}

func (hs *fakeHomeserver) setDown(down bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.down = down
}

// whoamiClient is a minimal MatrixWhoami client for hs, like the one
// cmd/icebox builds from matrix.TokenChecker (which never errs with the token).
// Its errors deliberately hold the token: Authenticate must not pass them on.
func whoamiClient(base string) func(ctx context.Context, token string) (string, error) {
	return func(ctx context.Context, token string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_matrix/client/v3/account/whoami", nil)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", fmt.Errorf("whoami with %s: %w", token, err)
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusUnauthorized, http.StatusForbidden:
			return "", ErrMatrixTokenInvalid
		default:
			return "", fmt.Errorf("whoami with %s: status %d", token, resp.StatusCode)
		}
		var body struct {
			UserID string `json:"user_id"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return "", err
		}
		return body.UserID, nil
	}
}

// fakeClock is a settable Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// matrixAuthConfig is testAuthConfig with Matrix tokens checked with hs.
func matrixAuthConfig(hs *fakeHomeserver, clock *fakeClock) AuthConfig {
	cfg := testAuthConfig()
	cfg.MatrixWhoami = whoamiClient(hs.URL)
	cfg.MatrixCache = time.Minute
	cfg.MatrixNegativeCache = 10 * time.Second
	cfg.Now = clock.Now
	return cfg
}

// matrixResult is one request's outcome through Middleware.
type matrixResult struct {
	status int
	code   string
	msg    string
	id     Identity
	header http.Header
	body   string
}

func doMatrixRequest(t *testing.T, cfg AuthConfig, token string) matrixResult {
	t.Helper()
	var got seen
	e := newTestEcho(t, cfg, &got)
	return serveMatrix(t, e.ServeHTTP, &got, token)
}

func serveMatrix(t *testing.T, serve func(http.ResponseWriter, *http.Request), got *seen, token string) matrixResult {
	t.Helper()
	*got = seen{}
	rec := httptest.NewRecorder()
	serve(rec, req{auth: []string{"Bearer " + token}}.build())
	r := matrixResult{status: rec.Code, id: got.id, header: rec.Header(), body: rec.Body.String()}
	if rec.Code != http.StatusNoContent {
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("body %q is not JSON: %v", rec.Body, err)
		}
		r.code, r.msg = body.Error.Code, body.Error.Message
	}
	// The token is never echoed, whatever the outcome.
	if strings.Contains(r.body, token) {
		t.Errorf("body %s contains the token", r.body)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			if strings.Contains(v, token) {
				t.Errorf("header %s: %q contains the token", k, v)
			}
		}
	}
	return r
}

// matrixServer is one Authenticator behind echo, reused across requests so
// its cache carries over.
func matrixServer(t *testing.T, cfg AuthConfig) func(token string) matrixResult {
	t.Helper()
	var got seen
	e := newTestEcho(t, cfg, &got)
	return func(token string) matrixResult { return serveMatrix(t, e.ServeHTTP, &got, token) }
}

func TestMatrixTokenValidAndCached(t *testing.T) {
	hs := newFakeHomeserver(t)
	clock := &fakeClock{t: testNow}
	do := matrixServer(t, matrixAuthConfig(hs, clock))

	for i := range 5 {
		r := do(bobMatrixToken)
		if r.status != http.StatusNoContent {
			t.Fatalf("request %d: status %d %s", i, r.status, r.body)
		}
		if want := (Identity{User: bobMatrixID, Method: MethodMatrix}); r.id != want {
			t.Fatalf("identity = %+v, want %+v (no admin, no expiry)", r.id, want)
		}
	}
	if n := hs.hits.Load(); n != 1 {
		t.Errorf("homeserver asked %d times for 5 requests, want 1 (cached)", n)
	}

	// The other methods still work, and never reach the homeserver.
	if r := do(aliceToken); r.status != http.StatusNoContent || r.id.Method != MethodStatic {
		t.Errorf("static token: %d %+v", r.status, r.id)
	}
	if r := do(signJWT(t, jwt.SigningMethodHS256, testSecret, claims(nil))); r.status != http.StatusNoContent || r.id.Method != MethodJWT {
		t.Errorf("JWT: %d %+v", r.status, r.id)
	}
	// A JWT-shaped token that fails is a bad JWT, not a Matrix token.
	if r := do(signJWT(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), claims(nil))); r.status != http.StatusUnauthorized {
		t.Errorf("badly signed JWT: %d %s", r.status, r.body)
	}
	if n := hs.hits.Load(); n != 1 {
		t.Errorf("homeserver asked %d times, want 1: static tokens and JWTs must not reach it", n)
	}
}

func TestMatrixTokenCacheExpires(t *testing.T) {
	hs := newFakeHomeserver(t)
	clock := &fakeClock{t: testNow}
	do := matrixServer(t, matrixAuthConfig(hs, clock))

	if r := do(bobMatrixToken); r.status != http.StatusNoContent {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	hs.revoke(bobMatrixToken) // logged out

	clock.Advance(59 * time.Second) // still cached
	if r := do(bobMatrixToken); r.status != http.StatusNoContent {
		t.Fatalf("within the cache time: status %d %s", r.status, r.body)
	}
	if n := hs.hits.Load(); n != 1 {
		t.Errorf("homeserver asked %d times within the cache time, want 1", n)
	}

	clock.Advance(2 * time.Second) // expired: asked again, and refused
	r := do(bobMatrixToken)
	if r.status != http.StatusUnauthorized || r.code != "unauthorized" || r.msg != "invalid token" {
		t.Fatalf("revoked token after the cache time: %d %q %q", r.status, r.code, r.msg)
	}
	if h := r.header.Get("WWW-Authenticate"); h != `Bearer realm="icebox", error="invalid_token"` {
		t.Errorf("WWW-Authenticate = %q", h)
	}
	if n := hs.hits.Load(); n != 2 {
		t.Errorf("homeserver asked %d times, want 2", n)
	}
}

func TestMatrixTokenNegativeCache(t *testing.T) {
	hs := newFakeHomeserver(t)
	clock := &fakeClock{t: testNow}
	do := matrixServer(t, matrixAuthConfig(hs, clock))
	const madeUp = "mx_madeup_0123456789abcdef"

	for i := range 3 {
		if r := do(madeUp); r.status != http.StatusUnauthorized || r.msg != "invalid token" {
			t.Fatalf("request %d: %d %q", i, r.status, r.msg)
		}
	}
	if n := hs.hits.Load(); n != 1 {
		t.Errorf("homeserver asked %d times for 3 refused requests, want 1 (negative cache)", n)
	}

	// The token becomes valid (say, the homeserver was restored from a
	// backup): refused until the negative cache expires, then accepted.
	hs.mu.Lock()
	hs.users[madeUp] = "@carol:hs.test"
	hs.mu.Unlock()
	clock.Advance(9 * time.Second)
	if r := do(madeUp); r.status != http.StatusUnauthorized {
		t.Fatalf("within the negative cache time: %d", r.status)
	}
	clock.Advance(2 * time.Second)
	if r := do(madeUp); r.status != http.StatusNoContent || r.id.User != "@carol:hs.test" {
		t.Fatalf("after the negative cache time: %d %+v", r.status, r.id)
	}
	if n := hs.hits.Load(); n != 2 {
		t.Errorf("homeserver asked %d times, want 2", n)
	}
}

func TestMatrixTokenNoCache(t *testing.T) {
	hs := newFakeHomeserver(t)
	clock := &fakeClock{t: testNow}
	cfg := matrixAuthConfig(hs, clock)
	cfg.MatrixCache, cfg.MatrixNegativeCache = 0, 0
	do := matrixServer(t, cfg)
	for range 3 {
		if r := do(bobMatrixToken); r.status != http.StatusNoContent {
			t.Fatalf("status %d", r.status)
		}
		if r := do("mx_madeup_0123456789abcdef"); r.status != http.StatusUnauthorized {
			t.Fatalf("status %d", r.status)
		}
	}
	if n := hs.hits.Load(); n != 6 {
		t.Errorf("homeserver asked %d times with caching off, want 6", n)
	}
}

func TestMatrixHomeserverUnavailable(t *testing.T) {
	hs := newFakeHomeserver(t)
	clock := &fakeClock{t: testNow}
	do := matrixServer(t, matrixAuthConfig(hs, clock))

	hs.setDown(true)
	for i := range 2 {
		r := do(bobMatrixToken)
		if r.status != http.StatusServiceUnavailable || r.code != "upstream_unavailable" {
			t.Fatalf("request %d with the homeserver failing: %d %q %q", i, r.status, r.code, r.msg)
		}
		if r.header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		if r.header.Get("WWW-Authenticate") != "" {
			t.Error("503 with a WWW-Authenticate challenge: the token was not refused")
		}
	}
	if n := hs.hits.Load(); n != 2 {
		t.Errorf("homeserver asked %d times for 2 requests while failing, want 2 (not cached)", n)
	}
	hs.setDown(false)
	if r := do(bobMatrixToken); r.status != http.StatusNoContent || r.id.User != bobMatrixID {
		t.Fatalf("after the homeserver recovered: %d %s", r.status, r.body)
	}

	// Not reachable at all.
	cfg := matrixAuthConfig(hs, clock)
	cfg.MatrixWhoami = whoamiClient("http://127.0.0.1:1")
	r := doMatrixRequest(t, cfg, bobMatrixToken)
	if r.status != http.StatusServiceUnavailable || r.code != "upstream_unavailable" {
		t.Fatalf("unreachable homeserver: %d %q %q", r.status, r.code, r.msg)
	}

	// The error itself never holds the token (the client's error did).
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.AuthenticateContext(context.Background(), bobMatrixToken)
	if !IsUpstreamUnavailable(err) {
		t.Fatalf("AuthenticateContext() error = %v, want upstream unavailable", err)
	}
	if strings.Contains(err.Error(), bobMatrixToken) || strings.Contains(err.Error(), "127.0.0.1") {
		t.Errorf("error %q holds the token or the homeserver's address", err)
	}
}

func TestMatrixTokenBadUserID(t *testing.T) {
	cfg := testAuthConfig()
	cfg.MatrixWhoami = func(context.Context, string) (string, error) { return "", nil }
	if r := doMatrixRequest(t, cfg, bobMatrixToken); r.status != http.StatusServiceUnavailable {
		t.Errorf("empty user ID from the homeserver: %d, want 503", r.status)
	}
}

func TestMatrixTokenNotSentWhenNotAToken(t *testing.T) {
	var calls atomic.Int64
	cfg := testAuthConfig()
	cfg.MatrixWhoami = func(context.Context, string) (string, error) { calls.Add(1); return bobMatrixID, nil }
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"mx\x7fbob", "mx\u00e9bob", aliceToken, signJWT(t, jwt.SigningMethodHS256, testSecret, claims(nil))} {
		if id, _ := a.Authenticate(tok); id.Method == MethodMatrix {
			t.Errorf("%q authenticated as a Matrix token", tok)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("MatrixWhoami called %d times, want 0", n)
	}
	// Without MatrixWhoami, a Matrix-looking token is simply invalid.
	cfg.MatrixWhoami = nil
	a, _ = NewAuthenticator(cfg)
	if _, err := a.Authenticate(bobMatrixToken); err == nil || IsUpstreamUnavailable(err) {
		t.Errorf("Matrix tokens off: error = %v, want invalid token", err)
	}
}

func TestMatrixTokenConcurrentLookupsCollapse(t *testing.T) {
	var calls atomic.Int64
	release := make(chan struct{})
	cfg := testAuthConfig()
	cfg.MatrixCache = 0 // so only the collapsing, not the cache, can save calls
	cfg.MatrixWhoami = func(ctx context.Context, token string) (string, error) {
		calls.Add(1)
		select {
		case <-release:
			return bobMatrixID, nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			id, err := a.AuthenticateContext(context.Background(), bobMatrixToken)
			if err == nil && id.User != bobMatrixID {
				err = fmt.Errorf("user %q", id.User)
			}
			errs <- err
		})
	}
	time.Sleep(200 * time.Millisecond) // let them all queue behind the first
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if c := calls.Load(); c != 1 {
		t.Errorf("MatrixWhoami called %d times for %d concurrent requests, want 1", c, n)
	}
}

func TestMatrixTokenCallerCancel(t *testing.T) {
	// A client that gives up gets an error, and does not fail the lookup
	// that others share.
	release := make(chan struct{})
	var sawCancel atomic.Bool
	cfg := testAuthConfig()
	cfg.MatrixCache = time.Minute
	cfg.MatrixWhoami = func(ctx context.Context, token string) (string, error) {
		select {
		case <-release:
			return bobMatrixID, nil
		case <-ctx.Done():
			sawCancel.Store(true)
			return "", ctx.Err()
		}
	}
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := a.AuthenticateContext(ctx, bobMatrixToken); done <- err }()
	second := make(chan error, 1)
	go func() {
		id, err := a.AuthenticateContext(context.Background(), bobMatrixToken)
		if err == nil && id.User != bobMatrixID {
			err = errors.New("wrong user")
		}
		second <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-done; err == nil {
		t.Error("cancelled request authenticated")
	}
	close(release)
	if err := <-second; err != nil {
		t.Errorf("the other request: %v", err)
	}
	if sawCancel.Load() {
		t.Error("one client's cancellation cancelled the shared lookup")
	}
}

func TestMatrixCacheBounded(t *testing.T) {
	clock := &fakeClock{t: testNow}
	m := newMatrixTokens(AuthConfig{MatrixWhoami: func(context.Context, string) (string, error) { return "", nil }}, clock.Now)
	m.max = 3
	key := func(i int) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "token-%d", i)) }
	for i := range 5 {
		m.store(key(i), fmt.Sprintf("@u%d:hs.test", i), time.Minute)
	}
	if n := m.len(); n != 3 {
		t.Fatalf("cache holds %d entries, want 3", n)
	}
	for i := range 5 {
		_, ok := m.lookup(key(i))
		if want := i >= 2; ok != want {
			t.Errorf("entry %d cached = %v, want %v (oldest evicted first)", i, ok, want)
		}
	}
	if maxMatrixCacheEntries < 1000 {
		t.Errorf("maxMatrixCacheEntries = %d", maxMatrixCacheEntries)
	}
}

func TestNewAuthenticatorMatrixCache(t *testing.T) {
	cfg := testAuthConfig()
	cfg.MatrixWhoami = func(context.Context, string) (string, error) { return "", nil }
	cfg.MatrixCache = -time.Second
	if _, err := NewAuthenticator(cfg); err == nil {
		t.Error("negative cache time accepted")
	}
}
