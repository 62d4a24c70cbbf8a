//go:build !icebox_portable

package udpengine

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP sockets outside Go's network poller. The epoll engine waits for
// them with its own epoll and reads and writes them with recvmmsg, sendmmsg
// and sendto directly: a datagram costs its system calls and nothing else —
// no goroutine woken per socket, no second read that finds the socket
// empty.

// sockaddrLen is room for a struct sockaddr_in6 (an IPv4 sockaddr_in is
// its first 16 bytes).
const sockaddrLen = unix.SizeofSockaddrInet6

// Socket is one UDP socket, read by one engine loop and written by any
// goroutine. mu guards the file descriptor: readers and writers hold it
// shared, close holds it exclusively, so the number is never used after
// close (when the kernel may already have given it to another socket).
type Socket struct {
	fd     int
	family int // unix.AF_INET or unix.AF_INET6 (IPv4 peers as v4-mapped)
	local  netip.AddrPort

	mu     sync.RWMutex
	closed bool

	gso atomic.Bool // UDP_SEGMENT offered and not refused (gso_linux.go)
	gro bool        // UDP_GRO on (gro_linux.go); set when added, read by its loop

	// Set once when the socket is added to the engine.
	id uint64
	w  *worker
	h  Handler
}

// Open binds a UDP socket on addr with a receive buffer of bufSize bytes
// (best effort: SO_RCVBUFFORCE where the process may, else SO_RCVBUF). The
// send buffer keeps the kernel's default: sends never wait, and one system
// call fewer per allocation.
func Open(addr netip.AddrPort, bufSize int) (*Socket, error) {
	family := unix.AF_INET
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if bufSize > 0 && unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, bufSize) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, bufSize)
	}
	var sa unix.Sockaddr
	if family == unix.AF_INET {
		sa = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().Unmap().As4()}
	} else {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1)
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: err}
	}
	local := addr
	if addr.Port() == 0 {
		if got, err := unix.Getsockname(fd); err == nil {
			local = netip.AddrPortFrom(addr.Addr(), uint16(sockaddrPort(got)))
		}
	}
	return newSocket(fd, family, local), nil
}

func newSocket(fd, family int, local netip.AddrPort) *Socket {
	s := &Socket{fd: fd, family: family, local: local}
	s.gso.Store(gsoSupported(fd))
	return s
}

// Adopt takes over a socket bound by Go (a listener from ListenUDP): the
// descriptor is duplicated and the original closed, so only the engine
// polls it. The socket keeps its port and its SO_REUSEPORT group.
func Adopt(pc net.PacketConn) (*Socket, error) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("udpengine: UDP listener is a %T, want *net.UDPConn", pc)
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, fmt.Errorf("udpengine: dup UDP listener: %w", dupErr)
	}
	local := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := uc.Close(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	family, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udpengine: UDP listener: %w", err)
	}
	return newSocket(fd, family, local), nil
}

// LocalAddr is the address the socket is bound to.
func (s *Socket) LocalAddr() netip.AddrPort { return s.local }

// errSockClosed is what a closed socket's operations return.
var errSockClosed = net.ErrClosed

// SendTo sends p to addr. It does not wait: with the send buffer full the
// datagram is dropped (EAGAIN, see BufferFull), as a full queue drops it
// anyway.
func (s *Socket) SendTo(p []byte, to netip.AddrPort) (int, error) {
	var sa [sockaddrLen]byte
	salen := putSockaddr(&sa, s.family, to)
	if salen == 0 {
		return 0, errAddrFamily
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errSockClosed
	}
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.fd), uintptr(ptr), uintptr(len(p)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa[0])), uintptr(salen))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// sendWait bounds how long SendToWaiting waits for room in a full send
// buffer before the datagram is dropped.
const sendWait = 100 * time.Millisecond

