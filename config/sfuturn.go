package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// LiveKitTURN makes icebox's relay the LiveKit SFU's TURN server
// (matrixrtc.livekit.turn): icebox generates an SFU TURN secret into
// state_dir (secrets/sfu-turn.secret, for livekit-server's
// rtc.turn_servers[].secret_file), and the credentials LiveKit mints from
// it are scoped: their allocations reach only Peers, the SFU's media
// addresses and ports.
type LiveKitTURN struct {
	Enabled bool `yaml:"enabled"` // Default: false
	// Peers are the SFU's media addresses and ports: "IP:port",
	// "IP:port-port", "CIDR:port-port" ("[IPv6]:port" or "[CIDR]:..." for
	// IPv6). Required when enabled in mode external; in mode managed icebox
	// adds the managed LiveKit's own (its node IP, else this host's
	// addresses, with rtc_udp_ports and rtc_tcp_port) and these extra ones.
	// Default: []
	Peers []string `yaml:"peers"`
	// TTL is the lifetime LiveKit gives the credentials it mints
	// (rtc.turn_servers[].ttl); icebox keeps a rotated-away SFU secret
	// this long plus turn.max_allocation_duration. Default: 4h (LiveKit's
	// own default); 1m..24h.
	TTL time.Duration `yaml:"ttl"`
}

// defaultLiveKitTURN is matrixrtc.livekit.turn's default: off.
func defaultLiveKitTURN() LiveKitTURN {
	return LiveKitTURN{Peers: []string{}, TTL: 4 * time.Hour}
}

// PeerRange is one entry of matrixrtc.livekit.turn.peers: the addresses of
// Prefix on ports MinPort..MaxPort.
type PeerRange struct {
	Prefix           netip.Prefix
	MinPort, MaxPort uint16
}

// Minimum prefix lengths of an SFU peer: wider is a network, not an SFU.
const (
	minSFUPrefix4 = 16
	minSFUPrefix6 = 48
)

// ParsePeerRange parses an entry of matrixrtc.livekit.turn.peers.
func ParsePeerRange(s string) (PeerRange, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return PeerRange{}, fmt.Errorf("%q has no port: want IP:port, IP:port-port or CIDR:port-port", s)
	}
	host, ports := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return PeerRange{}, fmt.Errorf("%q: put an IPv6 address in brackets, e.g. [2001:db8::7]:7881", s)
	}
	p, err := ParsePeer(host)
	if err != nil {
		return PeerRange{}, err
	}
	if a := p.Addr(); a.Is4In6() {
		return PeerRange{}, fmt.Errorf("%q: write the IPv4 address as IPv4", s)
	}
	a := p.Addr()
	switch {
	case a.IsUnspecified():
		return PeerRange{}, fmt.Errorf("%q: the unspecified address is no SFU", s)
	case a.IsMulticast() || (a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255})):
		return PeerRange{}, fmt.Errorf("%q: a multicast or broadcast address is no SFU", s)
	case a.Is4() && p.Bits() < minSFUPrefix4, a.Is6() && p.Bits() < minSFUPrefix6:
		return PeerRange{}, fmt.Errorf("%q: prefix wider than /%d (IPv4) or /%d (IPv6): list the SFU's own addresses", s, minSFUPrefix4, minSFUPrefix6)
	}
	lo, hi, ok := strings.Cut(ports, "-")
	if !ok {
		hi = lo
	}
	min, err1 := strconv.ParseUint(lo, 10, 16)
	max, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || min == 0 || min > max {
		return PeerRange{}, fmt.Errorf("%q: ports must be N or N-M with 1 <= N <= M <= 65535", s)
	}
	return PeerRange{Prefix: p, MinPort: uint16(min), MaxPort: uint16(max)}, nil
}

// PeerRanges parses Peers (validated: errors only for an unvalidated
// configuration).
func (t LiveKitTURN) PeerRanges() ([]PeerRange, error) {
	out := make([]PeerRange, 0, len(t.Peers))
	for i, s := range t.Peers {
		r, err := ParsePeerRange(s)
		if err != nil {
			return nil, fmt.Errorf("config: matrixrtc.livekit.turn.peers[%d]: %w", i, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func (v *validator) liveKitTURN(c *Config) {
	t := &c.MatrixRTC.LiveKit.TURN
	if !t.Enabled {
		return
	}
	for i, s := range c.Credentials.Secrets {
		if n, err := strconv.Atoi(strings.TrimPrefix(s.KID, "sfu")); strings.HasPrefix(s.KID, "sfu") && err == nil && n > 0 {
			v.add(fmt.Sprintf("credentials.secrets[%d].kid", i), "%q is reserved for the SFU TURN secrets (sfu1, sfu2, …) "+
				"when matrixrtc.livekit.turn.enabled; pick another kid", s.KID)
		}
	}
	// A managed LiveKit's media addresses and ports are icebox's own
	// (node/keyring.go managedSFUPeers); listed peers are added to them.
	if len(t.Peers) == 0 && !c.MatrixRTC.IsManaged() {
		v.add("matrixrtc.livekit.turn.peers", "required when matrixrtc.livekit.turn.enabled: the SFU's media addresses "+
			"and ports (its rtc.node_ip with rtc.port_range_start-rtc.port_range_end, rtc.udp_port, rtc.tcp_port), "+
			"e.g. [\"198.51.100.7:50000-60000\", \"198.51.100.7:7881\"]")
	}
	for i, s := range t.Peers {
		if _, err := ParsePeerRange(s); err != nil {
			v.add(fmt.Sprintf("matrixrtc.livekit.turn.peers[%d]", i), "%v", err)
		}
	}
	if t.TTL < time.Minute || t.TTL > 24*time.Hour {
		v.add("matrixrtc.livekit.turn.ttl", "must be between 1m and 24h (got %s)", t.TTL)
	}
}
