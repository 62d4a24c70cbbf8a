package httpapi

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended; the WebSocket tests also check each test on its own
// (newWSEnv).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
