package authservice_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine (an idle connection to
// a homeserver or LiveKit, say) outlives them: every test closes its
// Service.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
