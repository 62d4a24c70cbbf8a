package httpapi

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"
	"unicode"

	"golang.org/x/sync/singleflight"
)

// MethodMatrix is Identity.Method for a Matrix access token checked with
// the homeserver.
const MethodMatrix = "matrix"

// ErrMatrixTokenInvalid is what AuthConfig.MatrixWhoami returns when the
// homeserver refused the token (401/403): the client is refused with 401 and
// the answer is cached for MatrixNegativeCache. Any other error means the
// homeserver could not say, and the client gets 503.
var ErrMatrixTokenInvalid = errors.New("httpapi: the homeserver refused the Matrix access token")

// errMatrixUnavailable is why a Matrix token could not be checked: the
// homeserver did not answer (or answered nonsense). Its text is the
// client's; the cause is not, since it may name internal addresses.
var errMatrixUnavailable = errors.New("the Matrix homeserver could not be reached to check the access token; try again later")

const (
	// maxMatrixCacheEntries bounds the memory that clients sending many
	// distinct tokens can make the cache hold; the oldest entry goes first.
	maxMatrixCacheEntries = 10_000
	// matrixLookupTimeout bounds one whoami lookup, which is shared by all
	// the requests waiting for the same token, whichever of them gives up.
	matrixLookupTimeout = 10 * time.Second
	// matrixRetryAfter is the Retry-After, in seconds, of the 503.
	matrixRetryAfter = "5"
)

// matrixTokens checks Matrix access tokens with the homeserver and caches
// the answers, keyed by the token's SHA-256 (never the token).
type matrixTokens struct {
	whoami  func(ctx context.Context, token string) (string, error)
	ttl     time.Duration // positive answers; 0 = not cached
	negTTL  time.Duration // refusals; 0 = not cached
	max     int
	now     func() time.Time
	flights singleflight.Group
	mu      sync.Mutex
	entries map[[32]byte]*list.Element // of *matrixEntry
	order   *list.List                 // oldest first
}

type matrixEntry struct {
	key     [32]byte
	user    string // "" = refused
	expires time.Time
}

func newMatrixTokens(cfg AuthConfig, now func() time.Time) *matrixTokens {
	if cfg.MatrixWhoami == nil {
		return nil
	}
	return &matrixTokens{
		whoami:  cfg.MatrixWhoami,
		ttl:     cfg.MatrixCache,
		negTTL:  cfg.MatrixNegativeCache,
		max:     maxMatrixCacheEntries,
		now:     now,
		entries: make(map[[32]byte]*list.Element),
		order:   list.New(),
	}
}

// identity checks token, from the cache or the homeserver.
func (m *matrixTokens) identity(ctx context.Context, token string) (Identity, error) {
	if !validMatrixToken(token) {
		return Identity{}, errInvalidToken
	}
	key := sha256.Sum256([]byte(token))
	if user, ok := m.lookup(key); ok {
		return matrixIdentity(user)
	}
	// Concurrent requests with the same token share one lookup. It runs
	// detached from any one request's context (with its own timeout), so
	// the first client hanging up does not fail the others.
	ch := m.flights.DoChan(string(key[:]), func() (any, error) {
		if user, ok := m.lookup(key); ok { // answered while we queued
			return user, nil
		}
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), matrixLookupTimeout)
		defer cancel()
		user, err := m.whoami(lctx, token)
		switch {
		case errors.Is(err, ErrMatrixTokenInvalid):
			m.store(key, "", m.negTTL)
			return "", nil
		case err != nil:
			return "", errMatrixUnavailable
		case user == "" || strings.ContainsFunc(user, unicode.IsControl) || len(user) > 255:
			// Not a Matrix user ID: a broken homeserver, not a bad token.
			return "", errMatrixUnavailable
		}
		m.store(key, user, m.ttl)
		return user, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return Identity{}, r.Err
		}
		return matrixIdentity(r.Val.(string))
	case <-ctx.Done():
		return Identity{}, errMatrixUnavailable
	}
}

func matrixIdentity(user string) (Identity, error) {
	if user == "" {
		return Identity{}, errInvalidToken
	}
	return Identity{User: user, Method: MethodMatrix}, nil
}

// lookup returns the cached answer for key: the user ID, or "" for a
// refusal.
func (m *matrixTokens) lookup(key [32]byte) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.entries[key]
	if !ok {
		return "", false
	}
	e := el.Value.(*matrixEntry)
	if !m.now().Before(e.expires) {
		m.order.Remove(el)
		delete(m.entries, key)
		return "", false
	}
	return e.user, true
}

// store caches an answer for ttl (not at all if ttl is 0), evicting the
// oldest entries beyond the bound.
func (m *matrixTokens) store(key [32]byte, user string, ttl time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.entries[key]; ok {
		m.order.Remove(el)
		delete(m.entries, key)
	}
	if ttl <= 0 {
		return
	}
	e := &matrixEntry{key: key, user: user, expires: m.now().Add(ttl)}
	m.entries[key] = m.order.PushBack(e)
	for m.order.Len() > m.max {
		oldest := m.order.Front()
		m.order.Remove(oldest)
		delete(m.entries, oldest.Value.(*matrixEntry).key)
	}
}

// len is the number of cached answers (for tests).
func (m *matrixTokens) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}

// validMatrixToken reports whether token could be an access token worth
// asking the homeserver about: printable ASCII without spaces (which also
// keeps it a valid header value).
func validMatrixToken(token string) bool {
	for i := 0; i < len(token); i++ {
		if c := token[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return token != ""
}

// looksLikeJWT reports whether token has a JWT's shape: three dot-separated
// parts whose first is base64url JSON with an "alg". Matrix access tokens
// do not (Synapse's are syt_…, Dendrite's plain base64url).
func looksLikeJWT(token string) bool {
	if strings.Count(token, ".") != 2 {
		return false
	}
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(head, "="))
	if err != nil {
		return false
	}
	var h struct {
		Alg *string `json:"alg"`
	}
	return json.Unmarshal(raw, &h) == nil && h.Alg != nil
}
