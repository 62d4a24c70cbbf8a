package turnserver

import "golang.org/x/sys/unix"

// rcvbufReportScale: Linux reports double the usable size of SO_RCVBUF
// (bookkeeping overhead), so it is halved to compare with what was asked.
const rcvbufReportScale = 2

// setSockBuffers asks for receive and send buffers of size bytes. The
// *FORCE variants pass net.core.[rw]mem_max when the process may
// (CAP_NET_ADMIN); otherwise the plain ones are capped by the kernel, which
// ListenUDP reports. Neither failure stops the bind.
func setSockBuffers(fd, size int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, size)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, size) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, size)
	}
}
