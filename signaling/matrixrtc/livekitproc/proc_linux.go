package livekitproc

import "syscall"

// sysProcAttr puts the child in its own process group (a terminal's ^C
// reaches icebox, which stops it in order) and makes the kernel kill it if
// the thread that started it exits — with icebox, even by SIGKILL — so it
// is never left orphaned. The supervisor keeps that thread locked for as
// long as the child runs.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
