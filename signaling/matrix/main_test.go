package matrix_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended. Tests that run a bridge also check, per Run, that
// its goroutines ended (runScoped: by pprof label, as the e2ee tests run in
// parallel).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
