//go:build !linux

package turnserver

import "testing"

// forModes runs body in user space on loopback (the kernel path and its
// namespace bed are Linux's).
func forModes(t *testing.T, body func(*testing.T, testMode)) {
	t.Run(loopbackMode.name, func(t *testing.T) { body(t, loopbackMode) })
}
