package acmecert

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: Watch's challenge server and Close's cache
// maintenance end with them. certmagic keeps two kinds of its own,
// process-wide: a rate limiter per CA, which lives as long as the process,
// and a lock file's freshener, which ends within 5 s of the lock's release.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}
