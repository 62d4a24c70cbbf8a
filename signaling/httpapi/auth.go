package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"
)

// Identity is an authenticated API client.
type Identity struct {
	User   string // user ID: the static token's user, the JWT's "sub", or the Matrix user ID
	Admin  bool   // may use /admin/*; never for Matrix tokens
	Method string // MethodStatic, MethodJWT or MethodMatrix
	// Expires is when the token stops being valid (JWT exp plus the
	// leeway); zero for static and Matrix tokens. A WebSocket session ends
	// then.
	Expires time.Time
}

// Identity.Method values.
const (
	MethodStatic = "static"
	MethodJWT    = "jwt"
)

// AuthConfig configures an Authenticator. With no static token, no JWT
// secret and no MatrixWhoami, every token is refused.
type AuthConfig struct {
	StaticTokens []StaticToken // parsed from config by the caller

	JWTSecret     []byte        // HS256 key, at least 32 bytes; nil or empty = JWT off
	JWTIssuer     string        // required "iss" if set
	JWTAudience   string        // required in "aud" if set
	JWTAdminClaim string        // boolean claim that grants admin when true; "" = JWTs are never admin
	JWTMaxTTL     time.Duration // refuse tokens whose exp is further than this from now; 0 = no limit

	// MatrixWhoami checks a Matrix access token with the homeserver
	// (/_matrix/client/v3/account/whoami) and returns its user ID; it
	// returns ErrMatrixTokenInvalid when the homeserver refused the token,
	// any other error when it could not say. nil = Matrix tokens off. It is
	// asked about tokens that are neither static tokens nor JWT-shaped.
	MatrixWhoami func(ctx context.Context, token string) (userID string, err error)
	// MatrixCache is how long a valid Matrix token is trusted without
	// asking again (so a revoked token works at most this long); 0 = ask
	// every time. MatrixNegativeCache is the same for refused tokens.
	MatrixCache         time.Duration
	MatrixNegativeCache time.Duration

	Now func() time.Time // Default: time.Now
}

// StaticToken is a fixed bearer token, known by the SHA-256 of its bytes.
type StaticToken struct {
	SHA256 [32]byte
	User   string
	Admin  bool
}

const (
	// jwtLeeway absorbs clock skew between the host application that mints
	// JWTs and this server, for exp, nbf, iat and the max TTL.
	jwtLeeway = 30 * time.Second
	// minJWTSecretLen is RFC 7518 §3.2's minimum HS256 key size (256 bits).
	minJWTSecretLen = 32
	// maxTokenLen bounds the work an unauthenticated client can ask for (a
	// SHA-256, base64 and JSON decoding before the signature is checked);
	// real JWTs with a handful of claims are well under 1 KiB.
	maxTokenLen = 8 << 10
	// bearerSubprotocolPrefix marks the Sec-WebSocket-Protocol entry that
	// carries a token: browsers cannot set Authorization on a WebSocket.
	bearerSubprotocolPrefix = "bearer."
)

// Echo context keys.
const (
	identityKey    = "httpapi.identity"
	subprotocolKey = "httpapi.subprotocol"
)

// authError is why a request was refused. Its text is what the client is
// told, so it never holds the token. (It lives here rather than in
// errors.go because only authentication produces it.)
type authError string

func (e authError) Error() string { return string(e) }

const (
	errMissingToken    authError = "missing bearer token (Authorization: Bearer <token>)"
	errMalformedAuth   authError = `malformed Authorization header: want "Bearer <token>"`
	errTokenTwice      authError = "bearer token given more than once; send it in one place only"
	errInvalidToken    authError = "invalid token"
	errTokenExpired    authError = "token expired"
	errTokenNotYet     authError = "token not valid yet"
	errTokenFuture     authError = "invalid token: issued in the future"
	errTokenNoSubject  authError = "invalid token: no subject (sub)"
	errTokenBadSub     authError = "invalid token: subject (sub) contains a control character"
	errTokenIssuer     authError = "invalid token: missing or wrong issuer (iss)"
	errTokenAudience   authError = "invalid token: missing or wrong audience (aud)"
	errTokenNoExp      authError = "invalid token: no expiry (exp)"
	errTokenTooLong    authError = "invalid token: expiry (exp) is further away than the server accepts"
	errTokenCrit       authError = "invalid token: crit header names extensions this server does not support"
	errQueryNotUpgrade authError = "missing bearer token (access_token is accepted only on WebSocket upgrades)"
)

