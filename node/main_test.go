package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine is still running when
// they have all ended: a node's components, its watchdog and maintenance
// loops, and the relay's and HTTP server's goroutines end with Run and
// Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
