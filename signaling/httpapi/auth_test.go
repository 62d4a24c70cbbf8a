package httpapi

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"
)

var (
	testNow    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testSecret = []byte("0123456789abcdef0123456789abcdef-jwt-test")
)

const (
	aliceToken = "st-alice-3f9c1a7e5b2d4c6f8a0e"
	rootToken  = "st-root-9b8a7c6d5e4f3a2b1c0d"
)

// testAuthConfig is the configuration most cases use: two static tokens and
// JWTs with every check on.
func testAuthConfig() AuthConfig {
	return AuthConfig{
		StaticTokens: []StaticToken{
			{SHA256: sha256.Sum256([]byte(aliceToken)), User: "@alice:voip.test"},
			{SHA256: sha256.Sum256([]byte(rootToken)), User: "root", Admin: true},
		},
		JWTSecret:     testSecret,
		JWTIssuer:     "https://app.voip.test",
		JWTAudience:   "icebox",
		JWTAdminClaim: "icebox_admin",
		JWTMaxTTL:     24 * time.Hour,
		Now:           func() time.Time { return testNow },
	}
}

// claims returns valid JWT claims for user bob, changed by the edits: a nil
// value deletes the claim.
func claims(edits jwt.MapClaims) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "bob",
		"iss": "https://app.voip.test",
		"aud": "icebox",
		"iat": testNow.Unix(),
		"exp": testNow.Add(time.Hour).Unix(),
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func signJWT(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forgeJWT builds a token with any header, HMAC-SHA256-signed with the real
// secret: what an attacker tries when they hope the server trusts the header.
func forgeJWT(t *testing.T, header map[string]any, c jwt.MapClaims) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(header) + "." + enc(c)
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// seen is what the test route saw of an authenticated request.
type seen struct {
	id          Identity
	ok          bool
	subprotocol string
}

// newTestEcho serves /whoami behind Middleware and /admin behind
// RequireAdmin too, recording what the handler saw in *got. Errors are
// rendered by asAPIError, as Server.handleError does.
func newTestEcho(t *testing.T, cfg AuthConfig, got *seen) *echo.Echo {
	t.Helper()
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatalf("NewAuthenticator() error: %v", err)
	}
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		ae := asAPIError(err)
		if err := c.JSON(ae.Status, map[string]*Error{"error": ae}); err != nil {
			t.Errorf("writing error: %v", err)
		}
	}
	handler := func(c echo.Context) error {
		got.id, got.ok = IdentityFrom(c)
		got.subprotocol = SubprotocolFrom(c)
		return c.NoContent(http.StatusNoContent)
	}
	g := e.Group("", a.Middleware())
	g.GET("/whoami", handler)
	g.POST("/whoami", handler)
	g.GET("/admin", handler, RequireAdmin)
	return e
}

// req describes a request; secrets are strings that must appear nowhere in
// the response.
type req struct {
	method   string // default GET
	path     string // default /whoami
	auth     []string
	protocol string // Sec-WebSocket-Protocol
	query    string // access_token
	upgrade  bool
}

