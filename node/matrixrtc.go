package node

import (
	"net/http"
	"net/netip"
	"slices"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
	"github.com/icebox-voip/icebox/turnserver"
)

// buildMatrixRTC builds the MatrixRTC authorization service when
// matrixrtc.enabled, as a mount of the HTTP API under matrixrtc.base_path,
// and in matrixrtc.livekit.mode: managed the livekit-server it issues
// tokens for (its keys, its supervisor, its webhook receiver's mount).
func (n *Node) buildMatrixRTC() (map[string]http.Handler, error) {
	cfg := n.cfg.MatrixRTC
	if !cfg.Enabled {
		return nil, nil
	}
	url, key := cfg.LiveKit.URL, cfg.LiveKit.APIKey
	roomService := "" // external: LiveKit's RoomService at url
	secret, err := cfg.LiveKit.SecretValue()
	if err != nil {
		return nil, ConfigError{err}
	}
	mounts := map[string]http.Handler{}
	if cfg.IsManaged() {
		if n.liveKit, err = n.buildManagedLiveKit(); err != nil {
			return nil, err
		}
		url, key, secret = n.liveKit.url, n.liveKit.keys.APIKey, n.liveKit.keys.APISecret
		// Rooms are created at the child's own signal port, not at url
		// (a public wss:// proxy address icebox may not reach).
		roomService = n.liveKit.roomServiceURL
		prefix, hook := n.liveKit.webhookMount()
		mounts[prefix] = hook
	}
	allow, err := n.homeserverAddrPolicy()
	if err != nil {
		return nil, ConfigError{err}
	}
	var members authservice.Membership // matrixrtc.require_joined: asked as matrix.service_user
	if cfg.RequireJoined {
		tok, err := n.cfg.Matrix.Token()
		if err != nil {
			return nil, ConfigError{err}
		}
		if members, err = authservice.NewMatrixMembership(n.cfg.Matrix.HomeserverURL, tok, cfg.VerifyTimeout); err != nil {
			return nil, ConfigError{err}
		}
	}
	svc, err := authservice.New(authservice.Config{
		AllowAddr:             allow,
		LiveKitURL:            url,
		RoomServiceURL:        roomService,
		APIKey:                key,
		APISecret:             secret,
		FullAccessHomeservers: cfg.FullAccessHomeservers,
		HomeserverURLs:        cfg.HomeserverURLs,
		JWTLifetime:           cfg.JWTLifetime,
		VerifyTimeout:         cfg.VerifyTimeout,
		VerifyCacheTTL:        cfg.VerifyCacheTTL,
		Membership:            members,
		Registerer:            n.opts.Registry,
		Logger:                n.log,
	})
	if err != nil {
		return nil, ConfigError{err}
	}
	n.onClose(svc.Close)
	mounts[cfg.BasePath] = svc.Handler(cfg.BasePath)
	return mounts, nil
}

// homeserverAddrPolicy is where the authorization service may reach a
// homeserver it discovered from a request's server name: the relay's peer
// rules (the deny-list, turn.allowed_peers and turn.denied_peers) and never
// an address of this host — the same promise the relay makes, since a
// server name is chosen by whoever sends the request.
func (n *Node) homeserverAddrPolicy() (func(netip.Addr) bool, error) {
	t := n.cfg.TURN
	rules, err := turnserver.NewPolicy(turnserver.PolicyConfig{
		Allowed: t.AllowedPeers, Denied: t.DeniedPeers, AllowLoopback: t.AllowLoopbackPeers,
	})
	if err != nil {
		return nil, err
	}
	return func(a netip.Addr) bool {
		a = turnserver.Canonical(a)
		// All of loopback is this host, also where a test allows
		// loopback peers for the relay.
		if a.IsLoopback() || !rules.AllowIP(a) {
			return false
		}
		// Read at each dial (a verification is rare; addresses change).
		host, err := turnserver.ListHostAddrs()
		if err != nil {
			return false
		}
		return !slices.ContainsFunc(host, func(h netip.Addr) bool { return turnserver.Canonical(h) == a })
	}, nil
}
