//go:build !icebox_portable

package udpengine

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// gsoRun is one GSO message: n datagrams of size bytes and, if last > 0, a
// shorter one of last bytes; datagram k is filled with byte first+k.
type gsoRun struct {
	size, n, last int
	first         byte
}

func (g gsoRun) datagrams() [][]byte {
	var out [][]byte
	for k := range g.n {
		out = append(out, bytes.Repeat([]byte{g.first + byte(k)}, g.size))
	}
	if g.last > 0 {
		out = append(out, bytes.Repeat([]byte{g.first + byte(g.n)}, g.last))
	}
	return out
}

// send sends the run from c to dst as one message with UDP_SEGMENT (one
// datagram without it): over loopback it stays one packet, which a
// socket with UDP_GRO receives coalesced.
func (g gsoRun) send(t *testing.T, c *net.UDPConn, dst netip.AddrPort) {
	t.Helper()
	payload := bytes.Join(g.datagrams(), nil)
	var oob []byte
	if g.n+min(g.last, 1) > 1 {
		oob = make([]byte, unix.CmsgSpace(2))
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		h.SetLen(unix.CmsgLen(2))
		binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(g.size))
	}
	if _, _, err := c.WriteMsgUDPAddrPort(payload, oob, dst); err != nil {
		t.Fatalf("GSO send of %+v: %v", g, err)
	}
}

// requireGRO skips (fails under CI=true) where the kernel has no UDP_GRO.
func requireGRO(t *testing.T, s *Socket) {
	t.Helper()
	if s.gro || enableGRO(s.fd) {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the kernel offers no UDP_GRO (Linux 5.0+)")
	}
	t.Skip("the kernel offers no UDP_GRO (Linux 5.0+)")
}

func newGROEngine(t *testing.T) *Engine {
	t.Helper()
	e, err := New(Config{Loops: 1, Batch: DefaultRecvBatch, Log: zerolog.Nop(), GRO: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func newLoopbackClient(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadBuffer(1 << 20)
	return c
}

// TestGROEcho: runs a GSO sender sends arrive coalesced on a GRO socket
// and reach its Handler one datagram at a time — a short last segment, a
// run of 64, a lone datagram — each with a headroom of its own that the
// Handler writes and sends back with the datagram; a run of datagrams
// over RecvBufferSize is dropped, as a single one is without GRO.
func TestGROEcho(t *testing.T) {
	e := newGROEngine(t)
	sock := openLoopback(t)
	if err := e.Add(sock, &echoHandler{sock: sock}); err != nil {
		t.Fatal(err)
	}
	requireGRO(t, sock)
	client := newLoopbackClient(t)
	runs := []gsoRun{
		{size: 300, n: 5, last: 120, first: 1},
		{size: 100, n: 10, first: 10},
		{size: 50, n: 1, first: 30},
		{size: RecvBufferSize + 100, n: 2, first: 40}, // dropped
		{size: 1000, n: 63, last: 999, first: 50},
		{size: 200, n: 3, first: 120},
	}
	var want [][]byte
	for _, g := range runs {
		g.send(t, client, sock.LocalAddr())
		if g.size <= RecvBufferSize {
			want = append(want, g.datagrams()...)
		}
	}
	buf := make([]byte, 65536)
	for i, d := range want {
		_ = client.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := client.Read(buf)
		if err != nil {
			t.Fatalf("echo %d of %d: %v", i, len(want), err)
		}
		got := buf[:n]
		if n < Headroom || int(binary.BigEndian.Uint16(got[0:2])) != len(d) ||
			binary.BigEndian.Uint16(got[2:4]) != uint16(i+1) || !bytes.Equal(got[Headroom:], d) {
			t.Fatalf("echo %d: %d bytes starting % x, want %d bytes of %d as datagram %d",
				i, n, got[:min(n, 8)], len(d), d[0], i+1)
		}
	}
	if e.coalesced.Load() == 0 {
		t.Error("no read was coalesced: the split was not exercised")
	}
}

// recordHandler keeps a copy of every datagram, after scribbling over the
// headroom before it (as the fast path writes a ChannelData header there).
type recordHandler struct {
	mu   sync.Mutex
	got  [][]byte
	from []netip.AddrPort
}

func (h *recordHandler) Receive(_ *Round, pkt []byte, from netip.AddrPort) {
	for i := range Headroom {
		pkt[i] = 0xee
	}
	h.mu.Lock()
	h.got = append(h.got, append([]byte(nil), pkt[Headroom:]...))
	h.from = append(h.from, from)
	h.mu.Unlock()
}

func (h *recordHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.got)
}

// TestGROFillsThePool: more coalesced datagrams than a loop holds between
// sends (8 runs of 64 queued before the loop reads, 512 > poolSlots) all
// arrive, in order, each intact and with its sender's address, from two
// senders.
func TestGROFillsThePool(t *testing.T) {
	e := newGROEngine(t)
	sock := openLoopback(t)
	requireGRO(t, sock) // on before the datagrams arrive, so they queue coalesced
	a, b := newLoopbackClient(t), newLoopbackClient(t)
	var want [][]byte
	var wantFrom []netip.AddrPort
	for i := range 8 {
		c := a
		if i%2 == 1 {
			c = b
		}
		g := gsoRun{size: 100 + i, n: 63, last: 7, first: byte(i * 20)}
		g.send(t, c, sock.LocalAddr())
		for _, d := range g.datagrams() {
			want = append(want, d)
			wantFrom = append(wantFrom, c.LocalAddr().(*net.UDPAddr).AddrPort())
		}
	}
	h := &recordHandler{}
	if err := e.Add(sock, h); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.count() < len(want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.got) != len(want) {
		t.Fatalf("%d datagrams, want %d", len(h.got), len(want))
	}
	for i := range want {
		if !bytes.Equal(h.got[i], want[i]) || h.from[i] != wantFrom[i] {
			t.Fatalf("datagram %d: %d bytes of %d from %v, want %d of %d from %v",
				i, len(h.got[i]), h.got[i][0], h.from[i], len(want[i]), want[i][0], wantFrom[i])
		}
	}
	if e.coalesced.Load() < 8 {
		t.Errorf("%d coalesced reads, want 8", e.coalesced.Load())
	}
}

// TestGROSegment: the segment size is read from the UDP_GRO control
// message; none (or a malformed one) means one datagram.
func TestGROSegment(t *testing.T) {
	var ctl [groCmsgSpace]byte
	var m mmsghdr
	if got := groSegment(&m, &ctl); got != 0 {
		t.Errorf("no control message: %d", got)
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(ctl[unix.CmsgLen(0):], 1200)
	m.hdr.SetControllen(unix.CmsgSpace(4))
	if got := groSegment(&m, &ctl); got != 1200 {
		t.Errorf("segment %d, want 1200", got)
	}
	h.SetLen(groCmsgSpace + 8) // longer than what the kernel wrote
	if got := groSegment(&m, &ctl); got != 0 {
		t.Errorf("malformed control message: %d", got)
	}
}
