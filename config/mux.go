package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Mux is turn.mux: one TCP port (443, usually) for TURN over TCP, TURN
// over TLS and the API (HTTPS and WebSocket, and plain HTTP), told apart by
// each connection's first bytes and, inside TLS, by ALPN (stun.turn for
// TURN, h2/http/1.1 for the API); plus TURN over UDP on the same port
// numbers. The TLS certificate is turn.tls's (files or ACME); a client
// whose SNI matches no certificate gets the default one. /calls/ice_servers
// offers turns:<host>:<port>?transport=tcp on it first.
type Mux struct {
	// Listen are the shared ports' addresses. Default: [] (e.g.
	// ["0.0.0.0:443"]; needs turn.tls)
	Listen []string `yaml:"listen"`
	// UDP also serves TURN over UDP on each listen address. Default: true
	UDP bool `yaml:"udp"`
	// HandshakeTimeout bounds a connection's PROXY header, first bytes
	// and TLS handshake; a silent one is closed then. 1s..1m. Default: 10s
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// ProxyProtocol reads PROXY protocol v1/v2 headers from load
	// balancers in front of the shared port.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
}

// ProxyProtocol configures PROXY protocol on a TCP listener (the shared
// port, the TURN TCP/TLS listeners, the API).
type ProxyProtocol struct {
	// Trusted are the load balancers' addresses (CIDRs or bare IPs):
	// their connections must start with a PROXY header, whose client
	// address then counts for quotas, per-source limits, logs and the
	// allocation list; a connection from them without one is closed. A
	// PROXY header from any other address closes the connection.
	// Default: [] (PROXY protocol refused from everyone)
	Trusted []string `yaml:"trusted"`
}

func defaultMux() Mux {
	return Mux{
		Listen:           []string{},
		UDP:              true,
		HandshakeTimeout: 10 * time.Second,
		ProxyProtocol:    ProxyProtocol{Trusted: []string{}},
	}
}

// Prefixes parses Trusted (validated by Validate).
func (p ProxyProtocol) Prefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(p.Trusted))
	for _, s := range p.Trusted {
		pfx, err := parsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, pfx)
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

// mux checks turn.mux and returns the ports it uses.
func (v *validator) mux(t *TURN) []portUse {
	m := &t.Mux
	var ports []portUse
	for i, addr := range m.Listen {
		path := fmt.Sprintf("turn.mux.listen[%d]", i)
		if port, ok := v.hostPort(path, addr, true); ok {
			ports = append(ports, portUse{path, port})
		}
		// The same address in another TURN listener would fail to bind
		// at start; say which keys collide now.
		for _, other := range []struct {
			key   string
			addrs []string
			check bool
		}{{"turn.listen.tcp", t.Listen.TCP, true}, {"turn.listen.tls", t.Listen.TLS, true}, {"turn.listen.udp", t.Listen.UDP, m.UDP}} {
			if other.check && slices.Contains(other.addrs, addr) {
				v.add(path, "%s is also in %s: the shared port serves that protocol itself (remove it there, or set turn.mux.udp: false for UDP)", addr, other.key)
			}
		}
	}
	if len(m.Listen) > 0 && !t.TLS.ACME {
		v.requiredFile("turn.tls.cert_file", t.TLS.CertFile, "turn.mux.listen")
		v.requiredFile("turn.tls.key_file", t.TLS.KeyFile, "turn.mux.listen")
	}
	if m.HandshakeTimeout < time.Second || m.HandshakeTimeout > time.Minute {
		v.add("turn.mux.handshake_timeout", "must be 1s..1m (got %v)", m.HandshakeTimeout)
	}
	v.proxyProtocol("turn.mux.proxy_protocol", m.ProxyProtocol, len(m.Listen) > 0, "turn.mux.listen is empty")
	v.proxyProtocol("turn.proxy_protocol", t.ProxyProtocol, len(t.Listen.TCP)+len(t.Listen.TLS) > 0,
		"turn.listen.tcp and turn.listen.tls are empty (for the shared port: turn.mux.proxy_protocol)")
	return ports
}

// proxyProtocol checks a proxy_protocol block: every entry a CIDR or IP,
// and a listener to read it on (else why says which is missing).
func (v *validator) proxyProtocol(key string, p ProxyProtocol, listening bool, why string) {
	for i, s := range p.Trusted {
		if _, err := parsePrefix(s); err != nil {
			v.add(fmt.Sprintf("%s.trusted[%d]", key, i), "%q is not a CIDR or IP address", s)
		}
	}
	if len(p.Trusted) > 0 && !listening {
		v.add(key+".trusted", "set, but %s: no listener to read PROXY protocol on", why)
	}
}
