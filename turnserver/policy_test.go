package turnserver

import (
	"net/netip"
	"testing"
)

func mustPolicy(t *testing.T, cfg PolicyConfig) *Policy {
	t.Helper()
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"::ffff:127.0.0.1", "127.0.0.1"},
		{"64:ff9b::7f00:1", "127.0.0.1"},
		{"64:ff9b::a9fe:a9fe", "169.254.169.254"},
		{"2002:7f00:1::", "127.0.0.1"},
		{"2002:a00:1:1234::1", "10.0.0.1"},
		{"::127.0.0.1", "127.0.0.1"},
		{"::", "::"},
		{"::1", "::1"},
		{"2001:4860:4860::8888", "2001:4860:4860::8888"},
		{"8.8.8.8", "8.8.8.8"},
	} {
		if got := Canonical(netip.MustParseAddr(tc.in)); got.String() != tc.want {
			t.Errorf("Canonical(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestDefaultPolicyDenies(t *testing.T) {
	p := mustPolicy(t, PolicyConfig{})
	for _, s := range []string{
		"127.0.0.1", "0.0.0.0", "0.1.2.3", "::1", "::", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
		"169.254.169.254", "10.0.0.1", "172.16.5.4", "192.168.1.1", "100.64.0.1", "198.18.0.10",
		"192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9", "224.0.0.251", "240.0.0.1",
		"255.255.255.255", "fe80::1", "fec0::1", "fd00::1", "ff02::1", "100::1", "2001:db8::1",
		"2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
		"64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:7f00:1::", "2002:c0a8:101::1", "::127.0.0.1",
	} {
		ip := netip.MustParseAddr(s)
		if p.AllowIP(ip) {
			t.Errorf("AllowIP(%s) = true, want denied by default", s)
		}
		if p.Allow(netip.AddrPortFrom(ip, 5000)) {
			t.Errorf("Allow(%s:5000) = true, want denied by default", s)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "2001:4860:4860::8888", "64:ff9b::808:808", "2002:808:808::1"} {
		if !p.AllowIP(netip.MustParseAddr(s)) {
			t.Errorf("AllowIP(%s) = false, want allowed", s)
		}
	}
}

func TestPolicyLists(t *testing.T) {
	p := mustPolicy(t, PolicyConfig{
		Allowed: []string{"10.0.0.0/8", "198.18.0.0/15", "192.168.1.7"},
		Denied:  []string{"10.9.0.0/16", "8.8.8.8", "192.168.1.7/32"},
	})
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"10.1.2.3", true},     // allowed over the default deny
		{"10.9.1.1", false},    // a more specific deny wins
		{"198.19.0.1", true},   // test-bed range allowed
		{"8.8.8.8", false},     // operator deny of a public address
		{"192.168.1.7", false}, // allow and deny of the same prefix: deny wins
		{"192.168.1.8", false}, // still the default deny
		{"::ffff:10.1.2.3", true},
	} {
		if got := p.AllowIP(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("AllowIP(%s) = %v, want %v", tc.ip, got, tc.want)
		}
	}
}

func TestPolicyOwnAddressesAndServicePorts(t *testing.T) {
	relay := netip.MustParseAddr("203.0.113.5") // a documentation address, denied by default
	p := mustPolicy(t, PolicyConfig{
		RelayAddrs:   []netip.Addr{relay},
		MinPort:      49152,
		MaxPort:      65535,
		LocalAddrs:   []netip.Addr{relay, netip.MustParseAddr("192.0.2.80")},
		ServicePorts: []uint16{3478, 8080},
	})
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"203.0.113.5:50000", true}, // relay to relay
		{"203.0.113.5:22", false},   // own address outside the relay range
		{"203.0.113.5:3478", false}, // own listener
		{"[::ffff:203.0.113.5]:50000", true},
	} {
		if got := p.Allow(netip.MustParseAddrPort(tc.addr)); got != tc.want {
			t.Errorf("Allow(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if !p.AllowIP(relay) {
		t.Error("AllowIP(own relay address) = false")
	}

	loop := mustPolicy(t, PolicyConfig{AllowLoopback: true, ServicePorts: []uint16{3478, 8080}})
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:5000", true},
		{"127.0.0.1:8080", false}, // the HTTP API, never through the relay
		{"[::1]:3478", false},
		{"[::ffff:127.0.0.1]:8080", false},
		{"0.0.0.0:5000", false},
	} {
		if got := loop.Allow(netip.MustParseAddrPort(tc.addr)); got != tc.want {
			t.Errorf("loopback policy Allow(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func TestNewPolicyRejectsBadCIDR(t *testing.T) {
	_, err := NewPolicy(PolicyConfig{Allowed: []string{"10.0.0.0/33"}})
	if err == nil || err.Error() != `turnserver: allowed_peers[0]: invalid CIDR or IP "10.0.0.0/33"` {
		t.Fatalf("got %v", err)
	}
}

func BenchmarkPolicyAllow(b *testing.B) {
	p, err := NewPolicy(PolicyConfig{AllowLoopback: true, ServicePorts: []uint16{3478, 8080}})
	if err != nil {
		b.Fatal(err)
	}
	peer := netip.MustParseAddrPort("93.184.216.34:40000")
	b.ReportAllocs()
	for b.Loop() {
		if !p.Allow(peer) {
			b.Fatal("denied")
		}
	}
}

func FuzzPolicy(f *testing.F) {
	for _, s := range []string{"::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "10.0.0.1", "8.8.8.8", "::"} {
		f.Add(netip.MustParseAddr(s).AsSlice(), uint16(5000))
	}
	p, err := NewPolicy(PolicyConfig{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, port uint16) {
		ip, ok := netip.AddrFromSlice(raw)
		if !ok {
			return
		}
		c := Canonical(ip)
		// Whatever form an address takes, the verdict is that of its
		// canonical form, and loopback never passes.
		if p.AllowIP(ip) != p.AllowIP(c) {
			t.Fatalf("AllowIP(%s) != AllowIP(canonical %s)", ip, c)
		}
		if (c.IsLoopback() || c.IsUnspecified() || c.IsPrivate() || c.IsLinkLocalUnicast()) &&
			p.Allow(netip.AddrPortFrom(ip, port)) {
			t.Fatalf("Allow(%s) passed a loopback/private/link-local address", ip)
		}
	})
}
