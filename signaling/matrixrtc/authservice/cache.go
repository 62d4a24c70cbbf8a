package authservice

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxCacheEntries bounds the verification cache: a join is one entry, so
// this is thousands of joins within the TTL; past it, expired entries go
// first and then arbitrary ones (a miss only costs a homeserver request).
const maxCacheEntries = 4096

// cacheKey identifies a verification by a hash of the server name and the
// token: the cache never holds a token, so a heap dump cannot replay one.
type cacheKey [sha256.Size]byte

func newCacheKey(serverName, token string) cacheKey {
	h := sha256.New()
	h.Write([]byte(serverName))
	h.Write([]byte{0}) // a server name holds no NUL: no two pairs hash the same input
	h.Write([]byte(token))
	var k cacheKey
	h.Sum(k[:0])
	return k
}

type cacheEntry struct {
	userID  string
	expires time.Time
}

// verifyCache keeps successful OpenID verifications for a short time, so a
// client that asks twice with one token (a retry, /sfu/get then
// /get_token, several slots of one room) sends its homeserver one request.
// lk-jwt-service asks every time; the TTL (matrixrtc.verify_cache_ttl, at
// most 5 minutes) is what a cached answer adds to a token's life after its
// homeserver stops vouching for it. Failures are never kept: a token that
// was refused is asked about again.
type verifyCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	now     func() time.Time
	entries map[cacheKey]cacheEntry
}

func newVerifyCache(ttl time.Duration, now func() time.Time) *verifyCache {
	if ttl <= 0 {
		return nil
	}
	return &verifyCache{ttl: ttl, now: now, entries: make(map[cacheKey]cacheEntry)}
}

// get returns the user a cached verification of k names. A nil cache has
// nothing.
func (c *verifyCache) get(k cacheKey) (string, bool) {
	if c == nil {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return "", false
	}
	if !c.now().Before(e.expires) {
		delete(c.entries, k)
		return "", false
	}
	return e.userID, true
}

// put keeps a successful verification for the TTL, or for expiresIn (the
// token's own remaining life as its client reported it, in seconds) when
// that is shorter.
func (c *verifyCache) put(k cacheKey, userID string, expiresIn int) {
	if c == nil {
		return
	}
	ttl := c.ttl
	if expiresIn > 0 && time.Duration(expiresIn)*time.Second < ttl {
		ttl = time.Duration(expiresIn) * time.Second
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.entries) >= maxCacheEntries {
		c.evict(now)
	}
	c.entries[k] = cacheEntry{userID: userID, expires: now.Add(ttl)}
}

// evict drops the expired entries and, if the cache is still over 7/8
// full, arbitrary others (map order) down to 7/8: the scan then runs once
// per maxCacheEntries/8 insertions at worst, not at each one. Called with
// mu held.
func (c *verifyCache) evict(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	for k := range c.entries {
		if len(c.entries) <= maxCacheEntries*7/8 {
			break
		}
		delete(c.entries, k)
	}
}

// len is the number of entries (tests).
func (c *verifyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
