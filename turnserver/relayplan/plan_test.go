package relayplan

import (
	"net/netip"
	"testing"
)

// TestNew: where relay sockets bind and what clients are told. A
// wildcard bind_ip binds the advertised address when the host has it, so
// relayed packets leave from the advertised address even on a host with
// two global addresses of a family; only a public_ip that is not on the
// host (1:1 NAT) keeps the wildcard.
func TestNew(t *testing.T) {
	host := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("198.51.100.10"),
		netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("10.0.0.5"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("fe80::1"),
		netip.MustParseAddr("2001:db8::10"), netip.MustParseAddr("2001:db8::11"),
	}
	natHost := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.5")}
	for _, tc := range []struct {
		name                     string
		bindIP, publicIP         string
		local                    []netip.Addr
		bind4, adv4, bind6, adv6 string // "" = invalid (family off)
	}{
		{"wildcard v4, two globals", "0.0.0.0", "", host, "198.51.100.10", "198.51.100.10", "", ""},
		{"wildcard both, two globals each", "::", "", host, "198.51.100.10", "198.51.100.10", "2001:db8::10", "2001:db8::10"},
		{"public_ip on the host", "::", "198.51.100.11", host, "198.51.100.11", "198.51.100.11", "2001:db8::10", "2001:db8::10"},
		{"public_ip v6 on the host", "::", "2001:db8::11", host, "198.51.100.10", "198.51.100.10", "2001:db8::11", "2001:db8::11"},
		{"1:1 NAT keeps the wildcard", "0.0.0.0", "203.0.113.10", natHost, "0.0.0.0", "203.0.113.10", "", ""},
		{"1:1 NAT, private bind", "10.0.0.5", "203.0.113.10", natHost, "10.0.0.5", "203.0.113.10", "", ""},
		{"specific bind", "198.51.100.11", "", host, "198.51.100.11", "198.51.100.11", "", ""},
		{"specific v6 bind", "2001:db8::11", "", host, "", "", "2001:db8::11", "2001:db8::11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.bindIP, tc.publicIP, tc.local)
			if err != nil {
				t.Fatal(err)
			}
			str := func(a netip.Addr) string {
				if !a.IsValid() {
					return ""
				}
				return a.String()
			}
			got := [4]string{str(p.Bind4), str(p.Adv4), str(p.Bind6), str(p.Adv6)}
			want := [4]string{tc.bind4, tc.adv4, tc.bind6, tc.adv6}
			if got != want {
				t.Errorf("bind4, adv4, bind6, adv6 = %q, want %q", got, want)
			}
		})
	}
	if _, err := New("0.0.0.0", "", []netip.Addr{netip.MustParseAddr("127.0.0.1")}); err == nil {
		t.Error("no global address and no public_ip: want an error")
	}
}
