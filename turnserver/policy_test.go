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
		"64:ff9b:1::a00:1", "64:ff9b:1:ffff::7f00:1", // NAT64 local-use (RFC 8215), any embedding
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
	base := mustPolicy(t, PolicyConfig{
		RelayAddrs:   []netip.Addr{relay},
		MinPort:      49152,
		MaxPort:      65535,
		LocalAddrs:   []netip.Addr{relay, netip.MustParseAddr("192.0.2.80")},
		ServicePorts: []uint16{3478, 8080},
	})
	// Live relay sockets: UDP 50000 and TCP 50002 (and 22, which is out of
	// the range and so never counts).
	p := base.forServer(func(network int, port uint16) bool {
		return network == netUDP4 && (port == 50000 || port == 22) || network == netTCP4 && port == 50002
	}, nil)
	for _, tc := range []struct {
		addr     string
		udp, tcp bool
	}{
		{"203.0.113.5:50000", true, false},  // relay to relay, over UDP only
		{"203.0.113.5:50002", false, true},  // an RFC 6062 relay listener
		{"203.0.113.5:50001", false, false}, // in the range, no relay there (WireGuard?)
		{"203.0.113.5:22", false, false},    // own address outside the relay range
		{"203.0.113.5:3478", false, false},  // own listener
		{"[::ffff:203.0.113.5]:50000", true, false},
		{"[64:ff9b::cb00:7105]:50000", true, false}, // NAT64 form of the relay address
	} {
		ap := netip.MustParseAddrPort(tc.addr)
		if got := p.Allow(ap); got != tc.udp {
			t.Errorf("Allow(%s) = %v, want %v", tc.addr, got, tc.udp)
		}
		if got := p.AllowTCP(ap); got != tc.tcp {
			t.Errorf("AllowTCP(%s) = %v, want %v", tc.addr, got, tc.tcp)
		}
	}
	// A policy not attached to a server knows no live relay port.
	if base.Allow(netip.MustParseAddrPort("203.0.113.5:50000")) {
		t.Error("Allow(own address) = true without live relay ports")
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
	for _, tc := range []struct {
		cfg  PolicyConfig
		want string
	}{
		{PolicyConfig{Allowed: []string{"10.0.0.0/33"}}, `turnserver: allowed_peers[0]: invalid CIDR or IP "10.0.0.0/33"`},
		{PolicyConfig{Denied: []string{"8.8.8.8", "::ffff:0:0/95"}}, `turnserver: denied_peers[1]: IPv4-mapped prefix "::ffff:0:0/95" is shorter than /96`},
	} {
		_, err := NewPolicy(tc.cfg)
		if err == nil || err.Error() != tc.want {
			t.Errorf("got %v, want %s", err, tc.want)
		}
	}
}

func TestPolicyListsWithIPv4MappedCIDRs(t *testing.T) {
	// Peers are reduced to IPv4 before the rules see them, so are the
	// operator's IPv4-mapped CIDRs.
	p := mustPolicy(t, PolicyConfig{
		Denied:  []string{"::ffff:8.8.8.8/128", "::ffff:1.1.1.0/120"},
		Allowed: []string{"::ffff:10.0.0.0/104"},
	})
	for _, tc := range []struct {
		ip   string
		want bool
	}{
		{"8.8.8.8", false},
		{"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false},
		{"1.1.1.1", false},
		{"1.1.2.1", true},
		{"10.2.3.4", true}, // allowed over the default deny
		{"8.8.4.4", true},
	} {
		if got := p.AllowIP(netip.MustParseAddr(tc.ip)); got != tc.want {
			t.Errorf("AllowIP(%s) = %v, want %v", tc.ip, got, tc.want)
		}
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
	// A server policy whose relay address is 203.0.113.5 (denied by
	// default) with one live UDP relay socket, on 50000.
	relay := netip.MustParseAddr("203.0.113.5")
	f.Add(relay.AsSlice(), uint16(50000))
	f.Add(netip.MustParseAddr("::ffff:203.0.113.5").AsSlice(), uint16(50001))
	own, err := NewPolicy(PolicyConfig{RelayAddrs: []netip.Addr{relay}, MinPort: 49152, MaxPort: 65535, ServicePorts: []uint16{50010}})
	if err != nil {
		f.Fatal(err)
	}
	own = own.forServer(func(network int, port uint16) bool {
		return network == netUDP4 && (port == 50000 || port == 50010)
	}, nil)
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
		// The server's own address is reachable on its live relay port
		// only, in every form, and never over TCP where only UDP is live.
		if c == relay {
			ap := netip.AddrPortFrom(ip, port)
			if want := port == 50000; own.Allow(ap) != want || own.AllowTCP(ap) {
				t.Fatalf("own policy: Allow(%s) = %v, AllowTCP = %v", ap, own.Allow(ap), own.AllowTCP(ap))
			}
		}
	})
}
