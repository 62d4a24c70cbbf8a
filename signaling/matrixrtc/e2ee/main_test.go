package e2ee_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine (a key switch timer's)
// is still running when they have all ended.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
