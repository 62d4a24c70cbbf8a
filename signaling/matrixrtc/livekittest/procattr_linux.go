package livekittest

import "syscall"

// sysProcAttr makes the kernel kill livekit-server if the thread that
// started it dies, as it does when the test binary is killed by `go test
// -timeout`: t.Cleanup does not run then.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
