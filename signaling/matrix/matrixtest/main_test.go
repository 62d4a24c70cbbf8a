package matrixtest

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine (a homeserver's process
// waiter, a test user's sync) is still running when they have all ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