// Authenticator verifies API clients' bearer tokens. Its settings can be
// swapped whole while it serves (Swap, on a configuration reload).
type Authenticator struct {
	cur atomic.Pointer[authState]
}

// authState is one configuration of an Authenticator.
type authState struct {
	static     []StaticToken
	jwtKey     []byte
	jwtParser  *jwt.Parser
	adminClaim string
	maxTTL     time.Duration
	matrix     *matrixTokens // nil = Matrix tokens off
	now        func() time.Time
}

// NewAuthenticator checks cfg and builds an Authenticator. A config with no
// method at all is valid: every request is then refused with 401.
func NewAuthenticator(cfg AuthConfig) (*Authenticator, error) {
	seen := make(map[[32]byte]int, len(cfg.StaticTokens))
	for i, t := range cfg.StaticTokens {
		switch j, dup := seen[t.SHA256]; {
		case t.User == "":
			return nil, fmt.Errorf("httpapi: static token %d: empty user", i)
		case strings.ContainsFunc(t.User, unicode.IsControl):
			return nil, fmt.Errorf("httpapi: static token %d: user contains a control character", i)
		case t.SHA256 == [32]byte{}:
			return nil, fmt.Errorf("httpapi: static token %d: hash is all zeros (not parsed?)", i)
		case dup:
			return nil, fmt.Errorf("httpapi: static token %d: same hash as static token %d", i, j)
		}
		seen[t.SHA256] = i
	}
	if n := len(cfg.JWTSecret); n > 0 && n < minJWTSecretLen {
		return nil, fmt.Errorf("httpapi: JWT secret is %d bytes; at least %d are required", n, minJWTSecretLen)
	}
	if cfg.JWTMaxTTL < 0 {
		return nil, fmt.Errorf("httpapi: JWT max TTL %s is negative", cfg.JWTMaxTTL)
	}
	if cfg.MatrixCache < 0 || cfg.MatrixNegativeCache < 0 {
		return nil, fmt.Errorf("httpapi: Matrix token cache times %s, %s: must be >= 0", cfg.MatrixCache, cfg.MatrixNegativeCache)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	a := &authState{
		static:     append([]StaticToken(nil), cfg.StaticTokens...),
		adminClaim: cfg.JWTAdminClaim,
		maxTTL:     cfg.JWTMaxTTL,
		matrix:     newMatrixTokens(cfg, now),
		now:        now,
	}
	if len(cfg.JWTSecret) > 0 {
		a.jwtKey = append([]byte(nil), cfg.JWTSecret...)
		opts := []jwt.ParserOption{
			// Only HS256: refuses "none" and algorithm confusion (an RS256
			// or HS512 header) before the key is ever used.
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(jwtLeeway),
			jwt.WithTimeFunc(now),
		}
		if cfg.JWTIssuer != "" {
			opts = append(opts, jwt.WithIssuer(cfg.JWTIssuer))
		}
		if cfg.JWTAudience != "" {
			opts = append(opts, jwt.WithAudience(cfg.JWTAudience))
		}
		a.jwtParser = jwt.NewParser(opts...)
	}
	auth := &Authenticator{}
	auth.cur.Store(a)
	return auth, nil
}

// Authenticate is AuthenticateContext without a context.
func (a *Authenticator) Authenticate(token string) (Identity, error) {
	return a.AuthenticateContext(context.Background(), token)
}

// AuthenticateContext verifies a bearer token: first against the static
// tokens (by SHA-256, in constant time over all of them), then, if it has a
// JWT's shape, as an HS256 JWT, otherwise as a Matrix access token (asking
// the homeserver, or the cache). ctx bounds the wait for the homeserver.
// Its error's text is safe to show the client: it never holds the token.
// When the homeserver cannot be reached the error is one for which
// IsUpstreamUnavailable is true (503, not 401).
func (auth *Authenticator) AuthenticateContext(ctx context.Context, token string) (Identity, error) {
	a := auth.cur.Load()
	if token == "" {
		return Identity{}, errMissingToken
	}
	if len(token) > maxTokenLen {
		return Identity{}, errInvalidToken
	}
	if id, ok := a.staticIdentity(token); ok {
		return id, nil
	}
	if a.matrix != nil && !looksLikeJWT(token) {
		return a.matrix.identity(ctx, token)
	}
	if a.jwtParser == nil {
		return Identity{}, errInvalidToken
	}
	return a.jwtIdentity(token)
}

// Swap makes a take next's settings (static tokens, JWT, Matrix tokens)
// from now on; requests being checked finish with the old ones. next is
// not used afterwards.
func (auth *Authenticator) Swap(next *Authenticator) {
	auth.cur.Store(next.cur.Load())
}

// IsUpstreamUnavailable reports whether an Authenticate error means the
// token could not be checked (the Matrix homeserver did not answer), rather
// than that it was refused.
func IsUpstreamUnavailable(err error) bool { return errors.Is(err, errMatrixUnavailable) }

// staticIdentity compares the token's hash with every configured hash,
// without stopping at a match, so the time taken says nothing about which
// token (if any) matched.
func (a *authState) staticIdentity(token string) (Identity, bool) {
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range a.static {
		eq := subtle.ConstantTimeCompare(sum[:], a.static[i].SHA256[:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return Identity{}, false
	}
	t := a.static[match]
	return Identity{User: t.User, Admin: t.Admin, Method: MethodStatic}, true
}

func (a *authState) jwtIdentity(token string) (Identity, error) {
	claims := jwt.MapClaims{}
	tok, err := a.jwtParser.ParseWithClaims(token, claims, a.jwtKeyFunc)
	if err != nil {
		return Identity{}, jwtError(err, claims)
	}
	// RFC 7515 §4.1.11: extensions listed in "crit" must be understood or
	// the token refused; icebox understands none (and an empty list is not
	// allowed either). jwt ignores the header.
	if _, ok := tok.Header["crit"]; ok {
		return Identity{}, errTokenCrit
	}
	// The signature is verified from here on, so details help the host
	// application's developers without helping a forger.
	sub, err := claims.GetSubject()
	switch {
	case err != nil || sub == "":
		return Identity{}, errTokenNoSubject
	case strings.ContainsFunc(sub, unicode.IsControl):
		return Identity{}, errTokenBadSub
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return Identity{}, errTokenNoExp // unreachable: WithExpirationRequired
	}
	if a.maxTTL > 0 && exp.Sub(a.now()) > a.maxTTL+jwtLeeway {
		return Identity{}, errTokenTooLong
	}
	id := Identity{User: sub, Method: MethodJWT, Expires: exp.Add(jwtLeeway)}
	if a.adminClaim != "" {
		admin, _ := claims[a.adminClaim].(bool) // true only: not "true", not 1
		id.Admin = admin
	}
	return id, nil
}

func (a *authState) jwtKeyFunc(*jwt.Token) (any, error) { return a.jwtKey, nil }

// jwtError maps the jwt package's error to what the client is told. jwt
// checks the signature before any claim, so the claim errors below are
// only reachable with a correctly signed token.
func jwtError(err error, claims jwt.MapClaims) authError {
	switch {
	case !errors.Is(err, jwt.ErrTokenInvalidClaims):
		return errInvalidToken // malformed, wrong algorithm, bad signature
	case errors.Is(err, jwt.ErrTokenExpired):
		return errTokenExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return errTokenNotYet
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return errTokenFuture
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return errTokenIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return errTokenAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// jwt does not say which claim is missing.
		switch exp, _ := claims.GetExpirationTime(); {
		case exp == nil:
			return errTokenNoExp
		case claims["iss"] == nil || claims["iss"] == "":
			return errTokenIssuer
		default:
			return errTokenAudience
		}
	default:
		return errInvalidToken
	}
}

// Middleware authenticates every request, storing the Identity for
// IdentityFrom, or refuses it with 401 and a WWW-Authenticate challenge.
//
// The token comes from "Authorization: Bearer <token>". On a WebSocket
// upgrade it may instead come from a Sec-WebSocket-Protocol entry
// "bearer.<token>" (recorded for SubprotocolFrom) or the access_token query
// parameter, since browsers cannot set headers on a WebSocket. A token given
// in more than one place is refused (RFC 6750 §2).
func (a *Authenticator) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			token, subprotocol, err := bearerToken(c.Request())
			if err == nil {
				var id Identity
				if id, err = a.AuthenticateContext(c.Request().Context(), token); err == nil {
					c.Set(identityKey, id)
					if subprotocol != "" {
						c.Set(subprotocolKey, subprotocol)
					}
					return next(c)
				}
			}
			if IsUpstreamUnavailable(err) {
				c.Response().Header().Set("Retry-After", matrixRetryAfter)
				return apiError(http.StatusServiceUnavailable, "upstream_unavailable", err.Error())
			}
			return unauthorized(c, err)
		}
	}
}

