package node

import (
	"errors"
	"slices"
	"strings"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/turnserver"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
)

// reload is one SIGHUP: certificates, then the configuration read again
// (file and environment, validated). An invalid configuration is refused
// whole, its errors logged: nothing changes. Otherwise the keys that
// changed are applied where they can be live (config.IsLiveKey) and every
// changed key that needs a restart is named; those keep their running
// values, so the next reload names them again. cur is the configuration in
// effect; reload returns the one in effect afterwards.
//
// Only key names are logged, never values: several are secrets.
func (n *Node) reload(cur config.Config) config.Config {
	for _, r := range n.certs {
		r.Reload("SIGHUP")
	}
	if n.opts.LoadConfig == nil {
		n.log.Info().Msg("SIGHUP: certificates reloaded (no configuration to read again)")
		return cur
	}
	next, err := n.opts.LoadConfig()
	if err != nil {
		n.log.Error().Err(err).Msg("SIGHUP: the configuration is invalid; nothing reloaded, the running configuration stays")
		return cur
	}
	// The keyring reads its secret files again even when the keys did not
	// change (a rotated file), and with it the SFU peers.
	keyringErr := n.reloadKeyring(next)

	live, restart := config.Changes(cur, next)
	if next.Auth.JWT.HS256SecretFile != "" && !slices.ContainsFunc(live, func(k string) bool { return strings.HasPrefix(k, "auth.") }) {
		// The secret file may hold a new secret under the same name: read
		// it again, as the keyring does its files.
		if err := n.applyLive("auth.", cur, next, nil); err != nil {
			n.log.Error().Err(err).Msg("SIGHUP: reading auth.jwt.hs256_secret_file again failed; the running JWT secret stays")
		}
	}
	var applied, failed []string
	for _, group := range groupKeys(live) {
		if err := n.applyLive(group.prefix, cur, next, keyringErr); err != nil {
			n.log.Error().Err(err).Strs("keys", group.keys).Msg("SIGHUP: applying changed keys failed; their running values stay")
			failed = append(failed, group.keys...)
			continue
		}
		applied = append(applied, group.keys...)
	}
	// Keys the node cannot change without its hooks need a restart too.
	for i := 0; i < len(applied); {
		if n.liveHook(applied[i]) {
			i++
			continue
		}
		restart = append(restart, applied[i])
		applied = slices.Delete(applied, i, i+1)
	}
	cur = config.WithKeys(cur, next, applied)
	ev := n.log.Info()
	if len(restart) > 0 || len(failed) > 0 {
		ev = n.log.Warn()
	}
	ev.Strs("applied", nonNil(applied)).Strs("needs_restart", nonNil(restart)).Strs("failed", nonNil(failed)).
		Msg(reloadMessage(applied, restart))
	return cur
}

