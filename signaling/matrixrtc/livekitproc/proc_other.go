//go:build unix && !linux

package livekitproc

import "syscall"

// sysProcAttr puts the child in its own process group. Only Linux has
// Pdeathsig: elsewhere a SIGKILLed icebox leaves livekit-server running.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
