package node

import (
	"context"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/icebox-voip/icebox/config"
)

// Run serves until ctx is done or a component fails, then drains (see
// drain) and stops every component. It returns the first component error;
// Close releases the sockets and the state file afterwards.
func (n *Node) Run(ctx context.Context) error {
	// Components run until the drain is over, not until ctx is done.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	n.start(g, gctx)
	n.markServing()
	select {
	case <-ctx.Done():
	case <-gctx.Done(): // a component failed
	}
	n.ready.Store(false)
	n.draining.Store(true)
	if err := n.opts.Notifier.Notify("STOPPING=1\nSTATUS=draining"); err != nil {
		n.log.Warn().Err(err).Msg("telling systemd we are stopping")
	}
	n.drain(gctx)
	n.log.Info().Msg("shutting down")
	stopRun()
	return g.Wait()
}

// start runs every component, and what keeps them going, in g.
func (n *Node) start(g *errgroup.Group, ctx context.Context) {
	g.Go(func() error { return n.relay.Run(ctx) })
	g.Go(func() error { return n.api.Serve(ctx, n.httpLn) })
	g.Go(func() error { return n.calls.Run(ctx) })
	if n.cluster != nil {
		g.Go(func() error { return n.cluster.Run(ctx) })
	}
	if n.rtcCalls != nil {
		g.Go(func() error { return n.rtcCalls.Run(ctx) })
	}
	if n.bridge != nil {
		g.Go(func() error { return n.runBridge(ctx) }) // bridgelease.go
	}
	if n.liveKit != nil {
		// It stops with the other components, after the drain: calls on
		// the SFU go on while icebox drains.
		g.Go(func() error { return n.liveKit.sup.Run(ctx) })
	}
	g.Go(func() error { return n.opts.Notifier.RunWatchdog(ctx, n.stateAlive) })
	for _, r := range n.certs {
		g.Go(func() error { return r.Watch(ctx) })
	}
	g.Go(func() error { return n.maintain(ctx) })
}

// markServing marks the node ready, tells systemd and logs where it listens.
func (n *Node) markServing() {
	n.ready.Store(true)
	close(n.serving)
	if err := n.opts.Notifier.Notify("READY=1\nSTATUS=serving"); err != nil {
		n.log.Warn().Err(err).Msg("telling systemd we are ready")
	}
	n.readyEvent().Msg("ready")
}

// readyEvent is the ready line's fields: only the listeners and relay
// addresses that are set (a listener turned off, or no IPv6 relay, is left
// out rather than printed as [] or <nil>).
func (n *Node) readyEvent() *zerolog.Event {
	a := n.addrs
	ev := n.log.Info()
	for _, l := range []struct {
		key   string
		addrs []string
	}{{"turn_udp", a.TURNUDP}, {"turn_tcp", a.TURNTCP}, {"turn_tls", a.TURNTLS}, {"mux", n.muxAddrs()}} {
		if len(l.addrs) > 0 {
			ev = ev.Strs(l.key, l.addrs)
		}
	}
	if a.HTTP != "" {
		ev = ev.Str("http", a.HTTP)
	}
	if n.plan.Adv4.IsValid() {
		ev = ev.Stringer("relay_ipv4", n.plan.Adv4)
	}
	if n.plan.Adv6.IsValid() {
		ev = ev.Stringer("relay_ipv6", n.plan.Adv6)
	}
	return ev.Str("active_kid", n.keys.Keyring().ActiveKID()).Str("state", n.state.Path())
}

// muxAddrs are turn.mux's shared ports as bound.
func (n *Node) muxAddrs() []string {
	out := make([]string, 0, len(n.muxLn))
	for _, l := range n.muxLn {
		out = append(out, l.Addr().String())
	}
	return out
}

// maintain reloads on request and retires old keys, until ctx is done.
func (n *Node) maintain(ctx context.Context) error {
	retire := time.NewTicker(time.Minute)
	defer retire.Stop()
	cur := n.cfg // the configuration in effect, changed by reloads
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.opts.Reload:
			n.log.Info().Msg("SIGHUP: reloading the configuration, certificates and keyring")
			cur = n.reload(cur)
		case <-retire.C:
			n.retireKeys()
		}
	}
}

