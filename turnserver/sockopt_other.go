//go:build unix && !linux

package turnserver

import "golang.org/x/sys/unix"

// rcvbufReportScale: the BSDs and macOS report SO_RCVBUF as set.
const rcvbufReportScale = 1

// setSockBuffers asks for receive and send buffers of size bytes; the
// kernel caps them (kern.ipc.maxsockbuf), which ListenUDP reports. Neither
// failure stops the bind.
func setSockBuffers(fd, size int) {
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
}
