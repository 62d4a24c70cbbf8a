package node

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/turnserver"
)

// keyringAdmin serves /admin/keyring from the keystore, converting its
// descriptions to the API's, with the SFU TURN secrets and the managed
// livekit-server (liveKit; nil or answering nil: not managed) that a
// rotation of them restarts.
type keyringAdmin struct {
	keys    *keystore.Manager
	liveKit func() *httpapi.LiveKitState
}

var _ httpapi.KeyringAdmin = keyringAdmin{}

// Rotate rotates the keyring and, with matrixrtc.livekit.turn on, the SFU
// TURN secret too (`icebox keyring rotate` rotates every secret icebox
// generates). The SFU rotation calls the keystore Manager's OnSFURotated
// hook, where the managed livekit-server is restarted to read the new
// secret; credentials of the old one stay accepted meanwhile. A keyring
// of configured secrets (not managed) is not rotated, but the SFU secret
// still is: the answer's Rotation says which (ErrKeyringNotManaged only
// when nothing was rotated).
func (a keyringAdmin) Rotate(compat bool) (httpapi.KeyringInfo, error) {
	info, err := a.keys.Rotate(compat)
	notManaged := errors.Is(err, keystore.ErrNotManaged)
	if err != nil && !notManaged {
		return httpapi.KeyringInfo{}, err
	}
	sfu := ""
	if a.keys.SFUEnabled() {
		si, serr := a.keys.RotateSFU()
		if serr != nil {
			return httpapi.KeyringInfo{}, fmt.Errorf("node: rotate the SFU TURN secret: %w", serr)
		}
		sfu = si.CurrentKID
	}
	if notManaged && sfu == "" {
		return httpapi.KeyringInfo{}, fmt.Errorf("%w: %w", httpapi.ErrKeyringNotManaged, err)
	}
	rot := &httpapi.Rotation{Keyring: !notManaged, SFU: sfu != ""}
	if notManaged {
		// A partial success is a success that says what it left: the SFU
		// secret did rotate (it was a 409 that said so in its message).
		rot.KeyringNotRotated = err.Error()
		info = a.keys.Info()
	}
	out := a.withSFU(apiKeyringInfo(info))
	out.Rotation = rot
	return out, nil
}

func (a keyringAdmin) Info() httpapi.KeyringInfo { return a.withSFU(apiKeyringInfo(a.keys.Info())) }

// withSFU adds the SFU TURN secrets (when on) and the managed LiveKit's
// state (when managed) to info.
func (a keyringAdmin) withSFU(info httpapi.KeyringInfo) httpapi.KeyringInfo {
	if si, err := a.keys.SFUInfo(); err == nil {
		sfu := &httpapi.SFUKeyring{CurrentKID: si.CurrentKID}
		for _, k := range si.Keys {
			sfu.Keys = append(sfu.Keys, httpapi.KeyInfo{KID: k.KID, RetireAt: k.RetireAt})
		}
		info.SFU = sfu
	}
	if a.liveKit != nil {
		info.LiveKit = a.liveKit()
	}
	return info
}

// liveKitState is the managed livekit-server's state for /admin/keyring;
// nil when not managed.
func (n *Node) liveKitState() *httpapi.LiveKitState {
	if n.liveKit == nil {
		return nil
	}
	st := n.liveKit.sup.State()
	rooms, participants := n.liveKit.hook.Counts()
	return &httpapi.LiveKitState{Up: st.Ready, PID: st.PID, Restarts: st.Restarts, Rooms: rooms, Participants: participants}
}

func apiKeyringInfo(in keystore.Info) httpapi.KeyringInfo {
	out := httpapi.KeyringInfo{ActiveKID: in.ActiveKID}
	for _, k := range in.Keys {
		out.Keys = append(out.Keys, httpapi.KeyInfo{KID: k.KID, Compat: k.Compat, RetireAt: k.RetireAt})
	}
	return out
}

// sfuPeers is the relay's SFU allow-list (turnserver.Config.SFUPeers,
// Server.SetSFUPeers): matrixrtc.livekit.turn.peers and, for a managed
// LiveKit, the media addresses and ports icebox gives it (managed: its
// node IPs with rtc.port_range_start..end, rtc.udp_port, rtc.tcp_port).
// Off, it is empty: SFU credentials are refused anyway (no SFU secret).
func sfuPeers(cfg config.Config, managed []turnserver.PeerRange) ([]turnserver.PeerRange, error) {
	t := cfg.MatrixRTC.LiveKit.TURN
	if !t.Enabled {
		return nil, nil
	}
	ranges, err := t.PeerRanges()
	if err != nil {
		return nil, err
	}
	out := make([]turnserver.PeerRange, 0, len(ranges)+len(managed))
	for _, r := range ranges {
		out = append(out, turnserver.PeerRange{Prefix: r.Prefix, MinPort: r.MinPort, MaxPort: r.MaxPort})
	}
	return append(out, managed...), nil
}

// managedSFUPeers are the media addresses and ports of the managed
// LiveKit (none when not managed): its node IP (matrixrtc.livekit.managed
// .node_ip, else turn.relay.public_ip) — the one address LiveKit then puts
// in its candidates — or, without one, every address of this host but
// loopback and link-local ones, since LiveKit then offers candidates on
// each interface; on its rtc_udp_ports and its rtc_tcp_port (when not 0).
func managedSFUPeers(cfg config.Config) ([]turnserver.PeerRange, error) {
	if !cfg.MatrixRTC.IsManaged() || !cfg.MatrixRTC.LiveKit.TURN.Enabled {
		return nil, nil
	}
	m := cfg.MatrixRTC.LiveKit.Managed
	var ips []netip.Addr
	if s := cfg.ManagedNodeIP(); s != "" {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("matrixrtc.livekit.managed.node_ip: %w", err)
		}
		ips = append(ips, ip)
	} else {
		host, err := turnserver.ListHostAddrs()
		if err != nil {
			return nil, err
		}
		for _, ip := range host {
			if !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsLinkLocalUnicast() {
				ips = append(ips, ip)
			}
		}
	}
	lo, hi, err := config.ParsePortRange(m.RTCUDPPorts)
	if err != nil {
		return nil, fmt.Errorf("matrixrtc.livekit.managed.rtc_udp_ports: %w", err)
	}
	var out []turnserver.PeerRange
	for _, ip := range ips {
		ip = turnserver.Canonical(ip)
		p := netip.PrefixFrom(ip, ip.BitLen())
		out = append(out, turnserver.PeerRange{Prefix: p, MinPort: uint16(lo), MaxPort: uint16(hi)})
		if m.RTCTCPPort != 0 {
			out = append(out, turnserver.PeerRange{Prefix: p, MinPort: uint16(m.RTCTCPPort), MaxPort: uint16(m.RTCTCPPort)})
		}
	}
	return out, nil
}

// relaySFUPeers is the relay's SFU allow-list for cfg: its listed peers
// and the managed LiveKit's.
func relaySFUPeers(cfg config.Config) ([]turnserver.PeerRange, error) {
	managed, err := managedSFUPeers(cfg)
	if err != nil {
		return nil, err
	}
	return sfuPeers(cfg, managed)
}