func reloadMessage(applied, restart []string) string {
	switch {
	case len(applied) == 0 && len(restart) == 0:
		return "SIGHUP: configuration reloaded: no key changed"
	case len(restart) == 0:
		return "SIGHUP: configuration reloaded: changed keys applied"
	}
	return "SIGHUP: configuration reloaded; keys in needs_restart changed but take effect only after a restart (their running values stay)"
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// liveHook reports whether the node has what applying key needs (Options
// hooks that a caller may leave nil).
func (n *Node) liveHook(key string) bool {
	switch {
	case key == "log.level":
		return n.opts.LogLevel != nil
	case strings.HasPrefix(key, "auth."):
		return n.opts.BuildAuth != nil
	}
	return true
}

// keyGroup is the changed live keys one apply step handles.
type keyGroup struct {
	prefix string
	keys   []string
}

// applyPrefixes are the apply steps, by the key prefix each handles.
func applyPrefixes() []string {
	return []string{"log.level", "turn.allowed_peers", "turn.denied_peers", "turn.quotas.", "turn.error_", "turn.binding_", "calls.initiate_", "auth.", "ice_servers.",
		"http.cors.", "credentials.secrets", "matrixrtc.livekit.turn.peers"}
}

// groupKeys sorts changed live keys into apply steps; the peer lists are
// one step (one policy).
func groupKeys(keys []string) []keyGroup {
	var out []keyGroup
	for _, p := range applyPrefixes() {
		var g keyGroup
		g.prefix = p
		if p == "turn.denied_peers" {
			continue // with turn.allowed_peers
		}
		for _, k := range keys {
			if strings.HasPrefix(k, p) || (p == "turn.allowed_peers" && k == "turn.denied_peers") {
				g.keys = append(g.keys, k)
			}
		}
		if len(g.keys) > 0 {
			out = append(out, g)
		}
	}
	return out
}

// applyLive applies the step for prefix from next; cur is the running
// configuration (for the restart-only keys a step depends on), keyringErr
// what reloadKeyring returned.
func (n *Node) applyLive(prefix string, cur, next config.Config, keyringErr error) error {
	switch prefix {
	case "log.level":
		if n.opts.LogLevel == nil {
			return nil
		}
		l, err := zerolog.ParseLevel(next.Log.Level)
		if err != nil {
			return err
		}
		n.opts.LogLevel.SetLevel(l)
	case "turn.allowed_peers":
		t := cur.TURN
		t.AllowedPeers, t.DeniedPeers = next.TURN.AllowedPeers, next.TURN.DeniedPeers
		p, err := n.peerPolicy(t)
		if err != nil {
			return err
		}
		return n.relay.SetPolicy(p)
	case "turn.quotas.":
		q := next.TURN.Quotas
		if err := n.relay.SetBandwidth(relayBandwidth(q)); err != nil {
			return err
		}
		n.relay.SetQuotas(turnserver.Quotas{PerUser: q.PerUser, PerCall: q.PerCall, Total: q.Total})
	case "turn.error_", "turn.binding_":
		t := next.TURN
		n.relay.SetRateLimits(turnserver.ErrorRate{PerSecond: t.ErrorRate, Burst: t.ErrorBurst},
			turnserver.ErrorRate{PerSecond: t.BindingRate, Burst: t.BindingBurst})
	case "calls.initiate_":
		// Each user keeps the tokens of their bucket (a reload neither
		// refills nor empties it).
		return n.calls.SetInitiateLimits(next.Calls.InitiateRate, next.Calls.InitiateBurst)
	case "auth.":
		if n.opts.BuildAuth == nil {
			return nil
		}
		c := next
		c.Matrix = cur.Matrix // matrix.* is not reloaded
		a, err := n.opts.BuildAuth(c)
		if err != nil {
			return err
		}
		n.opts.Auth.Swap(a)
	case "ice_servers.":
		c := cur
		c.ICEServers = next.ICEServers
		return n.api.SetICE(n.iceConfig(c))
	case "http.cors.":
		n.api.SetCORS(next.HTTP.CORS.AllowedOrigins)
	case "credentials.secrets", "matrixrtc.livekit.turn.peers":
		// reloadKeyring did it (and logged it).
		return keyringErr
	default:
		return errors.New("node: reload: no apply step for " + prefix)
	}
	return nil
}

// peerPolicy compiles the relay's peer policy from t for the bound
// listeners.
func (n *Node) peerPolicy(t config.TURN) (*turnserver.Policy, error) {
	return turnserver.NewPolicy(turnserver.PolicyConfig{
		Allowed:       t.AllowedPeers,
		Denied:        t.DeniedPeers,
		AllowLoopback: t.AllowLoopbackPeers,
		RelayAddrs:    n.plan.Addrs(),
		MinPort:       uint16(t.Relay.MinPort),
		MaxPort:       uint16(t.Relay.MaxPort),
		ServicePorts:  relayplan.ListenPorts(n.addrs.TURNUDP, n.addrs.TURNTCP, n.addrs.TURNTLS, []string{n.addrs.HTTP}),
	})
}

// iceConfig is what /calls/ice_servers offers under cfg, for the bound
// listeners.
func (n *Node) iceConfig(cfg config.Config) httpapi.ICEConfig {
	a := n.addrs
	host := relayplan.ICEHost(cfg.ICEServers.Hostname, cfg.TURN.Relay.PublicIP, n.plan, relayplan.First(a.TURNUDP, a.TURNTCP, a.TURNTLS))
	stunURIs, turnURIs := relayplan.ICEURIs(host, a.TURNUDP, a.TURNTCP, a.TURNTLS)
	turnURIs = muxFirst(host, turnURIs, n.muxLn)
	return httpapi.ICEConfig{
		STUN:     stunURIs,
		TURN:     turnURIs,
		TTL:      cfg.Credentials.TTL,
		External: externalServers(cfg.ICEServers.External),
	}
}