// unauthorized answers 401 with the RFC 6750 §3 challenge: no error code
// when no token was sent, invalid_request when it was sent wrongly,
// invalid_token when it was refused.
func unauthorized(c echo.Context, err error) error {
	var ae authError
	if !errors.As(err, &ae) {
		ae = errInvalidToken
	}
	challenge := `Bearer realm="icebox"`
	switch ae {
	case errMissingToken, errQueryNotUpgrade:
	case errMalformedAuth, errTokenTwice:
		challenge += `, error="invalid_request"`
	default:
		challenge += `, error="invalid_token"`
	}
	c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
	return apiError(http.StatusUnauthorized, "unauthorized", string(ae))
}

// bearerToken finds the request's token, and the Sec-WebSocket-Protocol
// entry it came in, if it did.
func bearerToken(r *http.Request) (token, subprotocol string, err error) {
	var found []string
	if h := r.Header.Values(echo.HeaderAuthorization); len(h) > 0 {
		if len(h) > 1 {
			return "", "", errTokenTwice
		}
		scheme, t, _ := strings.Cut(h[0], " ")
		t = strings.TrimLeft(t, " ")
		if !strings.EqualFold(scheme, "Bearer") || t == "" || strings.ContainsFunc(t, unicode.IsSpace) {
			return "", "", errMalformedAuth
		}
		found = append(found, t)
	}
	query, inQuery := r.URL.Query()["access_token"]
	if !isWebSocketUpgrade(r) {
		if len(found) == 0 && inQuery {
			return "", "", errQueryNotUpgrade
		}
	} else {
		for _, p := range headerList(r.Header.Values("Sec-WebSocket-Protocol")) {
			if t, ok := strings.CutPrefix(p, bearerSubprotocolPrefix); ok {
				found = append(found, t)
				subprotocol = p
			}
		}
		found = append(found, query...)
	}
	switch len(found) {
	case 0:
		return "", "", errMissingToken
	case 1:
		if found[0] == "" {
			return "", "", errMissingToken
		}
		return found[0], subprotocol, nil
	default:
		return "", "", errTokenTwice
	}
}

