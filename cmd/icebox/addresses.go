package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/icebox-voip/icebox/config"
)

// relayPlan is where relay sockets bind and what address clients are told,
// per family. An invalid advertised address disables that family.
type relayPlan struct {
	bind4, adv4 netip.Addr
	bind6, adv6 netip.Addr
}

// planRelay decides the relay addresses. The advertised address is
// relay.public_ip (1:1 NAT), else the bind address when it is specific, else
// the host's first global unicast address of that family. A wildcard
// bind_ip binds the advertised address where the host has it.
func planRelay(r config.Relay, local []netip.Addr) (relayPlan, error) {
	var p relayPlan
	bind, err := netip.ParseAddr(r.BindIP)
	if err != nil {
		return p, fmt.Errorf("turn.relay.bind_ip: %w", err)
	}
	bind = bind.Unmap()
	var public netip.Addr
	if r.PublicIP != "" {
		if public, err = netip.ParseAddr(r.PublicIP); err != nil {
			return p, fmt.Errorf("turn.relay.public_ip: %w", err)
		}
		public = public.Unmap()
	}
	firstGlobal := func(is4 bool) netip.Addr {
		for _, a := range local {
			if a.Is4() == is4 && a.IsGlobalUnicast() {
				return a
			}
		}
		return netip.Addr{}
	}
	pick := func(is4 bool) (b, adv netip.Addr) {
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
			adv = firstGlobal(is4)
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
	p.bind4, p.adv4 = pick(true)
	p.bind6, p.adv6 = pick(false)
	if !p.adv4.IsValid() && !p.adv6.IsValid() {
		return p, errors.New("turn.relay: cannot tell which address to advertise for relays " +
			"(no global address on this host); set turn.relay.public_ip or a specific turn.relay.bind_ip")
	}
	return p, nil
}

// hostAddrs lists every address of this host's interfaces.
func hostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}

// iceHost is the host name clients are told: ice_servers.hostname, else the
// public IP, else the first TURN listener's IP if specific, else the
// advertised relay address.
func iceHost(cfg config.Config, plan relayPlan, firstListen string) string {
	switch {
	case cfg.ICEServers.Hostname != "":
		return cfg.ICEServers.Hostname
	case cfg.TURN.Relay.PublicIP != "":
		return cfg.TURN.Relay.PublicIP
	}
	if host, _, err := net.SplitHostPort(firstListen); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			return a.String()
		}
	}
	if plan.adv4.IsValid() {
		return plan.adv4.String()
	}
	return plan.adv6.String()
}

// iceURIs lists the embedded relay's URIs for the given listen addresses
// ("host:port", as bound).
func iceURIs(host string, udp, tcp, tls []string) (stun, turn []string) {
	h := host
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() {
		h = "[" + host + "]"
	}
	ports := func(addrs []string) []string {
		var out []string
		for _, a := range addrs {
			if _, p, err := net.SplitHostPort(a); err == nil && !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
		return out
	}
	for _, p := range ports(udp) {
		stun = append(stun, "stun:"+h+":"+p)
		turn = append(turn, "turn:"+h+":"+p+"?transport=udp")
	}
	for _, p := range ports(tcp) {
		turn = append(turn, "turn:"+h+":"+p+"?transport=tcp")
	}
	for _, p := range ports(tls) {
		turn = append(turn, "turns:"+h+":"+p+"?transport=tcp")
	}
	return stun, turn
}

// listenPorts returns the ports of "host:port" addresses.
func listenPorts(addrs ...[]string) []uint16 {
	var out []uint16
	for _, list := range addrs {
		for _, a := range list {
			if _, p, err := net.SplitHostPort(a); err == nil {
				if n, err := strconv.ParseUint(p, 10, 16); err == nil && !slices.Contains(out, uint16(n)) {
					out = append(out, uint16(n))
				}
			}
		}
	}
	return out
}

// hostRelayPlan lists this host's addresses and plans the relay addresses
// from them (serve and creds must tell clients the same thing).
func hostRelayPlan(r config.Relay) ([]netip.Addr, relayPlan, error) {
	local, err := hostAddrs()
	if err != nil {
		return nil, relayPlan{}, err
	}
	plan, err := planRelay(r, local)
	if err != nil {
		return nil, relayPlan{}, usageError{err}
	}
	return local, plan, nil
}
