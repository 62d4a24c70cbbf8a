package turnserver

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestChannelFastPathGRO: with turn.udp_gro on, a peer's GSO burst to the
// relay address arrives coalesced on the relay socket and still reaches
// the client as one ChannelData message per datagram — a short last one
// included — intact and in order, on the fast path.
func TestChannelFastPathGRO(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true, udpGRO: UDPGROOn})
	cred := r.mint(t, "alice", "call-gro", time.Hour)
	c := r.newClient(t, overUDP, cred.Username, cred.Password, 0)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	peer := newPeer(t)
	exchange(t, relay, peer)
	buf := make([]byte, 1500)
	waitFor(t, "the channel on the fast path", 5*time.Second, func() bool {
		if _, err := relay.WriteTo([]byte("warm-up"), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, _ = peer.ReadFrom(buf)
		toPeer, _ := r.srv.fastPathCounts()
		return toPeer > 0
	})
	to, ok := addrPortOf(relay.LocalAddr())
	if !ok {
		t.Fatalf("relay address %v", relay.LocalAddr())
	}
	// 4 × 300 bytes and 1 × 120, as one UDP_SEGMENT message.
	var want [][]byte
	for k := range 5 {
		n := 300
		if k == 4 {
			n = 120
		}
		want = append(want, bytes.Repeat([]byte{byte('a' + k)}, n))
	}
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], 300)
	_, before := r.srv.fastPathCounts()
	if _, _, err := peer.WriteMsgUDPAddrPort(bytes.Join(want, nil), oob, to); err != nil {
		t.Fatalf("GSO send: %v", err)
	}
	for i, w := range want {
		_ = relay.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, src, err := relay.ReadFrom(buf)
		if err != nil || !bytes.Equal(buf[:n], w) || src.String() != peer.LocalAddr().String() {
			t.Fatalf("client: datagram %d = %d bytes of %q from %v, %v; want %d of %q", i, n, buf[:min(n, 1)], src, err, len(w), w[:1])
		}
	}
	if _, after := r.srv.fastPathCounts(); after-before < uint64(len(want)) {
		t.Errorf("fast path carried %d to the client, want %d", after-before, len(want))
	}
}
