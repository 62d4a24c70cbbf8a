package store

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain starts the PostgreSQL server the postgres driver's runs use
// (drivers_test.go), and fails the package's tests if a goroutine is still
// running when they have all ended: the store starts none itself, and the
// goroutines its tests write with at once (inbound_test.go) must end with
// their test.
func TestMain(m *testing.M) {
	stop, err := startPostgres()
	if err != nil {
		fmt.Fprintln(os.Stderr, "store tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}
