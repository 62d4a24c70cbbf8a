package tlsreload

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: Watch ends with its context.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