// isWebSocketUpgrade reports whether r asks for a WebSocket (RFC 6455 §4.1:
// a GET whose Upgrade header lists "websocket").
func isWebSocketUpgrade(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, p := range headerList(r.Header.Values(echo.HeaderUpgrade)) {
		if strings.EqualFold(p, "websocket") {
			return true
		}
	}
	return false
}

// headerList splits comma-separated header values into trimmed, non-empty
// items.
func headerList(values []string) []string {
	var items []string
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				items = append(items, item)
			}
		}
	}
	return items
}

// IdentityFrom returns the Identity that Middleware stored.
func IdentityFrom(c echo.Context) (Identity, bool) {
	id, ok := c.Get(identityKey).(Identity)
	return id, ok
}

// SubprotocolFrom returns the Sec-WebSocket-Protocol entry ("bearer.<token>")
// that carried the token, or "". Browsers fail a WebSocket whose server
// selects none of the offered subprotocols, so the WebSocket handler must
// select one: its own application protocol when the client also offered it,
// otherwise this entry (which echoes the token to the client that sent it).
func SubprotocolFrom(c echo.Context) string {
	p, _ := c.Get(subprotocolKey).(string)
	return p
}

// RequireAdmin is echo middleware, used after Middleware, that refuses
// non-admin clients with 403.
func RequireAdmin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id, ok := IdentityFrom(c)
		if !ok {
			// Wired without Middleware: fail closed.
			return unauthorized(c, errMissingToken)
		}
		if !id.Admin {
			return apiError(http.StatusForbidden, "forbidden", "admin token required")
		}
		return next(c)
	}
}
