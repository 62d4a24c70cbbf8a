//go:build !linux

package matrixtest

import "syscall"

// sysProcAttr: only Linux has Pdeathsig; elsewhere a test binary killed by
// -timeout may leave Dendrite running.
func sysProcAttr() *syscall.SysProcAttr { return nil }
