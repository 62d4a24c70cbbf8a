//go:build !linux

package livekittest

import "syscall"

// sysProcAttr: only Linux has Pdeathsig; elsewhere a test binary killed by
// -timeout may leave livekit-server running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
