//go:build !icebox_portable

package udpengine

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP GSO (UDP_SEGMENT): a run of datagrams one socket sends to one
// destination in a round — a client's burst relayed to its peer — leaves
// in one message that the kernel (or the device) cuts into datagrams of
// the run's size: one trip down the stack instead of one per datagram.
// The datagrams stay where the Handlers put them (one iovec each); every
// one of a run has the first's size but the last, which may be shorter
// (the kernel's rule). A socket whose GSO send fails with EIO (a device
// without checksum offload) or EINVAL (a segment over the path's MTU)
// sends one datagram per message from then on.

const (
	gsoMaxSegments = 64    // UDP_MAX_SEGMENTS
	gsoMaxBytes    = 65000 // a UDP datagram's payload, with room for headers
	// gsoMaxSegment: larger datagrams are sent one by one (a segment over
	// the path's MTU fails the whole message with EINVAL).
	gsoMaxSegment = 1400
	gsoCmsgSpace  = 24 // CmsgSpace(2) on 64-bit; checked in init
)

// gsoBatch is a round's scratch for coalesced messages.
type gsoBatch struct {
	msgs  []mmsghdr
	iov   []unix.Iovec
	ctl   [][gsoCmsgSpace]byte
	count []int // datagrams per message
}

func newGSOBatch() *gsoBatch {
	return &gsoBatch{
		msgs: make([]mmsghdr, 0, poolSlots), iov: make([]unix.Iovec, poolSlots),
		ctl: make([][gsoCmsgSpace]byte, poolSlots), count: make([]int, 0, poolSlots),
	}
}

func init() {
	if unix.CmsgSpace(2) > gsoCmsgSpace {
		panic("udpengine: UDP_SEGMENT control message does not fit")
	}
}

// sameDest reports whether a and b go to the same address.
func sameDest(a, b *mmsghdr) bool {
	if a.hdr.Namelen != b.hdr.Namelen {
		return false
	}
	n := int(a.hdr.Namelen)
	return string(unsafe.Slice(a.hdr.Name, n)) == string(unsafe.Slice(b.hdr.Name, n))
}

func iovLen(m *mmsghdr) uint64 { return uint64(m.hdr.Iov.Len) }

// coalesce rewrites ms (one socket's messages, one iovec each) into g's
// messages, runs to one destination joined with UDP_SEGMENT; ok is false
// when there is no run to join (send ms as they are).
func (g *gsoBatch) coalesce(ms []mmsghdr) (out []mmsghdr, ok bool) {
	joined := false
	for i := 1; i < len(ms); i++ {
		if sameDest(&ms[i-1], &ms[i]) && iovLen(&ms[i]) <= iovLen(&ms[i-1]) {
			joined = true
			break
		}
	}
	if !joined {
		return ms, false
	}
	g.msgs, g.count = g.msgs[:0], g.count[:0]
	iov := 0
	for i := 0; i < len(ms); {
		seg := iovLen(&ms[i])
		j, total := i+1, seg
		// A run: same destination, the first's size; the last may be
		// shorter and ends it.
		for seg <= gsoMaxSegment && j < len(ms) && j-i < gsoMaxSegments && sameDest(&ms[i], &ms[j]) &&
			iovLen(&ms[j]) <= seg && total+iovLen(&ms[j]) <= gsoMaxBytes {
			total += iovLen(&ms[j])
			j++
			if iovLen(&ms[j-1]) < seg {
				break
			}
		}
		m := ms[i] // the name and flags of the first
		first := iov
		for k := i; k < j; k++ {
			g.iov[iov] = *ms[k].hdr.Iov
			iov++
		}
		m.hdr.Iov = &g.iov[first]
		m.hdr.SetIovlen(j - i)
		m.hdr.Control, m.hdr.Controllen = nil, 0
		if j-i > 1 {
			c := &g.ctl[len(g.msgs)]
			h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
			h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
			h.SetLen(unix.CmsgLen(2))
			*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(seg)
			m.hdr.Control = &c[0]
			m.hdr.SetControllen(unix.CmsgSpace(2))
		}
		g.msgs = append(g.msgs, m)
		g.count = append(g.count, j-i)
		i = j
	}
	return g.msgs, true
}

// gsoSupported probes UDP_SEGMENT on fd (Linux 4.18+).
func gsoSupported(fd int) bool {
	_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
	return err == nil
}
