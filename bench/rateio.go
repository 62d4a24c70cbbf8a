//go:build linux

package main

// The relayrate generator's cheap I/O and its CPU accounting: it must
// offer several hundred thousand messages a second from one core to find
// the kernel path's loss point, so it reads each session's socket with
// recvmmsg (a batch per wake-up) and may send a session's burst as one
// UDP_SEGMENT message (GSO: one system call per burst; the harness turns
// segmentation offload off on the client's veth, so the kernel cuts the
// burst into datagrams in the client namespace, on the generator's CPU,
// and the server sees plain datagrams). Each step records the CPU the
// generator, the server process and every CPU of the machine spent, so
// the report can say which side ran out.

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rateMmsghdr is struct mmsghdr.
type rateMmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

var (
	_ [unsafe.Sizeof(rateMmsghdr{}) - unix.SizeofMmsghdr]byte
	_ [unix.SizeofMmsghdr - unsafe.Sizeof(rateMmsghdr{})]byte
)

// batchReader reads one socket with recvmmsg, parked in Go's poller while
// the socket is empty.
type batchReader struct {
	rc   syscall.RawConn
	msgs []rateMmsghdr
	iov  []unix.Iovec
	bufs []byte
}

const (
	readBatch = 64
	readSlot  = 2048
)

func newBatchReader(c *net.UDPConn) (*batchReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batchReader{rc: rc, msgs: make([]rateMmsghdr, readBatch), iov: make([]unix.Iovec, readBatch),
		bufs: make([]byte, readBatch*readSlot)}
	for i := range b.msgs {
		b.iov[i].Base = &b.bufs[i*readSlot]
		b.iov[i].SetLen(readSlot)
		b.msgs[i].hdr.Iov = &b.iov[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b, nil
}

// read waits for datagrams and calls fn with each; it returns the error
// that ends reading (the socket closed).
func (b *batchReader) read(fn func(d []byte)) error {
	for {
		n := 0
		var errno syscall.Errno
		err := b.rc.Read(func(fd uintptr) bool {
			r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)),
				unix.MSG_DONTWAIT, 0, 0)
			if e == unix.EAGAIN {
				return false // wait in the poller
			}
			n, errno = int(r), e
			return true
		})
		if err != nil {
			return err
		}
		if errno != 0 && errno != unix.EINTR {
			return errno
		}
		for i := range n {
			fn(b.bufs[i*readSlot : i*readSlot+int(b.msgs[i].n)])
		}
	}
}

// gsoWriter sends k copies of a message (each stamped by the caller) as
// one UDP_SEGMENT message.
type gsoWriter struct {
	buf []byte
	oob []byte
}

func newGSOWriter(size int) *gsoWriter {
	w := &gsoWriter{buf: make([]byte, 64*size), oob: make([]byte, unix.CmsgSpace(2))}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&w.oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(w.oob[unix.CmsgLen(0):], uint16(size))
	return w
}

// send sends msgs (k messages of equal size laid out in w.buf) to dst.
func (w *gsoWriter) send(c *net.UDPConn, k, size int, dst netip.AddrPort) error {
	if k == 1 {
		_, err := c.WriteToUDPAddrPort(w.buf[:size], dst)
		return err
	}
	_, _, err := c.WriteMsgUDPAddrPort(w.buf[:k*size], w.oob, dst)
	return err
}

// cpuSample is the CPU time of the machine's CPUs, this process and the
// server process at one moment.
type cpuSample struct {
	busy, softirq, total []int64 // per CPU, in ticks
	self                 int64   // this process, µs
	server               int64   // the server process, ticks (0 without a pid)
	// Where datagrams were dropped: the generator's sockets (its
	// namespace's RcvbufErrors), the server's namespace's, and each CPU's
	// input backlog (softnet_stat; with RPS the veth's packets queue
	// there for the other CPU, netdev_max_backlog at most).
	genUDP, srvUDP udpCounters
	backlog        []int64
}

func takeCPUSample(serverPID int) (cpuSample, error) {
	var s cpuSample
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal
		var v [8]int64
		for i := range v {
			v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
		}
		idle := v[3] + v[4]
		busy := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
		s.busy, s.softirq, s.total = append(s.busy, busy), append(s.softirq, v[6]), append(s.total, busy+idle)
	}
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return s, err
	}
	s.self = ru.Utime.Sec*1e6 + int64(ru.Utime.Usec) + ru.Stime.Sec*1e6 + int64(ru.Stime.Usec)
	if serverPID > 0 {
		if s.server, err = cpuTicks(serverPID); err != nil {
			return s, fmt.Errorf("server CPU: %w", err)
		}
		if s.srvUDP, err = readUDP(serverPID); err != nil {
			return s, err
		}
	}
	if s.genUDP, err = readUDP(os.Getpid()); err != nil {
		return s, err
	}
	s.backlog, err = backlogDrops()
	return s, err
}

// backlogDrops reads the packets each CPU's input backlog dropped
// (/proc/net/softnet_stat: the second column; the 13th, where present,
// numbers the CPU).
func backlogDrops() ([]int64, error) {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return nil, err
	}
	var out []int64
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		cpu := i
		if len(f) >= 13 {
			if c, err := strconv.ParseInt(f[12], 16, 64); err == nil {
				cpu = int(c)
			}
		}
		d, err := strconv.ParseInt(f[1], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("softnet_stat: %q", line)
		}
		for len(out) <= cpu {
			out = append(out, 0)
		}
		out[cpu] = d
	}
	return out, nil
}

// stepCPU is what a step cost, as fractions of one CPU over its wall time.
type stepCPU struct {
	Gen     float64   `json:"gen_cpu"`    // the generator process
	Server  float64   `json:"server_cpu"` // the server process (user + system; softirq is the CPUs')
	Busy    []float64 `json:"cpu_busy"`   // each CPU: busy (incl. softirq, and other work on the machine)
	Softirq []float64 `json:"cpu_softirq"`
	// Datagrams dropped: at the generator's sockets, the server's, and
	// in each CPU's input backlog (the whole machine's).
	GenDrops     int64   `json:"gen_drops"`
	ServerDrops  int64   `json:"server_drops"`
	BacklogDrops []int64 `json:"backlog_drops"`
}

func cpuBetween(a, b cpuSample, wallSec float64) stepCPU {
	c := stepCPU{Gen: float64(b.self-a.self) / 1e6 / wallSec, Server: ticksToMicros(b.server-a.server) / 1e6 / wallSec,
		GenDrops: b.genUDP.RcvbufErrors - a.genUDP.RcvbufErrors, ServerDrops: b.srvUDP.RcvbufErrors - a.srvUDP.RcvbufErrors}
	for i := range min(len(a.backlog), len(b.backlog)) {
		c.BacklogDrops = append(c.BacklogDrops, b.backlog[i]-a.backlog[i])
	}
	for i := range min(len(a.busy), len(b.busy)) {
		tot := float64(b.total[i] - a.total[i])
		if tot <= 0 {
			c.Busy, c.Softirq = append(c.Busy, 0), append(c.Softirq, 0)
			continue
		}
		c.Busy = append(c.Busy, float64(b.busy[i]-a.busy[i])/tot)
		c.Softirq = append(c.Softirq, float64(b.softirq[i]-a.softirq[i])/tot)
	}
	return c
}
