package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/turnserver"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
	"github.com/icebox-voip/icebox/web"
)

// build makes the components from the configuration, each handed the
// sockets bind opened.
func (n *Node) build(ctx context.Context) error {
	for _, step := range []func(context.Context) error{n.buildKeyring, n.buildRelay, n.buildCalls, n.buildAPI} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	return nil
}

// buildKeyring builds the credentials keyring from the configuration and
// the state directory (keystore).
func (n *Node) buildKeyring(context.Context) error {
	keys, err := keystore.NewManager(n.cfg, time.Now)
	if err != nil {
		return ConfigError{err}
	}
	n.keys = keys
	// A rotated SFU TURN secret (`icebox keyring rotate`) reaches the
	// managed livekit-server only through a restart: it reads its
	// secret_file once. The old secret stays accepted for the credentials
	// it minted before.
	keys.OnSFURotated(func(kid string) {
		if n.liveKit == nil {
			return
		}
		n.log.Info().Str("component", "livekit").Str("sfu_kid", kid).
			Msg("SFU TURN secret rotated: restarting livekit-server to read it")
		n.liveKit.sup.Restart()
	})
	return nil
}

// buildRelay plans the relay addresses and builds the TURN server on the
// bound listeners, with the peer policy and the persisted revocations.
func (n *Node) buildRelay(ctx context.Context) error {
	cfg := n.cfg.TURN
	// The host's addresses are tracked by the relay itself (turnserver
	// Config.HostAddrs): they may change while it runs.
	local, err := turnserver.ListHostAddrs()
	if err != nil {
		return err
	}
	if n.plan, err = relayplan.New(cfg.Relay.BindIP, cfg.Relay.PublicIP, local); err != nil {
		return ConfigError{err}
	}
	policy, err := n.peerPolicy(cfg)
	if err != nil {
		return ConfigError{err}
	}
	n.warnRelay()
	// Revocations outlive restarts: a call that ended before the restart
	// must not get its credentials back, not even for a moment.
	revs, err := n.state.Revocations(ctx, time.Now())
	if err != nil {
		return err
	}
	revoked := make([]turnserver.Revocation, 0, len(revs))
	for _, r := range revs {
		revoked = append(revoked, turnserver.Revocation{CallID: r.CallID, Until: r.Until})
	}
	rc := n.relayConfig(policy, revoked)
	if rc.SFUPeers, err = relaySFUPeers(n.cfg); err != nil {
		return ConfigError{err}
	}
	n.relay, err = turnserver.New(rc, n.turnLn)
	if err != nil {
		return err
	}
	n.onClose(n.relay.Close)
	return nil
}

func (n *Node) relayConfig(policy *turnserver.Policy, revoked []turnserver.Revocation) turnserver.Config {
	cfg := n.cfg.TURN
	return turnserver.Config{
		Revoked:               revoked,
		Realm:                 cfg.Realm,
		Keyring:               n.keys.Keyring,
		RelayBindIPv4:         n.plan.Bind4,
		RelayIPv4:             n.plan.Adv4,
		RelayBindIPv6:         n.plan.Bind6,
		RelayIPv6:             n.plan.Adv6,
		MinPort:               uint16(cfg.Relay.MinPort),
		MaxPort:               uint16(cfg.Relay.MaxPort),
		Policy:                policy,
		Quotas:                turnserver.Quotas{PerUser: cfg.Quotas.PerUser, PerCall: cfg.Quotas.PerCall, Total: cfg.Quotas.Total},
		Bandwidth:             relayBandwidth(cfg.Quotas),
		MaxAllocationDuration: cfg.MaxAllocationDuration,
		ErrorRate:             turnserver.ErrorRate{PerSecond: cfg.ErrorRate, Burst: cfg.ErrorBurst},
		BindingRate:           turnserver.ErrorRate{PerSecond: cfg.BindingRate, Burst: cfg.BindingBurst},
		RecvBatch:             cfg.RecvBatch,
		KernelPath:            cfg.KernelPath,
		KernelPathMode:        cfg.KernelPathMode,
		UDPGRO:                cfg.UDPGRO,
		Logger:                n.log,
		Registerer:            n.opts.Registry,
	}
}

