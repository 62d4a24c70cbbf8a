package signaling_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: Run's sweeper and the invite expiry callbacks must
// end when Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
