package store

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: the store starts none itself, and the goroutines
// its tests write with at once (inbound_test.go) must end with their test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