// warnRelay says loudly what in the relay's configuration is likely a
// mistake.
func (n *Node) warnRelay() {
	for _, adv := range []netip.Addr{n.plan.Adv4, n.plan.Adv6} {
		if n.cfg.TURN.Relay.PublicIP == "" && adv.IsValid() && (adv.IsPrivate() || adv.IsLoopback() || adv.IsLinkLocalUnicast()) {
			n.log.Warn().Str("component", "turn").Stringer("relay_address", adv).
				Msg("relays advertise a private address: clients outside this network get no media. Behind a NAT (cloud VMs), set turn.relay.public_ip to the public address")
		}
	}
	if n.cfg.TURN.AllowLoopbackPeers {
		n.log.Warn().Str("component", "turn").
			Msg("turn.allow_loopback_peers is on: the relay may reach 127.0.0.0/8 and ::1 — test setups only, never in production")
	}
}

// buildCalls builds the WebSocket hub, the Matrix bridge (when on) and the
// calls service between them.
func (n *Node) buildCalls(ctx context.Context) error {
	cfg := n.cfg
	n.hub = httpapi.NewHub(httpapi.HubConfig{Logger: n.log, Registerer: n.opts.Registry})
	n.onClose(n.hub.Close)
	var pub signaling.Publisher = n.hub
	if pg, ok := n.state.(*postgres.Store); ok {
		// Several nodes may share the database: events and revocations
		// reach the others through it (cluster.go).
		var err error
		if n.cluster, err = newCluster(ctx, pg, n.hub, n.relay, n.opts.Registry, n.log); err != nil {
			return err
		}
		pub = n.cluster
	}
	svcCfg := signaling.ServiceConfig{
		Store:             n.state,
		Relay:             n.relay,
		Publisher:         pub,
		InviteLifetime:    cfg.Calls.InviteLifetime,
		MaxInviteLifetime: cfg.Calls.MaxInviteLifetime,
		CredentialTTL:     cfg.Credentials.TTL,
		InitiateRate:      cfg.Calls.InitiateRate,
		InitiateBurst:     cfg.Calls.InitiateBurst,
		// A call outlives its media by no more than an allocation can: an
		// answered call whose clients vanished is ended then.
		MaxCallDuration: cfg.TURN.MaxAllocationDuration,
		CallRetention:   cfg.Calls.Retention,
		Logger:          n.log,
		RoomIndex:       n.state,
	}
	// The gateway's call path (rtccall) receives the bridge's MatrixRTC
	// events, so it is made first; an untyped nil observer must not reach
	// the bridge.
	var gw bridgeRTC
	if cfg.GatewayEnabled() {
		allow, err := n.homeserverAddrPolicy()
		if err != nil {
			return ConfigError{err}
		}
		gw = bridgeRTC{allowAddr: allow, trusted: []string{gatewayServiceURL(cfg)}, newCalls: func(rooms *membership.Rooms) (matrix.RTCObserver, error) {
			m, err := n.buildRTCCalls(rooms)
			if m == nil || err != nil {
				return nil, err
			}
			n.rtcCalls = m
			return m, nil
		}}
	} else {
		n.logGatewayOff()
	}
	bridge, rtc, err := newBridge(cfg.Matrix, cfg.StateDir, n.state, pub, n.opts.Registry, n.log, gw)
	if err != nil {
		var ce ConfigError
		if errors.As(err, &ce) {
			return err
		}
		return ConfigError{err}
	}
	if bridge != nil {
		n.bridge = bridge
		svcCfg.Outbound, svcCfg.Rooms, svcCfg.Invites = bridge.Encoder(), bridge, bridge
		if pg, ok := n.state.(*postgres.Store); ok { // one bridge per database (bridgelease.go)
			n.bridgeLeader = newBridgeLeader(pg, bridge, cfg.Store.Postgres.MatrixTakeover, n.opts.Registry, n.log)
			svcCfg.Invites = leaderInvites{n.bridgeLeader, bridge}
			svcCfg.Rooms = leaderRooms{n.bridgeLeader, bridge}
			n.cluster.wakeOutbox = bridge.Encoder().Wake // outbox entries other nodes committed
		}
		svcCfg.InviteWait = cfg.Matrix.InviteWait
		// Which protocol conversations' calls use: matrix.call_protocol,
		// "auto" reading the memberships the bridge's sync keeps. With
		// Matrix off both stay unset: calls are icebox's own, legacy.
		svcCfg.CallProtocol, svcCfg.RTCRooms = cfg.Matrix.CallProtocol, rtc
		if n.rtcCalls != nil {
			svcCfg.RTC = n.rtcCalls
			// The media keys of bridged calls: the registry sends
			// icebox's keys with the bridge and takes the members'
			// from its sync (rtccall opens a session per call).
			n.rtcKeys = e2ee.NewRegistry(bridge, e2ee.Config{Logger: n.log, Registerer: n.opts.Registry})
			bridge.SetRTCKeys(n.rtcKeys)
		}
	}
	if n.calls, err = signaling.NewService(svcCfg); err != nil {
		return ConfigError{err}
	}
	if n.bridge != nil {
		n.bridge.SetCalls(n.calls) // the sync loop turns Matrix users' m.call.* into transitions
	}
	if n.rtcCalls != nil {
		n.rtcCalls.Bind(n.bridge, n.calls)
	}
	return nil
}