// reloadKeyring swaps the keyring for cfg's credentials.secrets (read
// again, or the managed keyring's record); on any error the current
// keyring stays.
func (n *Node) reloadKeyring(cfg config.Config) error {
	next, err := n.keys.Reload(cfg)
	if err == nil {
		err = n.reloadSFUPeers(cfg) // before the log line that says the reload is done
		n.log.Info().Str("component", "credentials").Str("active_kid", next.ActiveKID()).
			Strs("kids", next.KIDs()).Msg("keyring reloaded")
		return err
	}
	n.log.Error().Str("component", "credentials").Err(err).Msg("keyring reload failed; keeping the current keyring")
	return err
}

// reloadSFUPeers swaps the relay's SFU allow-list for the reloaded
// matrixrtc.livekit.turn.peers (and the managed LiveKit's addresses, read
// again: without a node IP they are this host's, which may have changed).
// The managed LiveKit's own settings are not reloaded, so its part comes
// from the configuration the node started with; on error the current list
// stays.
func (n *Node) reloadSFUPeers(cfg config.Config) error {
	started := n.cfg.MatrixRTC
	cfg.MatrixRTC.Enabled, cfg.MatrixRTC.LiveKit.Mode, cfg.MatrixRTC.LiveKit.Managed = started.Enabled, started.LiveKit.Mode, started.LiveKit.Managed
	cfg.TURN.Relay.PublicIP = n.cfg.TURN.Relay.PublicIP
	peers, err := relaySFUPeers(cfg)
	if err == nil {
		err = n.relay.SetSFUPeers(peers)
	}
	if err != nil {
		n.log.Error().Str("component", "turn").Err(err).Msg("SFU peer list reload failed; keeping the current list")
		return err
	}
	list := make([]string, 0, len(peers))
	for _, p := range peers {
		list = append(list, p.String())
	}
	n.log.Info().Str("component", "turn").Strs("sfu_peers", list).Msg("SFU peer list reloaded")
	return nil
}

// retireKeys drops keys whose credentials have all expired.
func (n *Node) retireKeys() {
	retired, err := n.keys.Retire()
	if err != nil {
		n.log.Error().Err(err).Str("component", "credentials").Msg("retiring old keys")
	} else if len(retired) > 0 {
		n.log.Info().Str("component", "credentials").Strs("retired", retired).Msg("retired keys whose credentials have expired")
	}
}

// drainPoll is how often draining checks whether everything has ended.
const drainPoll = 250 * time.Millisecond

// drain waits, no longer than drain_timeout, until no allocation is open,
// no invite rings and no one is in a room of the managed LiveKit (new
// credentials and calls are refused meanwhile). Force or a failed
// component (failed is done) ends it at once.
func (n *Node) drain(failed context.Context) {
	timeout := n.cfg.DrainTimeout
	if timeout <= 0 {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	l := n.live()
	l.log(n.log.Info()).Dur("timeout", timeout).
		Msg("draining: no new credentials or calls; waiting for allocations, invites and LiveKit participants to end (signal again to exit now)")
	for l.any() {
		select {
		case <-n.opts.Force:
			l.log(n.log.Warn()).Msg("second signal: exiting without waiting")
			return
		case <-failed.Done():
			return
		case <-deadline.C:
			l.log(n.log.Warn()).Msg("drain timeout: exiting with allocations open")
			return
		case <-tick.C:
			l = n.live()
		}
	}
	n.log.Info().Msg("drained")
}

// liveCounts is what a drain waits for.
type liveCounts struct{ allocations, ringing, liveKit int }

func (n *Node) live() liveCounts {
	return liveCounts{n.relay.AllocationCount(), n.calls.ActiveTimers(), n.liveKitParticipants()}
}

func (l liveCounts) any() bool { return l.allocations+l.ringing+l.liveKit > 0 }

func (l liveCounts) log(e *zerolog.Event) *zerolog.Event {
	return e.Int("allocations", l.allocations).Int("ringing", l.ringing).Int("livekit_participants", l.liveKit)
}
