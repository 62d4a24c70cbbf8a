package turnserver

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/credentials"
)

// hostPolicy is a server's policy on a host with relay address 203.0.113.5
// (denied by default, like a test bed's), a second public IPv4
// 93.184.216.34, a SLAAC IPv6 2001:4860:4860::1234 and a LAN address
// 10.1.2.3 that the operator lists in allowed_peers. Live relay sockets:
// UDP4 50000, TCP4 50002, UDP6 50004. With tracked, the second addresses
// come from the server's address tracking instead of LocalAddrs.
func hostPolicy(t testing.TB, tracked bool, allowLoopback bool) (*Policy, *hostAddrs) {
	t.Helper()
	second := []netip.Addr{
		netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2001:4860:4860::1234"),
		netip.MustParseAddr("10.1.2.3"),
	}
	cfg := PolicyConfig{
		Allowed:       []string{"10.1.2.0/24"},
		AllowLoopback: allowLoopback,
		RelayAddrs:    []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.IPv4Unspecified()},
		MinPort:       49152,
		MaxPort:       65535,
		ServicePorts:  []uint16{3478, 8080},
	}
	if !tracked {
		cfg.LocalAddrs = second
	}
	p, err := NewPolicy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hosts := &hostAddrs{}
	if tracked {
		hosts.store(second)
	}
	return p.forServer(func(network int, port uint16) bool {
		return network == netUDP4 && port == 50000 || network == netTCP4 && port == 50002 ||
			network == netUDP6 && port == 50004
	}, hosts), hosts
}

// TestSecurityHostAddressesOnlyOnLiveRelayPorts: every address of the
// host, in every form a peer can take, reaches only live relay sockets of
// the same transport — never SSH, a database, or a service in the relay
// range — also where allowed_peers covers it. Before the fix, only the
// relay address was protected; the others were open on every port but the
// service ports.
func TestSecurityHostAddressesOnlyOnLiveRelayPorts(t *testing.T) {
	for _, tracked := range []bool{false, true} {
		p, _ := hostPolicy(t, tracked, false)
		leaked := 0
		for _, tc := range []struct {
			addr     string
			udp, tcp bool
		}{
			{"93.184.216.34:22", false, false},
			{"93.184.216.34:9999", false, false},
			{"93.184.216.34:50001", false, false}, // in the relay range, no relay there
			{"93.184.216.34:50000", true, false},  // a live UDP relay port (bind_ip 0.0.0.0)
			{"93.184.216.34:50002", false, true},  // a live TCP relay listener
			{"[::ffff:93.184.216.34]:22", false, false},
			{"[64:ff9b::5db8:d822]:22", false, false},  // NAT64 form
			{"[2002:5db8:d822::1]:9999", false, false}, // 6to4 form
			{"[2001:4860:4860::1234]:22", false, false},
			{"[2001:4860:4860::1234]:50000", false, false}, // UDP4's port, not UDP6's
			{"[2001:4860:4860::1234]:50004", true, false},
			{"10.1.2.3:5432", false, false}, // LAN address in allowed_peers
			{"10.1.2.3:50000", true, false},
			{"10.1.2.4:5432", true, true}, // another machine of the allowed LAN
			{"203.0.113.5:22", false, false},
			{"203.0.113.5:50000", true, false},
			{"0.0.0.0:50000", false, false}, // the wildcard bind address is no peer
			{"[::]:50004", false, false},
			{"127.0.0.1:50000", false, false}, // loopback: the host, and denied by the rules
			{"127.0.0.2:22", false, false},
			{"[::1]:22", false, false},
			{"93.184.216.35:22", true, true}, // a neighbour, not the host
		} {
			ap := netip.MustParseAddrPort(tc.addr)
			udp, tcp := p.Allow(ap), p.AllowTCP(ap)
			if udp != tc.udp || tcp != tc.tcp {
				t.Errorf("tracked=%v %s: Allow %v, AllowTCP %v; want %v, %v", tracked, tc.addr, udp, tcp, tc.udp, tc.tcp)
			}
			if udp && !tc.udp || tcp && !tc.tcp {
				leaked++
			}
		}
		t.Logf("host addresses known from %s: %d forms leaked", map[bool]string{false: "LocalAddrs", true: "tracking"}[tracked], leaked)
	}
}

