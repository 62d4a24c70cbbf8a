// Package relayplan decides the relay's addresses: where relay sockets bind
// and which address clients are told, per family, from the configuration and
// the host's addresses; and the STUN/TURN URIs clients are given for the
// bound listeners. It opens no socket: `icebox serve` and `icebox creds` must
// tell clients the same thing, and only serve binds.
package relayplan

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// Plan is where relay sockets bind and what address clients are told, per
// family. An invalid advertised address disables that family.
type Plan struct {
	Bind4, Adv4 netip.Addr
	Bind6, Adv6 netip.Addr
}

// New decides the relay addresses from turn.relay.bind_ip and
// turn.relay.public_ip ("" for none). The advertised address is the public
// IP (1:1 NAT), else the bind address when it is specific, else the host's
// first global unicast address of that family. A wildcard bind IP binds the
// advertised address where the host has it.
func New(bindIP, publicIP string, local []netip.Addr) (Plan, error) {
	var p Plan
	bind, err := netip.ParseAddr(bindIP)
	if err != nil {
		return p, fmt.Errorf("turn.relay.bind_ip: %w", err)
	}
	bind = bind.Unmap()
	var public netip.Addr
	if publicIP != "" {
		if public, err = netip.ParseAddr(publicIP); err != nil {
			return p, fmt.Errorf("turn.relay.public_ip: %w", err)
		}
		public = public.Unmap()
	}
	p.Bind4, p.Adv4 = pick(bind, public, local, true)
	p.Bind6, p.Adv6 = pick(bind, public, local, false)
	if !p.Adv4.IsValid() && !p.Adv6.IsValid() {
		return p, errors.New("turn.relay: cannot tell which address to advertise for relays " +
			"(no global address on this host); set turn.relay.public_ip or a specific turn.relay.bind_ip")
	}
	return p, nil
}

// pick decides one family's bind and advertised address.
func pick(bind, public netip.Addr, local []netip.Addr, is4 bool) (b, adv netip.Addr) {
	switch {
	case bind.IsUnspecified():
		b = netip.IPv4Unspecified()
		if !is4 {
			if !bind.Is6() { // 0.0.0.0 means IPv4 only; "::" means both
				return netip.Addr{}, netip.Addr{}
			}
			b = netip.IPv6Unspecified()
		}
	case bind.Is4() == is4:
		b = bind
	default:
		return netip.Addr{}, netip.Addr{}
	}
	switch {
	case public.IsValid() && public.Is4() == is4:
		adv = public
	case !b.IsUnspecified():
		adv = b
	default:
		adv = firstGlobal(local, is4)
	}
	// A wildcard bind lets the kernel pick each datagram's source
	// address: on a host with two global addresses of a family,
	// relayed packets would leave from one the clients were not told
	// (and their NATs would drop). Bind the advertised address when
	// the host has it; the wildcard stays only for a public_ip that
	// is not on the host (a 1:1 NAT maps whatever leaves).
	if b.IsUnspecified() && adv.IsValid() && slices.Contains(local, adv) {
		b = adv
	}
	return b, adv
}

func firstGlobal(local []netip.Addr, is4 bool) netip.Addr {
	for _, a := range local {
		if a.Is4() == is4 && a.IsGlobalUnicast() {
			return a
		}
	}
	return netip.Addr{}
}

// Addrs lists the plan's specific addresses, advertised and bound: the
// relay's own addresses, which the peer policy lets clients reach.
func (p Plan) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{p.Adv4, p.Adv6, p.Bind4, p.Bind6} {
		if a.IsValid() && !a.IsUnspecified() {
			out = append(out, a)
		}
	}
	return out
}
