package livekitproc_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine (a supervisor's, a
// reader of a child's output) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