// buildAPI builds the HTTP API: ICE servers for the bound listeners, the
// calls, admin and operations endpoints.
func (n *Node) buildAPI(context.Context) error {
	cfg := n.cfg
	if len(cfg.Auth.StaticTokens) == 0 && cfg.Auth.JWT.HS256Secret == "" && cfg.Auth.JWT.HS256SecretFile == "" &&
		!(cfg.Matrix.Enabled && cfg.Auth.MatrixTokens.Enabled) {
		n.log.Warn().Str("component", "http").
			Msg("no API authentication is configured (auth.static_tokens, auth.jwt, Matrix tokens): every API request will be refused with 401")
	}
	var ui http.Handler // nil: /ui/ answers 404
	if cfg.HTTP.UI {
		h, err := web.New()
		if err != nil {
			return fmt.Errorf("web ui: %w", err)
		}
		ui = h
	}
	mounts, err := n.buildMatrixRTC()
	if err != nil {
		return err
	}
	n.api, err = httpapi.New(httpapi.Config{
		Keyring:      n.keys.Keyring,
		ICE:          n.iceConfig(cfg),
		CORSOrigins:  cfg.HTTP.CORS.AllowedOrigins,
		Ready:        n.readyErr,
		Calls:        n.calls,
		Auth:         n.opts.Auth,
		Hub:          n.hub,
		Allocations:  func() any { return n.relay.Allocations() },
		Sessions:     sessionsAdmin{n},
		ActiveCalls:  n.state.ActiveCalls,
		UI:           ui,
		Mounts:       mounts,
		KeyringAdmin: keyringAdmin{keys: n.keys, liveKit: n.liveKitState},
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		Draining:     n.draining.Load,
		ReadyDetails: n.readyDetails,
		Gatherer:     n.opts.Registry,
		Registerer:   n.opts.Registry,
		Logger:       n.log,
	})
	return err
}

// readyErr is /readyz: serving, the state file answers, ACME (if used) has
// a valid certificate for every domain, and the managed livekit-server (if
// any) runs and answers.
func (n *Node) readyErr() error {
	if !n.ready.Load() {
		return errors.New("not serving")
	}
	if err := n.certsReady(); err != nil {
		return err
	}
	if n.liveKit != nil {
		if err := n.liveKit.sup.Ready(); err != nil {
			return err
		}
	}
	return n.state.Ping()
}

func externalServers(in []config.ExternalServer) []httpapi.ICEServer {
	out := make([]httpapi.ICEServer, 0, len(in))
	for _, e := range in {
		out = append(out, httpapi.ICEServer{URLs: e.URLs, Username: e.Username, Credential: e.Credential})
	}
	return out
}

// muxFirst puts the shared ports' turns: URIs (turn.mux) first: TURN over
// TLS on 443 is what gets through the strictest firewalls, and clients
// that try servers in order reach it without waiting for UDP to fail.
func muxFirst(host string, uris []string, mux []net.Listener) []string {
	addrs := make([]string, 0, len(mux))
	for _, l := range mux {
		addrs = append(addrs, l.Addr().String())
	}
	_, first := relayplan.ICEURIs(host, nil, nil, addrs)
	for _, u := range uris {
		if !slices.Contains(first, u) {
			first = append(first, u)
		}
	}
	return first
}