// SendToWaiting is SendTo for pion's goroutines: a full send buffer is
// waited on (briefly) instead of dropping the datagram at once, as on a Go
// socket; the engine's sends never wait. The wait holds no lock, so closing
// the socket meanwhile stalls nobody (polling a descriptor number closed
// meanwhile only ends the wait early).
func (s *Socket) SendToWaiting(p []byte, to netip.AddrPort) (int, error) {
	n, err := s.SendTo(p, to)
	if !BufferFull(err) {
		return n, err
	}
	s.mu.RLock()
	fd, closed := s.fd, s.closed
	s.mu.RUnlock()
	if closed {
		return 0, errSockClosed
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
	_, _ = unix.Poll(fds, int(sendWait/time.Millisecond))
	return s.SendTo(p, to)
}

// Close closes the socket once; later operations return net.ErrClosed.
func (s *Socket) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.w != nil {
		s.w.remove(s)
	}
	return unix.Close(s.fd)
}

// putSockaddr writes to as a sockaddr for a socket of family into sa and
// returns its length, or 0 if the socket cannot reach it (an IPv6 address
// on an IPv4 socket).
func putSockaddr(sa *[sockaddrLen]byte, family int, to netip.AddrPort) int {
	ip := to.Addr()
	if family == unix.AF_INET {
		if !ip.Unmap().Is4() {
			return 0
		}
		binary.NativeEndian.PutUint16(sa[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(sa[2:4], to.Port())
		a := ip.Unmap().As4()
		copy(sa[4:8], a[:])
		clear(sa[8:16])
		return unix.SizeofSockaddrInet4
	}
	binary.NativeEndian.PutUint16(sa[0:2], unix.AF_INET6)
	binary.BigEndian.PutUint16(sa[2:4], to.Port())
	clear(sa[4:8]) // flow info
	a := ip.As16() // an IPv4 address becomes v4-mapped
	copy(sa[8:24], a[:])
	clear(sa[24:28]) // scope: link-local peers are refused by the policy
	return unix.SizeofSockaddrInet6
}

// parseSockaddr reads the address the kernel wrote into sa (as recvmmsg
// fills msg_name). IPv4 peers of an IPv6 socket stay v4-mapped, as Go's
// ReadFrom returns them.
func parseSockaddr(sa *[sockaddrLen]byte) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16(sa[2:4])
	switch binary.NativeEndian.Uint16(sa[0:2]) {
	case unix.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), port), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(sa[8:24])), port), true
	}
	return netip.AddrPort{}, false
}

func sockaddrPort(sa unix.Sockaddr) int {
	switch v := sa.(type) {
	case *unix.SockaddrInet4:
		return v.Port
	case *unix.SockaddrInet6:
		return v.Port
	}
	return 0
}

// mmsghdr is struct mmsghdr (a msghdr and the length the kernel fills);
// Go pads it to the msghdr's alignment as C does, on 32- and 64-bit.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// The kernel walks arrays of mmsghdr: the sizes must agree exactly.
var (
	_ [unsafe.Sizeof(mmsghdr{}) - unix.SizeofMmsghdr]byte
	_ [unix.SizeofMmsghdr - unsafe.Sizeof(mmsghdr{})]byte
)

// recvmmsg receives up to len(ms) queued datagrams without waiting; 0 with
// a nil error means none was queued.
func (s *Socket) recvmmsg(ms []mmsghdr) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errSockClosed
	}
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&ms[0])),
			uintptr(len(ms)), unix.MSG_DONTWAIT, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, errno
	}
}

// sendmmsg sends ms without waiting and returns how many went out. With
// the send buffer full (EAGAIN, ENOBUFS) the rest is dropped at once; a
// datagram refused for itself (an unreachable destination) is skipped and
// the rest still go. The last error is returned.
func (s *Socket) sendmmsg(ms []mmsghdr) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errSockClosed
	}
	sent, failed := 0, 0
	var lastErr error
	for sent+failed < len(ms) {
		i := sent + failed
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&ms[i])),
			uintptr(len(ms)-i), unix.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == 0 && n > 0:
			sent += int(n)
		case errno == unix.EINTR:
		case BufferFull(errno):
			return sent, errno
		case errno == 0: // sent nothing and said nothing: do not spin
			return sent, unix.EIO
		default:
			failed++
			lastErr = errno
		}
	}
	return sent, lastErr
}

// BufferFull reports whether err says the socket's send buffer (or the
// kernel's) had no room: the datagram is dropped, as a full queue drops it.
func BufferFull(err error) bool { return err == unix.EAGAIN || err == unix.ENOBUFS }
