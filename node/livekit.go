package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
)

// managedLiveKit is the livekit-server a node runs in
// matrixrtc.livekit.mode: managed.
type managedLiveKit struct {
	keys livekitproc.Keys
	url  string // what clients are told (matrixrtc.livekit.url or its default)
	sup  *livekitproc.Supervisor
	hook *livekitproc.Webhook

	// roomServiceURL is the child's signal port as icebox dials it, for
	// the authorization service's room creation.
	roomServiceURL string
}

// liveKitDir is the managed LiveKit's directory in state_dir: its key file
// and its config file.
const liveKitDir = "livekit"

// buildManagedLiveKit prepares the managed livekit-server: its keys, its
// webhook receiver and its supervisor (which writes the config file before
// each start). Nothing runs before Run.
func (n *Node) buildManagedLiveKit() (*managedLiveKit, error) {
	cfg := n.cfg
	m := cfg.MatrixRTC.LiveKit.Managed
	binary, err := livekitproc.FindBinary(m.Binary)
	if err != nil {
		return nil, ConfigError{fmt.Errorf("matrixrtc.livekit.managed.binary: %w", err)}
	}
	n.checkLiveKitVersion(binary)
	dir := filepath.Join(cfg.StateDir, liveKitDir)
	keys, err := livekitproc.LoadKeys(dir)
	if err != nil {
		return nil, err
	}
	hook, err := livekitproc.NewWebhook(livekitproc.WebhookConfig{
		APIKey: keys.APIKey, APISecret: keys.APISecret, Registerer: n.opts.Registry, Logger: n.log,
	})
	if err != nil {
		return nil, err
	}
	server, err := n.liveKitServerConfig(keys)
	if err != nil {
		return nil, ConfigError{err}
	}
	cfgPath := filepath.Join(dir, livekitproc.ConfigFile)
	// Written here too, so a config livekit-server would refuse fails New.
	if err := livekitproc.WriteConfig(cfgPath, server); err != nil {
		return nil, err
	}
	sup, err := livekitproc.NewSupervisor(livekitproc.SupervisorConfig{
		Binary:     binary,
		ConfigPath: cfgPath,
		HealthURL:  "http://" + net.JoinHostPort(dialable(server.Bind).String(), strconv.Itoa(server.Port)) + "/",
		Redact:     []string{keys.APISecret},
		OnStart: func() error {
			hook.Reset() // a new child has no rooms
			server, err := n.liveKitServerConfig(keys)
			if err != nil {
				return err
			}
			return livekitproc.WriteConfig(cfgPath, server)
		},
		Registerer: n.opts.Registry,
		Logger:     n.log,
	})
	if err != nil {
		return nil, err
	}
	n.onClose(sup.Close)
	if cfg.HTTP.TLS.CertFile != "" {
		n.log.Warn().Str("component", "livekit").
			Msg("http.tls is on: livekit-server's webhooks to icebox's own address cannot verify its certificate, so the room and participant gauges stay empty")
	}
	local := "http://" + net.JoinHostPort(dialable(server.Bind).String(), strconv.Itoa(server.Port)) // as HealthURL
	return &managedLiveKit{keys: keys, url: cfg.ManagedLiveKitURL(), roomServiceURL: local, sup: sup, hook: hook}, nil
}

// liveKitServerConfig is livekit-server's configuration from icebox's.
func (n *Node) liveKitServerConfig(keys livekitproc.Keys) (livekitproc.ServerConfig, error) {
	cfg := n.cfg
	m := cfg.MatrixRTC.LiveKit.Managed
	bind, err := netip.ParseAddr(m.Bind)
	if err != nil {
		return livekitproc.ServerConfig{}, fmt.Errorf("matrixrtc.livekit.managed.bind: %w", err)
	}
	var nodeIP netip.Addr // invalid: LiveKit picks a local address
	if s := cfg.ManagedNodeIP(); s != "" {
		if nodeIP, err = netip.ParseAddr(s); err != nil {
			return livekitproc.ServerConfig{}, fmt.Errorf("matrixrtc.livekit.managed.node_ip: %w", err)
		}
	}
	lo, hi, err := config.ParsePortRange(m.RTCUDPPorts)
	if err != nil {
		return livekitproc.ServerConfig{}, fmt.Errorf("matrixrtc.livekit.managed.rtc_udp_ports: %w", err)
	}
	turn, err := n.liveKitTURNServers()
	if err != nil {
		return livekitproc.ServerConfig{}, err
	}
	return livekitproc.ServerConfig{
		Bind: bind, Port: m.Port, NodeIP: nodeIP, TCPPort: m.RTCTCPPort, UDPMin: lo, UDPMax: hi,
		Keys: keys, WebhookURL: n.liveKitWebhookURL(), LogLevel: m.LogLevel, TURNServers: turn,
	}, nil
}

