package matrixtest

import "syscall"

// sysProcAttr makes the kernel kill Dendrite if the thread that started it
// dies, as it does when the test binary is killed by `go test -timeout`:
// t.Cleanup does not run then.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
