package relayplan

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
)

// ICEHost is the host name clients are told: hostname (ice_servers.hostname)
// if set, else the public IP, else the first TURN listener's IP if specific,
// else the advertised relay address.
func ICEHost(hostname, publicIP string, plan Plan, firstListen string) string {
	switch {
	case hostname != "":
		return hostname
	case publicIP != "":
		return publicIP
	}
	if host, _, err := net.SplitHostPort(firstListen); err == nil {
		if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
			return a.String()
		}
	}
	if plan.Adv4.IsValid() {
		return plan.Adv4.String()
	}
	return plan.Adv6.String()
}

// ICEURIs lists the embedded relay's URIs for the given listen addresses
// ("host:port", as bound).
func ICEURIs(host string, udp, tcp, tls []string) (stun, turn []string) {
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

// ListenPorts returns the ports of "host:port" addresses, each once.
func ListenPorts(addrs ...[]string) []uint16 {
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

// First returns the first address of the first non-empty list.
func First(lists ...[]string) string {
	for _, l := range lists {
		if len(l) > 0 {
			return l[0]
		}
	}
	return ""
}