func (r req) build() *http.Request {
	method, path := r.method, r.path
	if method == "" {
		method = http.MethodGet
	}
	if path == "" {
		path = "/whoami"
	}
	if r.query != "" {
		path += "?access_token=" + url.QueryEscape(r.query)
	}
	hr := httptest.NewRequest(method, path, nil)
	for _, a := range r.auth {
		hr.Header.Add("Authorization", a)
	}
	if r.upgrade {
		hr.Header.Set("Connection", "Upgrade")
		hr.Header.Set("Upgrade", "websocket")
		hr.Header.Set("Sec-WebSocket-Version", "13")
		hr.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	if r.protocol != "" {
		hr.Header.Set("Sec-WebSocket-Protocol", r.protocol)
	}
	return hr
}

func TestMiddleware(t *testing.T) {
	jwtOK := func(t *testing.T) string { return signJWT(t, jwt.SigningMethodHS256, testSecret, claims(nil)) }
	hs256 := func(edits jwt.MapClaims) func(t *testing.T) string {
		return func(t *testing.T) string { return signJWT(t, jwt.SigningMethodHS256, testSecret, claims(edits)) }
	}
	static := func(s string) func(*testing.T) string { return func(*testing.T) string { return s } }
	bearer := func(tok string) []string { return []string{"Bearer " + tok} }

	tests := []struct {
		name    string
		cfg     func(c *AuthConfig) // changes to testAuthConfig
		token   func(t *testing.T) string
		req     func(tok string) req
		want    *Identity // nil: want an error
		wantSub string    // want SubprotocolFrom; "$TOKEN" is replaced
		status  int
		code    string
		msg     string
		wwwAuth string // want WWW-Authenticate
	}{
		// Static tokens.
		{name: "static token", token: static(aliceToken), req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "@alice:voip.test", Method: MethodStatic}},
		{name: "static admin token", token: static(rootToken), req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "root", Admin: true, Method: MethodStatic}},
		{name: "scheme is case-insensitive", token: static(aliceToken), req: func(tok string) req { return req{auth: []string{"bearer " + tok}} },
			want: &Identity{User: "@alice:voip.test", Method: MethodStatic}},
		{name: "wrong token", token: static("st-alice-3f9c1a7e5b2d4c6f8a0f"), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token", wwwAuth: `Bearer realm="icebox", error="invalid_token"`},
		{name: "token prefix", token: static(aliceToken[:10]), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "oversized token", token: static(strings.Repeat("a", maxTokenLen+1)), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "no method configured", cfg: func(c *AuthConfig) { *c = AuthConfig{} }, token: static(aliceToken),
			req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized", msg: "invalid token"},

		// The header itself.
		{name: "missing header", token: static(""), req: func(string) req { return req{} },
			status: 401, code: "unauthorized", msg: "missing bearer token", wwwAuth: `Bearer realm="icebox"`},
		{name: "basic auth", token: static(base64.StdEncoding.EncodeToString([]byte("alice:hunter2hunter2"))),
			req:    func(tok string) req { return req{auth: []string{"Basic " + tok}} },
			status: 401, code: "unauthorized", msg: "malformed Authorization header", wwwAuth: `Bearer realm="icebox", error="invalid_request"`},
		{name: "bearer without token", token: static(""), req: func(string) req { return req{auth: []string{"Bearer"}} },
			status: 401, code: "unauthorized", msg: "malformed Authorization header"},
		{name: "bearer with spaces only", token: static(""), req: func(string) req { return req{auth: []string{"Bearer    "}} },
			status: 401, code: "unauthorized", msg: "malformed Authorization header"},
		{name: "token with a space", token: static(aliceToken), req: func(tok string) req { return req{auth: []string{"Bearer " + tok + " x"}} },
			status: 401, code: "unauthorized", msg: "malformed Authorization header"},
		{name: "bare token", token: static(aliceToken), req: func(tok string) req { return req{auth: []string{tok}} },
			status: 401, code: "unauthorized", msg: "malformed Authorization header"},
		{name: "two Authorization headers", token: static(aliceToken), req: func(tok string) req { return req{auth: []string{"Bearer " + tok, "Bearer " + rootToken}} },
			status: 401, code: "unauthorized", msg: "more than once"},

		// JWTs.
		{name: "jwt", token: jwtOK, req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt admin claim", token: hs256(jwt.MapClaims{"icebox_admin": true}), req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "bob", Admin: true, Method: MethodJWT}},
		{name: "jwt admin claim as a string is not admin", token: hs256(jwt.MapClaims{"icebox_admin": "true"}), req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt admin claim not configured", cfg: func(c *AuthConfig) { c.JWTAdminClaim = "" }, token: hs256(jwt.MapClaims{"icebox_admin": true}),
			req: func(tok string) req { return req{auth: bearer(tok)} }, want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt audience in a list", token: hs256(jwt.MapClaims{"aud": []string{"other", "icebox"}}), req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt iss and aud not configured", cfg: func(c *AuthConfig) { c.JWTIssuer, c.JWTAudience = "", "" }, token: hs256(jwt.MapClaims{"iss": nil, "aud": nil}),
			req: func(tok string) req { return req{auth: bearer(tok)} }, want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt expired within leeway", token: hs256(jwt.MapClaims{"iat": testNow.Add(-time.Hour).Unix(), "exp": testNow.Add(-20 * time.Second).Unix()}),
			req: func(tok string) req { return req{auth: bearer(tok)} }, want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt expired", token: hs256(jwt.MapClaims{"iat": testNow.Add(-time.Hour).Unix(), "exp": testNow.Add(-time.Minute).Unix()}),
			req:    func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "token expired", wwwAuth: `Bearer realm="icebox", error="invalid_token"`},
		{name: "jwt without exp", cfg: func(c *AuthConfig) { c.JWTMaxTTL = 0 }, token: hs256(jwt.MapClaims{"exp": nil}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: no expiry (exp)"},
		{name: "jwt not valid yet", token: hs256(jwt.MapClaims{"nbf": testNow.Add(time.Minute).Unix()}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "token not valid yet"},
		{name: "jwt issued in the future", token: hs256(jwt.MapClaims{"iat": testNow.Add(time.Minute).Unix()}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: issued in the future"},
		{name: "jwt alg none", token: func(t *testing.T) string {
			return signJWT(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt RS256 header", token: func(t *testing.T) string {
			return forgeJWT(t, map[string]any{"alg": "RS256", "typ": "JWT"}, claims(nil))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt HS512", token: func(t *testing.T) string { return signJWT(t, jwt.SigningMethodHS512, testSecret, claims(nil)) },
			req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt forged HS256 header is accepted (control for the forgeries)", token: func(t *testing.T) string {
			return forgeJWT(t, map[string]any{"alg": "HS256", "typ": "JWT"}, claims(nil))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, want: &Identity{User: "bob", Method: MethodJWT}},
		// RFC 7515 §4.1.11: a token whose "crit" names extensions the server
		// does not understand (it understands none) must be refused.
		{name: "jwt crit header", token: func(t *testing.T) string {
			return forgeJWT(t, map[string]any{"alg": "HS256", "typ": "JWT", "crit": []string{"exp"}}, claims(nil))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized",
			msg: "invalid token: crit header names extensions this server does not support"},
		{name: "jwt empty crit header", token: func(t *testing.T) string {
			return forgeJWT(t, map[string]any{"alg": "HS256", "typ": "JWT", "crit": []string{}}, claims(nil))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized",
			msg: "invalid token: crit header names extensions this server does not support"},
		{name: "jwt wrong secret", token: func(t *testing.T) string {
			return signJWT(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes-or-more!!"), claims(nil))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt expired and wrong secret says only invalid", token: func(t *testing.T) string {
			return signJWT(t, jwt.SigningMethodHS256, []byte("another-secret-of-32-bytes-or-more!!"), claims(jwt.MapClaims{"exp": testNow.Add(-time.Hour).Unix()}))
		}, req: func(tok string) req { return req{auth: bearer(tok)} }, status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt when JWT is off", cfg: func(c *AuthConfig) { c.JWTSecret = nil }, token: jwtOK, req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt wrong issuer", token: hs256(jwt.MapClaims{"iss": "https://evil.test"}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: missing or wrong issuer (iss)"},
		{name: "jwt without issuer", token: hs256(jwt.MapClaims{"iss": nil}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: missing or wrong issuer (iss)"},
		{name: "jwt wrong audience", token: hs256(jwt.MapClaims{"aud": []string{"other"}}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: missing or wrong audience (aud)"},
		{name: "jwt without audience", token: hs256(jwt.MapClaims{"aud": nil}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: missing or wrong audience (aud)"},
		{name: "jwt without sub", token: hs256(jwt.MapClaims{"sub": nil}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: no subject (sub)"},
		{name: "jwt empty sub", token: hs256(jwt.MapClaims{"sub": ""}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: no subject (sub)"},
		{name: "jwt numeric sub", token: hs256(jwt.MapClaims{"sub": 42}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "jwt sub with a control character", token: hs256(jwt.MapClaims{"sub": "bob\nadmin"}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: subject (sub) contains a control character"},
		{name: "jwt exp at max ttl", token: hs256(jwt.MapClaims{"exp": testNow.Add(24 * time.Hour).Unix()}), req: func(tok string) req { return req{auth: bearer(tok)} },
			want: &Identity{User: "bob", Method: MethodJWT}},
		{name: "jwt exp beyond max ttl", token: hs256(jwt.MapClaims{"exp": testNow.Add(25 * time.Hour).Unix()}), req: func(tok string) req { return req{auth: bearer(tok)} },
			status: 401, code: "unauthorized", msg: "invalid token: expiry (exp) is further away than the server accepts"},
		{name: "jwt exp far away, no max ttl", cfg: func(c *AuthConfig) { c.JWTMaxTTL = 0 }, token: hs256(jwt.MapClaims{"exp": testNow.Add(10 * 365 * 24 * time.Hour).Unix()}),
			req: func(tok string) req { return req{auth: bearer(tok)} }, want: &Identity{User: "bob", Method: MethodJWT}},

		// WebSocket upgrades.
		{name: "upgrade, token in subprotocol", token: static(aliceToken),
			req:  func(tok string) req { return req{upgrade: true, protocol: "icebox.v1, bearer." + tok} },
			want: &Identity{User: "@alice:voip.test", Method: MethodStatic}, wantSub: "bearer.$TOKEN"},
		{name: "upgrade, jwt in subprotocol", token: jwtOK,
			req:  func(tok string) req { return req{upgrade: true, protocol: "bearer." + tok} },
			want: &Identity{User: "bob", Method: MethodJWT}, wantSub: "bearer.$TOKEN"},
		{name: "upgrade, token in query", token: static(aliceToken),
			req:  func(tok string) req { return req{upgrade: true, query: tok} },
			want: &Identity{User: "@alice:voip.test", Method: MethodStatic}},
		{name: "upgrade, token in header", token: static(aliceToken),
			req:  func(tok string) req { return req{upgrade: true, auth: bearer(tok), protocol: "icebox.v1"} },
			want: &Identity{User: "@alice:voip.test", Method: MethodStatic}},
		{name: "upgrade, wrong token in subprotocol", token: static("st-nobody-0000000000000000"),
			req:    func(tok string) req { return req{upgrade: true, protocol: "bearer." + tok} },
			status: 401, code: "unauthorized", msg: "invalid token"},
		{name: "upgrade, empty subprotocol token", token: static(""),
			req:    func(string) req { return req{upgrade: true, protocol: "bearer."} },
			status: 401, code: "unauthorized", msg: "missing bearer token"},
		{name: "upgrade, token in header and query", token: static(aliceToken),
			req:    func(tok string) req { return req{upgrade: true, auth: bearer(tok), query: tok} },
			status: 401, code: "unauthorized", msg: "more than once", wwwAuth: `Bearer realm="icebox", error="invalid_request"`},
		{name: "upgrade, two subprotocol tokens", token: static(aliceToken),
			req:    func(tok string) req { return req{upgrade: true, protocol: "bearer." + tok + ", bearer." + rootToken} },
			status: 401, code: "unauthorized", msg: "more than once"},
		{name: "query token without upgrade", token: static(aliceToken),
			req:    func(tok string) req { return req{query: tok} },
			status: 401, code: "unauthorized", msg: "access_token is accepted only on WebSocket upgrades", wwwAuth: `Bearer realm="icebox"`},
		{name: "subprotocol token without upgrade", token: static(aliceToken),
			req:    func(tok string) req { return req{protocol: "bearer." + tok} },
			status: 401, code: "unauthorized", msg: "missing bearer token"},
		{name: "upgrade header on a POST", token: static(aliceToken),
			req:    func(tok string) req { return req{method: http.MethodPost, upgrade: true, query: tok} },
			status: 401, code: "unauthorized", msg: "access_token is accepted only on WebSocket upgrades"},

		// RequireAdmin.
		{name: "admin route, admin token", token: static(rootToken), req: func(tok string) req { return req{path: "/admin", auth: bearer(tok)} },
			want: &Identity{User: "root", Admin: true, Method: MethodStatic}},
		{name: "admin route, admin jwt", token: hs256(jwt.MapClaims{"icebox_admin": true}), req: func(tok string) req { return req{path: "/admin", auth: bearer(tok)} },
			want: &Identity{User: "bob", Admin: true, Method: MethodJWT}},
		{name: "admin route, user token", token: static(aliceToken), req: func(tok string) req { return req{path: "/admin", auth: bearer(tok)} },
			status: 403, code: "forbidden", msg: "admin token required"},
		{name: "admin route, user jwt", token: jwtOK, req: func(tok string) req { return req{path: "/admin", auth: bearer(tok)} },
			status: 403, code: "forbidden", msg: "admin token required"},
		{name: "admin route, no token", token: static(""), req: func(string) req { return req{path: "/admin"} },
			status: 401, code: "unauthorized", msg: "missing bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testAuthConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			var got seen
			e := newTestEcho(t, cfg, &got)
			token := tt.token(t)
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, tt.req(token).build())

			if tt.want != nil {
				if rec.Code != http.StatusNoContent {
					t.Fatalf("status = %d, want 204; body %s", rec.Code, rec.Body)
				}
				// A JWT identity expires with its token (plus the leeway); a
				// static token's never does.
				gotID := got.id
				if gotID.Method == MethodJWT && !gotID.Expires.After(testNow) {
					t.Errorf("JWT identity expires at %v, not after now %v", gotID.Expires, testNow)
				}
				if gotID.Method == MethodStatic && !gotID.Expires.IsZero() {
					t.Errorf("static identity expires at %v", gotID.Expires)
				}
				gotID.Expires = time.Time{}
				if !got.ok || gotID != *tt.want {
					t.Errorf("IdentityFrom() = %+v, %v; want %+v, true", got.id, got.ok, *tt.want)
				}
				if want := strings.ReplaceAll(tt.wantSub, "$TOKEN", token); got.subprotocol != want {
					t.Errorf("SubprotocolFrom() = %q, want %q", got.subprotocol, want)
				}
				return
			}

			if rec.Code != tt.status {
				t.Errorf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			var body struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q is not JSON: %v", rec.Body, err)
			}
			if body.Error.Code != tt.code {
				t.Errorf("error code = %q, want %q", body.Error.Code, tt.code)
			}
			if !strings.Contains(body.Error.Message, tt.msg) {
				t.Errorf("error message = %q, want it to contain %q", body.Error.Message, tt.msg)
			}
			if tt.status == http.StatusUnauthorized {
				h := rec.Header().Get("WWW-Authenticate")
				if !strings.HasPrefix(h, "Bearer ") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", h)
				}
				if tt.wwwAuth != "" && h != tt.wwwAuth {
					t.Errorf("WWW-Authenticate = %q, want %q", h, tt.wwwAuth)
				}
			}
			if got.ok {
				t.Errorf("the handler ran for a refused request, as %+v", got.id)
			}
			if token != "" {
				if strings.Contains(rec.Body.String(), token) {
					t.Errorf("body %s contains the token", rec.Body)
				}
				for k, vs := range rec.Header() {
					for _, v := range vs {
						if strings.Contains(v, token) {
							t.Errorf("header %s: %q contains the token", k, v)
						}
					}
				}
			}
		})
	}
}

func TestNewAuthenticator(t *testing.T) {
	hash := sha256.Sum256([]byte("t"))
	tests := []struct {
		name    string
		cfg     AuthConfig
		wantErr string
	}{
		{name: "nothing configured", cfg: AuthConfig{}},
		{name: "full", cfg: testAuthConfig()},
		{name: "empty user", cfg: AuthConfig{StaticTokens: []StaticToken{{SHA256: hash}}}, wantErr: "httpapi: static token 0: empty user"},
		{name: "control character in user", cfg: AuthConfig{StaticTokens: []StaticToken{{SHA256: hash, User: "a\x00"}}}, wantErr: "httpapi: static token 0: user contains a control character"},
		{name: "zero hash", cfg: AuthConfig{StaticTokens: []StaticToken{{User: "a"}}}, wantErr: "httpapi: static token 0: hash is all zeros (not parsed?)"},
		{
			name:    "duplicate hash",
			cfg:     AuthConfig{StaticTokens: []StaticToken{{SHA256: hash, User: "a"}, {SHA256: sha256.Sum256([]byte("u")), User: "b"}, {SHA256: hash, User: "c"}}},
			wantErr: "httpapi: static token 2: same hash as static token 0",
		},
		{name: "short JWT secret", cfg: AuthConfig{JWTSecret: []byte("0123456789abcdef0123456789abcde")}, wantErr: "httpapi: JWT secret is 31 bytes; at least 32 are required"},
		{name: "negative max TTL", cfg: AuthConfig{JWTSecret: testSecret, JWTMaxTTL: -time.Second}, wantErr: "httpapi: JWT max TTL -1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuthenticator(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("NewAuthenticator() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || a == nil {
				t.Fatalf("NewAuthenticator() = %v, %v", a, err)
			}
		})
	}
}

// TestAuthenticatorCopiesConfig checks that changing the caller's slices
// after NewAuthenticator changes nothing.
func TestAuthenticatorCopiesConfig(t *testing.T) {
	cfg := testAuthConfig()
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.StaticTokens[0].User = "mallory"
	cfg.JWTSecret[0] ^= 0xff
	t.Cleanup(func() { cfg.JWTSecret[0] ^= 0xff }) // testSecret is shared

	if id, err := a.Authenticate(aliceToken); err != nil || id.User != "@alice:voip.test" {
		t.Errorf("Authenticate(static) = %+v, %v; want @alice:voip.test", id, err)
	}
	if id, err := a.Authenticate(forgeJWT(t, map[string]any{"alg": "HS256"}, claims(nil))); err == nil {
		t.Errorf("Authenticate(jwt signed with the changed secret) = %+v, want an error", id)
	}
	cfg.JWTSecret[0] ^= 0xff
	if _, err := a.Authenticate(forgeJWT(t, map[string]any{"alg": "HS256"}, claims(nil))); err != nil {
		t.Errorf("Authenticate(jwt) error: %v", err)
	}
	cfg.JWTSecret[0] ^= 0xff
}

func TestRequireAdminWithoutMiddleware(t *testing.T) {
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		ae := asAPIError(err)
		_ = c.JSON(ae.Status, map[string]*Error{"error": ae})
	}
	e.GET("/admin", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) }, RequireAdmin)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin", nil))
	if rec.Code != http.StatusUnauthorized {
		t.Errorf("status = %d, want 401 (fail closed)", rec.Code)
	}
}

// FuzzAuthenticate checks that no token, however odd, panics or comes back
// in the error text, which the client is shown.
func FuzzAuthenticate(f *testing.F) {
	for _, s := range []string{
		"", aliceToken, "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.AAAA",
		"....", "bearer.x", strings.Repeat("x", maxTokenLen+1),
	} {
		f.Add(s)
	}
	cfg := testAuthConfig()
	a, err := NewAuthenticator(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := a.Authenticate(token)
		if err == nil {
			if id.User == "" || (id.Method != MethodStatic && id.Method != MethodJWT) {
				t.Fatalf("Authenticate(%q) = %+v with no error", token, id)
			}
			return
		}
		if len(token) >= 4 && strings.Contains(err.Error(), token) {
			t.Fatalf("Authenticate(%q) error %q contains the token", token, err)
		}
	})
}