// liveKitTURNServers are the TURN servers the managed LiveKit hands its
// clients (rtc.turn_servers), read at each start of the child: with
// matrixrtc.livekit.turn.enabled, icebox's own relay on each of its
// listeners, at the host /calls/ice_servers advertises, with the SFU TURN
// secret's file (keystore.SFUSecretPath, 0600 — LiveKit refuses a file
// others may read) from which LiveKit mints per-participant credentials
// valid for matrixrtc.livekit.turn.ttl; their allocations are scoped to
// the SFU (sfuPeers). TLS listeners are listed only with
// ice_servers.hostname: a turns: client verifies the certificate against
// the host it is given, and an IP address or a wildcard listen address is
// not the name on the certificate.
func (n *Node) liveKitTURNServers() ([]livekitproc.TURNServer, error) {
	t := n.cfg.MatrixRTC.LiveKit.TURN
	if !t.Enabled {
		return nil, nil
	}
	a := n.addrs
	host := relayplan.ICEHost(n.cfg.ICEServers.Hostname, n.cfg.TURN.Relay.PublicIP, n.plan, relayplan.First(a.TURNUDP, a.TURNTCP, a.TURNTLS))
	if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
		host = "[" + host + "]" // LiveKit writes turn:<host>:<port> as is
	}
	secret := keystore.SFUSecretPath(n.cfg.StateDir)
	ttl := int(t.TTL / time.Second)
	var out []livekitproc.TURNServer
	add := func(proto string, addrs []string) {
		for _, p := range relayplan.ListenPorts(addrs) {
			out = append(out, livekitproc.TURNServer{Host: host, Port: int(p), Protocol: proto, SecretFile: secret, TTL: ttl})
		}
	}
	add("udp", a.TURNUDP)
	add("tcp", a.TURNTCP)
	if n.cfg.ICEServers.Hostname != "" {
		add("tls", a.TURNTLS)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("matrixrtc.livekit.turn: icebox has no TURN listener for LiveKit's clients")
	}
	return out, nil
}

// liveKitWebhookURL is where livekit-server posts its webhooks: icebox's
// own HTTP listener, dialled on loopback when it listens on a wildcard.
func (n *Node) liveKitWebhookURL() string {
	scheme := "http"
	if n.cfg.HTTP.TLS.CertFile != "" {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(n.addrs.HTTP)
	if ip, perr := netip.ParseAddr(host); err == nil && perr == nil {
		host = dialable(ip).String()
	}
	return scheme + "://" + net.JoinHostPort(host, port) + livekitproc.WebhookPath
}

// dialable turns a wildcard listen address into the loopback address of
// its family.
func dialable(ip netip.Addr) netip.Addr {
	switch {
	case ip == netip.IPv4Unspecified():
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	case ip == netip.IPv6Unspecified():
		return netip.IPv6Loopback()
	}
	return ip
}

// webhookMount serves the webhook receiver on the HTTP listener.
func (lk *managedLiveKit) webhookMount() (string, http.Handler) {
	mux := http.NewServeMux()
	mux.Handle(livekitproc.WebhookPath, lk.hook)
	return path.Dir(livekitproc.WebhookPath), mux
}

// checkLiveKitVersion warns when the binary is not the release icebox
// writes its config for (livekit-server refuses unknown config keys).
func (n *Node) checkLiveKitVersion(binary string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, binary, "--version").CombinedOutput()
	got := strings.TrimPrefix(strings.TrimSpace(string(out)), "livekit-server version ")
	if err != nil || "v"+got != livekitproc.Version {
		n.log.Warn().Str("component", "livekit").Str("binary", binary).Str("version", got).AnErr("error", err).
			Str("want", livekitproc.Version).Msg("livekit-server is not the version icebox is built for; run scripts/install-livekit.sh")
	}
}

// LiveKit reports the managed livekit-server's state; false when the mode
// is not managed.
func (n *Node) LiveKit() (livekitproc.State, bool) {
	if n.liveKit == nil {
		return livekitproc.State{}, false
	}
	return n.liveKit.sup.State(), true
}

// liveKitParticipants is how many are in rooms of the managed LiveKit, by
// its webhooks (0 when not managed): the drain waits for them.
func (n *Node) liveKitParticipants() int {
	if n.liveKit == nil {
		return 0
	}
	_, p := n.liveKit.hook.Counts()
	return p
}
