//go:build !icebox_portable

package udpengine

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP GRO (UDP_GRO): a socket that asks for it may receive a run of
// datagrams from one source — same size, the last possibly shorter — as
// one buffer, with the run's segment size in a control message: one trip
// up the stack and one slot of recvmmsg instead of one per datagram. The
// kernel coalesces what arrives as one GSO packet (a GSO sender on the
// same host, over loopback or veth: the server's own relay-to-relay runs
// among them) and, on devices doing GRO, consecutive datagrams of one flow
// within one poll. Without UDP_GRO the kernel cuts such a packet into
// datagrams before it queues them on the socket.
//
// A coalesced read needs a buffer for the whole run (up to 64 KiB), so a
// GRO socket is read into a loop's large buffers, and each segment is
// copied into a slot of its own with the headroom before it: a Handler
// sees one datagram at a time, exactly as without GRO, and may write the
// headroom without touching its neighbour.

const (
	groBufSize = 1 << 16 // a UDP packet's largest payload, with room
	// groSlots is how many buffers one recvmmsg fills (each a coalesced
	// run or a single datagram): a loop holds groSlots × 64 KiB for them.
	// As many as a socket without GRO reads at once: with 8, datagrams
	// that arrived uncoalesced took 8 times the system calls, and GRO
	// cost 30 % more CPU per message than none (bench/README.md).
	groSlots     = DefaultRecvBatch
	groCmsgSpace = 24 // CmsgSpace(4) on 64-bit; checked in init
)

func init() {
	if unix.CmsgSpace(4) > groCmsgSpace {
		panic("udpengine: UDP_GRO control message does not fit")
	}
}

// groBatch is a loop's receive scratch for GRO sockets, made with the loop
// only when the engine has GRO on.
type groBatch struct {
	in    []mmsghdr
	iov   []unix.Iovec
	names [][sockaddrLen]byte
	ctl   [][groCmsgSpace]byte
	bufs  []byte
}

func newGROBatch() *groBatch {
	g := &groBatch{
		in: make([]mmsghdr, groSlots), iov: make([]unix.Iovec, groSlots),
		names: make([][sockaddrLen]byte, groSlots), ctl: make([][groCmsgSpace]byte, groSlots),
		bufs: make([]byte, groSlots*groBufSize),
	}
	for i := range g.in {
		g.iov[i].Base = &g.bufs[i*groBufSize]
		g.iov[i].SetLen(groBufSize)
		g.in[i].hdr.Name = &g.names[i][0]
		g.in[i].hdr.Iov = &g.iov[i]
		g.in[i].hdr.SetIovlen(1)
		g.in[i].hdr.Control = &g.ctl[i][0]
	}
	return g
}

// enableGRO asks for coalesced receives on fd (Linux 5.0+); false where
// the kernel has no UDP_GRO.
func enableGRO(fd int) bool {
	return unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
}

// groSegment is the segment size the kernel reported for m (its UDP_GRO
// control message), 0 when m holds one datagram.
func groSegment(m *mmsghdr, ctl *[groCmsgSpace]byte) int {
	n := min(int(m.hdr.Controllen), groCmsgSpace)
	for off := 0; off+unix.CmsgLen(0) <= n; {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[off]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || off+l > n {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(*(*int32)(unsafe.Pointer(&ctl[off+unix.CmsgLen(0)])))
		}
		off += unix.CmsgSpace(l - unix.CmsgLen(0))
	}
	return 0
}

// serveGRO reads a GRO socket once (up to groSlots coalesced buffers) and
// hands every datagram to its Handler, each copied into a slot from used
// on; it returns the slots in use. A full pool is flushed first.
func (w *worker) serveGRO(sock *Socket, used int) int {
	g, r := w.gro, &w.round
	ms := g.in[:min(w.e.batch, groSlots)]
	for i := range ms {
		ms[i].hdr.Namelen = sockaddrLen
		ms[i].hdr.SetControllen(groCmsgSpace)
	}
	got, err := sock.recvmmsg(ms)
	if err != nil {
		if SocketError(err) {
			w.e.sampled.Warn().Err(err).Stringer("socket", addrPortStringer(sock.local)).Msg("relay loop: receive failed")
		}
		return used
	}
	for i := range got {
		m := &ms[i]
		if m.hdr.Flags&unix.MSG_TRUNC != 0 {
			continue
		}
		from, ok := parseSockaddr(&g.names[i])
		if !ok {
			continue
		}
		data := g.bufs[i*groBufSize : i*groBufSize+int(m.n)]
		seg := groSegment(m, &g.ctl[i])
		if seg <= 0 || seg >= len(data) {
			seg = max(len(data), 1) // one datagram (an empty one included)
		} else {
			w.e.coalesced.Add(1)
		}
		if seg > RecvBufferSize {
			continue // longer than any datagram pion takes, as without GRO
		}
		for off := 0; off == 0 || off < len(data); off += seg {
			d := data[off:min(off+seg, len(data))]
			if used == poolSlots {
				r.flush() // the slots' datagrams are sent: the slots are free
				used = 0
			}
			slot := w.bufs[used*slotSize : used*slotSize+Headroom+len(d)]
			copy(slot[Headroom:], d)
			used++
			sock.h.Receive(r, slot, from)
		}
	}
	return used
}
