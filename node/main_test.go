package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: a node's components, its watchdog and maintenance
// loops, and the relay's and HTTP server's goroutines end with Run and
// Close. certmagic (ACME) keeps two kinds of its own, process-wide: a rate
// limiter per CA, which lives as long as the process, and a lock file's
// freshener, which ends within 5 s of the lock's release.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.(*RingBufferRateLimiter).loop"),
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}
