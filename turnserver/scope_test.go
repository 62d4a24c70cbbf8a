package turnserver

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// TestScopedPolicy: what a scoped allocation may reach among the peers its
// allow-list names. The rules still decide for other hosts (the built-in
// deny-list and denied_peers win); on this host's addresses the allow-list
// replaces the host-address rule and the built-in deny-list, but not the
// operator's denied_peers, and never opens a service port.
func TestScopedPolicy(t *testing.T) {
	p, err := NewPolicy(PolicyConfig{
		Denied:       []string{"203.0.113.66/32", "192.168.1.20/32"},
		Allowed:      []string{"10.9.0.0/16"},
		RelayAddrs:   []netip.Addr{netip.MustParseAddr("198.51.100.1")},
		LocalAddrs:   []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("192.168.1.20")},
		ServicePorts: []uint16{3478, 8080},
		MinPort:      49152, MaxPort: 65535,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		peer string
		want bool
	}{
		{"8.8.8.8:7881", true},          // an SFU elsewhere
		{"203.0.113.66:7881", false},    // denied_peers
		{"10.0.0.5:7881", false},        // built-in deny-list, another host
		{"10.9.0.5:7881", true},         // allowed_peers
		{"192.168.1.10:7881", true},     // this host's LAN address: the managed SFU
		{"198.51.100.1:50000", true},    // the relay address
		{"127.0.0.1:7881", true},        // loopback is this host too
		{"198.51.100.1:3478", false},    // a service port of this host
		{"127.0.0.1:8080", false},       // same on loopback
		{"192.168.1.20:7881", false},    // this host, but denied_peers
		{"0.0.0.0:7881", false},         // never a peer
		{"[::ffff:8.8.8.8]:7881", true}, // mapped: judged as IPv4
	} {
		ap := netip.MustParseAddrPort(tc.peer)
		ap = netip.AddrPortFrom(Canonical(ap.Addr()), ap.Port())
		if got := p.allowListed(ap); got != tc.want {
			t.Errorf("allowListed(%s) = %v, want %v", tc.peer, got, tc.want)
		}
	}
	if _, err := newPeerScope([]PeerRange{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), MinPort: 1, MaxPort: 65535}}); err == nil {
		t.Error("an allow-list of everything was accepted")
	}
	if _, err := newPeerScope([]PeerRange{{Prefix: netip.MustParsePrefix("8.8.8.8/32"), MinPort: 9, MaxPort: 8}}); err == nil {
		t.Error("a reversed port range was accepted")
	}
	s, err := newPeerScope([]PeerRange{{Prefix: netip.MustParsePrefix("::ffff:8.8.8.0/120"), MinPort: 7881, MaxPort: 7882}})
	if err != nil {
		t.Fatal(err)
	}
	if !s.allow(netip.MustParseAddrPort("8.8.8.9:7882")) || s.allow(netip.MustParseAddrPort("8.8.8.9:7883")) || s.allow(netip.MustParseAddrPort("8.8.9.9:7881")) {
		t.Error("a mapped prefix is not judged as its IPv4 prefix")
	}
	var none *peerScope
	if none.allow(netip.MustParseAddrPort("8.8.8.8:1")) || none.allowIP(netip.MustParseAddr("8.8.8.8")) {
		t.Error("no allow-list allowed something")
	}
}

// TestFrameReader: over a TCP stream of STUN messages and padded
// ChannelData, cut anywhere into reads, frameReader shows every STUN
// message whole and nothing else, as pion's STUNConn frames them.
func TestFrameReader(t *testing.T) {
	var stream []byte
	var want [][]byte
	for i := range 6 {
		if i%2 == 0 {
			m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodChannelBind, stun.ClassRequest),
				stun.NewUsername(fmt.Sprintf("user-%d", i)), stun.Fingerprint)
			stream = append(stream, m.Raw...)
			want = append(want, m.Raw)
			continue
		}
		payload := bytes.Repeat([]byte{byte(i)}, 5+i) // odd lengths: padded on TCP
		d := binary.BigEndian.AppendUint16(nil, 0x4000)
		d = binary.BigEndian.AppendUint16(d, uint16(len(payload)))
		d = append(d, payload...)
		for len(d)%4 != 0 {
			d = append(d, 0)
		}
		stream = append(stream, d...)
	}
	big := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		stun.RawAttribute{Type: stun.AttrData, Value: make([]byte, maxObservedFrame)})
	last := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest))
	stream = append(append(stream, big.Raw...), last.Raw...)
	want = append(want, last.Raw) // the oversized one is skipped unseen
	for cut := 1; cut <= 64; cut++ {
		var f frameReader
		var got [][]byte
		for p := stream; len(p) > 0; {
			n := min(cut, len(p))
			f.feed(p[:n], func(m []byte) { got = append(got, append([]byte(nil), m...)) })
			p = p[n:]
		}
		if len(got) != len(want) || f.lost {
			t.Fatalf("reads of %d bytes: saw %d messages (lost %v), want %d", cut, len(got), f.lost, len(want))
		}
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("reads of %d bytes: message %d differs", cut, i)
			}
		}
	}
	var f frameReader
	f.feed([]byte{0x80, 0, 0, 0, 1, 2}, func([]byte) { t.Error("saw a message in garbage") })
	if !f.lost {
		t.Error("garbage not recognised as lost framing")
	}
}
