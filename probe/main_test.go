package probe

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: the burst's echo and reader goroutines, and the
// pion TURN clients of a probe, end before Run returns.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
