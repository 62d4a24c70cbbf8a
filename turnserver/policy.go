package turnserver

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// defaultDeniedPeers is the SSRF guard of DESIGN §4: addresses a relay must
// never reach unless the operator allows them explicitly. Go's netip helpers
// do not classify several of these (100.64/10, 240/4, 64:ff9b::/96, …), so the
// list is explicit.
var defaultDeniedPeers = []string{
	"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
	"172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
	"198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
	"255.255.255.255/32",
	"::/128", "::1/128", "fe80::/10", "fec0::/10", "fc00::/7", "ff00::/8", "100::/64",
	"2001:db8::/32", "2001::/32",
	// NAT64 local-use prefix (RFC 8215): the operator picks where the IPv4
	// address sits (any length /48–/96), so it cannot be reduced; a NAT64
	// gateway would carry such a peer into the IPv4 network behind it.
	"64:ff9b:1::/48",
}

// DefaultDeniedPeers returns the built-in deny-list, for documentation and tests.
func DefaultDeniedPeers() []string { return slices.Clone(defaultDeniedPeers) }

// Prefixes that embed an IPv4 address; a peer inside them is judged by that
// IPv4 address, so ::ffff:127.0.0.1 or 64:ff9b::7f00:1 cannot reach loopback
// (coturn CVE-2020-26262, CVE-2026-27624).
var (
	nat64Prefix  = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour    = netip.MustParsePrefix("2002::/16")
	v4Compatible = netip.MustParsePrefix("::/96")
)

// PolicyConfig describes a peer policy before it is compiled.
type PolicyConfig struct {
	Allowed       []string // CIDRs or IPs the relay may reach even if denied by default
	Denied        []string // CIDRs or IPs added to the default deny-list
	AllowLoopback bool     // test-only: allow 127/8 and ::1

	// RelayAddrs are the server's own relay addresses (advertised and bound):
	// peers there are allowed on the ports of live relay allocations only,
	// so two clients of this server can talk relay to relay but no client
	// reaches another service bound in the relay port range (WireGuard on
	// 51820, a TCP daemon through RFC 6062 Connect). A Policy learns the
	// live ports from the Server it is given to (see New); on its own it
	// knows none.
	RelayAddrs []netip.Addr
	MinPort    uint16
	MaxPort    uint16

	// LocalAddrs are addresses of this host known up front. Every address
	// of the host — these, loopback (127/8, ::1), the relay addresses and
	// the addresses a Server tracks on its interfaces (Config.HostAddrs) —
	// is treated like a relay address: reachable through the relay only on
	// a live relay port of the same transport, whatever allowed_peers says,
	// so a second public IPv4, a SLAAC IPv6 or a LAN address never opens
	// SSH, a database or a service inside the relay range. ServicePorts are
	// the ports of its TURN listeners, HTTP API and metrics: never
	// reachable on a host address, not even with AllowLoopback.
	LocalAddrs   []netip.Addr
	ServicePorts []uint16
}

// Policy decides which peers a relay may reach. It is immutable and safe for
// concurrent use; the per-packet check does not allocate.
type Policy struct {
	rules         []rule // longest prefix first
	relayAddrs    []netip.Addr
	minPort       uint16
	maxPort       uint16
	localAddrs    []netip.Addr // sorted (hostSet)
	servicePorts  []uint16
	allowLoopback bool

	// host holds the addresses a Server tracks on its interfaces, swapped
	// whole when they change; nil (a Policy on its own) tracks none. Set by
	// New on its copy of the policy.
	host *hostAddrs

	// liveRelayPort reports whether a port of a relay network (netUDP4, …)
	// is bound by a live relay socket; nil knows no live port. Set by New
	// on its copy of the policy.
	liveRelayPort func(network int, port uint16) bool
}

type rule struct {
	prefix netip.Prefix
	allow  bool
	rank   int // among rules of one prefix length, the lowest rank decides
}

const (
	rankOperatorDeny = iota
	rankOperatorAllow
	rankDefault
)

// NewPolicy compiles a peer policy. The most specific prefix decides. At the
// same prefix length the operator's lists beat the built-in deny-list, and
// between the operator's allow and deny, deny wins. An address no rule
// covers is allowed.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	var rules []rule
	add := func(list []string, allow bool, rank int, what string) error {
		for i, s := range list {
			p, err := parsePrefix(s)
			if err != nil {
				return fmt.Errorf("turnserver: %s[%d]: %w", what, i, err)
			}
			rules = append(rules, rule{prefix: p, allow: allow, rank: rank})
		}
		return nil
	}
	if err := add(defaultDeniedPeers, false, rankDefault, "default deny-list"); err != nil {
		return nil, err
	}
	if err := add(cfg.Denied, false, rankOperatorDeny, "denied_peers"); err != nil {
		return nil, err
	}
	if err := add(cfg.Allowed, true, rankOperatorAllow, "allowed_peers"); err != nil {
		return nil, err
	}
	if cfg.AllowLoopback {
		if err := add([]string{"127.0.0.0/8", "::1/128"}, true, rankOperatorAllow, "allow_loopback_peers"); err != nil {
			return nil, err
		}
	}
	slices.SortStableFunc(rules, func(a, b rule) int {
		if a.prefix.Bits() != b.prefix.Bits() {
			return b.prefix.Bits() - a.prefix.Bits()
		}
		return a.rank - b.rank
	})
	var relay []netip.Addr
	for _, a := range cfg.RelayAddrs {
		// A wildcard bind address is not an address a peer can have.
		if a = Canonical(a); a.IsValid() && !a.IsUnspecified() && !slices.Contains(relay, a) {
			relay = append(relay, a)
		}
	}
	return &Policy{
		rules:         rules,
		relayAddrs:    relay,
		minPort:       cfg.MinPort,
		maxPort:       cfg.MaxPort,
		localAddrs:    hostSet(cfg.LocalAddrs),
		servicePorts:  slices.Clone(cfg.ServicePorts),
		allowLoopback: cfg.AllowLoopback,
	}, nil
}

