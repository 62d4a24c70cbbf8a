package authservice

import (
	"strconv"
	"testing"
	"time"
)

// TestVerifyCacheBounded: the cache never holds more than maxCacheEntries,
// drops expired entries first, and keys are hashes (no token inside).
func TestVerifyCacheBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	c := newVerifyCache(time.Minute, func() time.Time { return now })
	old := newCacheKey("a.org", "old-token")
	c.put(old, "@old:a.org", 10) // expires in 10 s
	now = now.Add(11 * time.Second)
	for i := range maxCacheEntries + 1000 {
		c.put(newCacheKey("a.org", "token-"+strconv.Itoa(i)), "@u:a.org", 0)
		if n := c.len(); n > maxCacheEntries {
			t.Fatalf("after %d puts: %d entries, want ≤ %d", i+1, n, maxCacheEntries)
		}
	}
	if _, ok := c.get(old); ok {
		t.Error("an expired entry survived")
	}
	last := newCacheKey("a.org", "token-"+strconv.Itoa(maxCacheEntries+999))
	if u, ok := c.get(last); !ok || u != "@u:a.org" {
		t.Errorf("the newest entry: %q %v", u, ok)
	}
	if newCacheKey("a.org", "t") == newCacheKey("a.or", "gt") {
		t.Error("server name and token run together in the key")
	}
	var nilCache *verifyCache // TTL 0
	nilCache.put(last, "@u:a.org", 0)
	if _, ok := nilCache.get(last); ok || newVerifyCache(0, time.Now) != nil {
		t.Error("a zero TTL caches")
	}
}
