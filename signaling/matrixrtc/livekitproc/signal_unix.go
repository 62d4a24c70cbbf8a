//go:build unix

package livekitproc

import (
	"os"
	"syscall"
)

// terminate asks the child's process group to stop (livekit-server stops
// at once on a second one, without waiting for participants to leave).
func terminate(p *os.Process) error { return syscall.Kill(-p.Pid, syscall.SIGTERM) }

// kill ends the child's process group.
func kill(p *os.Process) error { return syscall.Kill(-p.Pid, syscall.SIGKILL) }