// parsePrefix parses a CIDR or a bare IP. IPv4-mapped forms are reduced to
// IPv4, as peers are (Canonical) before they meet the rules: a rule for
// ::ffff:8.8.8.8/128 would otherwise never match anything.
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("IPv4-mapped prefix %q is shorter than /96", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR or IP %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Canonical reduces an IPv6 address that embeds an IPv4 address (IPv4-mapped,
// IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) to that IPv4 address.
// "::" and "::1" stay as they are.
func Canonical(a netip.Addr) netip.Addr {
	if !a.Is6() {
		return a
	}
	if a.Is4In6() {
		return a.Unmap()
	}
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16]))
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6]))
	case v4Compatible.Contains(a) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
		return netip.AddrFrom4([4]byte(b[12:16]))
	}
	return a.WithZone("")
}

// AllowIP reports whether a permission (which names an IP, not a port) may be
// installed for peer ip. The relay addresses are allowed (relay to relay);
// the host's other addresses go by the rules, and Allow still limits them
// to live relay ports.
func (p *Policy) AllowIP(ip netip.Addr) bool {
	ip = Canonical(ip)
	if ip.IsUnspecified() {
		return false
	}
	if slices.Contains(p.relayAddrs, ip) {
		return true
	}
	return p.allowByRules(ip)
}

// forServer returns a copy of p that knows the server's live relay ports
// (live) and the host addresses it tracks (host).
func (p *Policy) forServer(live func(network int, port uint16) bool, host *hostAddrs) *Policy {
	c := *p
	c.liveRelayPort = live
	c.host = host
	return &c
}

// Allow reports whether the relay may send a UDP datagram to peer. It is
// checked on every relayed packet: TURN permissions name IPs, so only here
// are ports known.
func (p *Policy) Allow(peer netip.AddrPort) bool {
	return p.allow(peer, netUDP4, netUDP6)
}

// AllowTCP reports whether the relay may open a TCP connection to peer
// (RFC 6062 Connect).
func (p *Policy) AllowTCP(peer netip.AddrPort) bool {
	return p.allow(peer, netTCP4, netTCP6)
}

func (p *Policy) allow(peer netip.AddrPort, net4, net6 int) bool {
	ip := Canonical(peer.Addr())
	if ip.IsUnspecified() {
		// 0.0.0.0 and :: as a destination mean this host, on every
		// address at once (coturn CVE-2020-26262): never a peer.
		return false
	}
	if !p.isHost(ip) {
		return p.allowByRules(ip)
	}
	port := peer.Port()
	if slices.Contains(p.servicePorts, port) {
		return false
	}
	if p.allowLoopback && ip.IsLoopback() {
		// The test-only switch: tests run their peers on 127.0.0.1 on
		// ports of their choosing, so with it all of 127/8 and ::1 is
		// open on every port but the services' (the server logs this
		// loudly; production never sets it).
		return p.allowByRules(ip)
	}
	// The host's own address: only a live relay socket of the same
	// transport is a peer there (relay to relay). Anything else listening
	// on the host — SSH, a database, a daemon inside the relay range — is
	// not, whatever allowed_peers says.
	network := net4
	if ip.Is6() {
		network = net6
	}
	if port < p.minPort || port > p.maxPort || p.liveRelayPort == nil || !p.liveRelayPort(network, port) {
		return false
	}
	// The relay addresses are peers even inside a denied range (a LAN or
	// test deployment); the host's other addresses only where the rules
	// let a permission be installed anyway.
	return slices.Contains(p.relayAddrs, ip) || p.allowByRules(ip)
}

// isHost reports whether ip (canonical) is an address of this host.
func (p *Policy) isHost(ip netip.Addr) bool {
	return ip.IsLoopback() || slices.Contains(p.relayAddrs, ip) || hostSetContains(p.localAddrs, ip) ||
		(p.host != nil && p.host.contains(ip))
}

func (p *Policy) allowByRules(ip netip.Addr) bool {
	allow, matched := p.matchRules(ip)
	return allow || !matched
}

// matchRules returns the verdict of the most specific rule covering ip.
func (p *Policy) matchRules(ip netip.Addr) (allow, matched bool) {
	for i := range p.rules {
		if p.rules[i].prefix.Contains(ip) {
			return p.rules[i].allow, true
		}
	}
	return false, false
}

// addrPortOf converts a net.Addr from pion without allocating.
func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort(), true
	case *net.TCPAddr:
		return v.AddrPort(), true
	}
	return netip.AddrPort{}, false
}

func addrOf(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
