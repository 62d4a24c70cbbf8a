//go:build !icebox_portable

package udpengine

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// burstHandler answers each datagram with a burst to its source: sizes[i]
// bytes of i+1 each, queued in one round.
type burstHandler struct {
	sock  *Socket
	sizes []int
}

func (h *burstHandler) Receive(r *Round, _ []byte, from netip.AddrPort) {
	for i, n := range h.sizes {
		r.Send(h.sock, bytes.Repeat([]byte{byte(i + 1)}, n), from)
	}
}

// TestGSORuns: a burst to one destination — runs of one size, a shorter
// last one, a size change, datagrams too big to join — arrives whole, in
// order, datagram by datagram, with GSO on the socket (or without, where
// the kernel has none).
func TestGSORuns(t *testing.T) {
	sizes := []int{300, 300, 300, 300, 120, 500, 500, 1450, 1450, 64, 64, 64}
	for range 70 { // a run longer than 64 segments
		sizes = append(sizes, 100)
	}
	e := newTestEngine(t, 1)
	sock := openLoopback(t)
	t.Logf("UDP_SEGMENT offered: %v", sock.gso.Load())
	if err := e.Add(sock, &burstHandler{sock: sock, sizes: sizes}); err != nil {
		t.Fatal(err)
	}
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_ = client.SetReadBuffer(1 << 20)
	if _, err := client.WriteToUDPAddrPort([]byte("go"), sock.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for i, n := range sizes {
		_ = client.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, err := client.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:m], bytes.Repeat([]byte{byte(i + 1)}, n)) {
			t.Fatalf("datagram %d: %d bytes of %d, want %d of %d", i, m, buf[0], n, byte(i+1))
		}
	}
	if gsoSupported(sock.fd) && !sock.gso.Load() {
		t.Error("GSO turned off on loopback")
	}
}

// TestGSOCoalesce: runs to one destination become one message each with
// UDP_SEGMENT set to the run's size; other destinations break runs.
func TestGSOCoalesce(t *testing.T) {
	ob := newOutBatch()
	a, b := netip.MustParseAddrPort("192.0.2.1:1000"), netip.MustParseAddrPort("192.0.2.2:1000")
	var ms []mmsghdr
	for i, d := range []struct {
		to   netip.AddrPort
		size int
	}{{a, 100}, {a, 100}, {a, 40}, {a, 100}, {b, 100}, {a, 100}, {a, 100}} {
		ob.msgs[i].hdr.Namelen = uint32(putSockaddr(&ob.names[i], 2, d.to))
		p := make([]byte, d.size)
		ob.iov[i].Base = &p[0]
		ob.iov[i].SetLen(d.size)
		ms = append(ms, ob.msgs[i])
	}
	g := newGSOBatch()
	out, ok := g.coalesce(ms)
	if !ok {
		t.Fatal("no run joined")
	}
	want := []int{3, 1, 1, 2}
	if len(out) != len(want) {
		t.Fatalf("%d messages %v, want %v", len(out), g.count, want)
	}
	for i, c := range want {
		if g.count[i] != c || int(out[i].hdr.Iovlen) != c || (c > 1) != (out[i].hdr.Control != nil) {
			t.Errorf("message %d: %d datagrams, %d iovecs, control %v; want %d", i, g.count[i], out[i].hdr.Iovlen, out[i].hdr.Control != nil, c)
		}
	}
}
