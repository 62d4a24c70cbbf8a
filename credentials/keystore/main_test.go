package keystore

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: the Manager starts none, and its tests keep it
// that way.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
