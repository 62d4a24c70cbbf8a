package livekitproc

import (
	"os"
	"syscall"
)

// On Windows there is no process group to signal nor Pdeathsig; the child
// is killed directly (it gets no graceful stop).
func sysProcAttr() *syscall.SysProcAttr { return nil }

func terminate(p *os.Process) error { return p.Kill() }

func kill(p *os.Process) error { return p.Kill() }