// TestSecurityHostAddressesTrackedSwap: an address the tracker learns is
// protected from the swap on, and one it forgets is an ordinary peer again.
func TestSecurityHostAddressesTrackedSwap(t *testing.T) {
	p, hosts := hostPolicy(t, true, false)
	added := netip.MustParseAddrPort("[2001:4860:4860::beef]:22")
	if !p.Allow(added) {
		t.Fatal("a public IPv6 peer not on the host is denied")
	}
	hosts.store([]netip.Addr{netip.MustParseAddr("2001:4860:4860::beef")})
	if p.Allow(added) || p.AllowTCP(added) {
		t.Fatal("an address added to the host is still reachable on port 22")
	}
	if !p.Allow(netip.MustParseAddrPort("93.184.216.34:22")) {
		t.Fatal("an address the host no longer has is still treated as its own")
	}
}

// TestPolicyLoopbackSwitch: with the test-only allow_loopback_peers, all of
// 127/8 and ::1 is open on every port but the services' (tests run their
// peers there); the host's other addresses stay strict.
func TestPolicyLoopbackSwitch(t *testing.T) {
	p, _ := hostPolicy(t, true, true)
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:22", true},
		{"127.0.0.9:9999", true},
		{"[::1]:9999", true},
		{"[::ffff:127.0.0.1]:22", true},
		{"127.0.0.1:8080", false},
		{"[::1]:3478", false},
		{"0.0.0.0:9999", false},
		{"93.184.216.34:22", false},
	} {
		if got := p.Allow(netip.MustParseAddrPort(tc.addr)); got != tc.want {
			t.Errorf("Allow(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

func BenchmarkPolicyAllowHostAddrs(b *testing.B) {
	p, hosts := hostPolicy(b, true, false)
	var many []netip.Addr
	for i := range 256 {
		many = append(many, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}))
	}
	hosts.store(append(many, netip.MustParseAddr("93.184.216.34")))
	peers := []netip.AddrPort{
		netip.MustParseAddrPort("198.51.100.7:40000"), // denied by the rules
		netip.MustParseAddrPort("93.184.216.35:40000"),
		netip.MustParseAddrPort("93.184.216.34:50000"),
		netip.MustParseAddrPort("[64:ff9b::5db8:d822]:50000"),
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.Allow(peers[i&3])
		i++
	}
}

// TestSecurityServerTracksHostAddrs: a Server re-reads the host's
// addresses (here every 10ms from a list the test changes) and its policy
// follows at once; a failing first read fails New.
func TestSecurityServerTracksHostAddrs(t *testing.T) {
	var list atomic.Pointer[[]netip.Addr]
	list.Store(&[]netip.Addr{})
	r := startRelay(t, relayOptions{
		hostAddrs:         func() ([]netip.Addr, error) { return *list.Load(), nil },
		hostAddrsInterval: 10 * time.Millisecond,
	})
	ssh := netip.MustParseAddrPort("93.184.216.34:22")
	if !r.srv.policy.Load().Allow(ssh) {
		t.Fatal("a public peer not on the host is denied")
	}
	added := time.Now()
	list.Store(&[]netip.Addr{ssh.Addr()})
	waitFor(t, "the added address to be tracked", 5*time.Second, func() bool {
		return !r.srv.policy.Load().Allow(ssh) && !r.srv.policy.Load().AllowTCP(ssh)
	})
	t.Logf("an address added to the host is protected %v later (interval 10ms)", time.Since(added).Round(time.Millisecond))
	list.Store(&[]netip.Addr{})
	waitFor(t, "the removed address to be forgotten", 5*time.Second, func() bool { return r.srv.policy.Load().Allow(ssh) })
}

func TestNewFailsWithoutHostAddrs(t *testing.T) {
	udp, _, err := ListenUDP(context.Background(), "127.0.0.1:0", 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := mustPolicy(t, PolicyConfig{})
	_, err = New(Config{
		Keyring: func() *credentials.Keyring { return nil }, Policy: p, MinPort: 40000, MaxPort: 40999,
		HostAddrs: func() ([]netip.Addr, error) { return nil, errors.New("netlink: permission denied") },
	}, Listeners{UDP: udp})
	requireErrContains(t, err, "netlink: permission denied")
	for _, c := range udp {
		_ = c.Close()
	}
}
