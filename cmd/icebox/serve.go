package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/turnserver"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
	"github.com/icebox-voip/icebox/web"
)

func serveCmd(sig *signals, args []string, stderr io.Writer, env []string) error {
	fs := newFlagSet("serve", stderr)
	path := fs.String("config", "", "configuration file (default "+defaultConfigPath+" if it exists)")
	initState := fs.Bool("init-state", false, "start afresh on purpose when state_dir's state file, keyring record or generated "+
		"secrets are missing or damaged (they are replaced by new ones; revocations and calls are lost)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, used, err := loadConfig(*path, env)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	log.Info().Str("config", used).Str("version", versionString()).Msg("starting")
	warnReadableSecrets(*path, cfg, log)
	return serve(sig, cfg, serveEnv{configPath: *path, env: env, initState: *initState}, log)
}

// serveEnv is what serve needs to reload its configuration, and how to
// treat the state directory.
type serveEnv struct {
	configPath string
	env        []string
	initState  bool // --init-state
}

// serve runs icebox until the first stop signal, then drains (see drain)
// until the second or drain_timeout. Everything is bound before anything
// serves; a failure at start-up closes what was opened.
func serve(sig *signals, cfg config.Config, senv serveEnv, log zerolog.Logger) (err error) {
	ctx := sig.ctx
	notify, err := newNotifier(senv.env)
	if err != nil {
		return usageError{err}
	}
	// The state file's lock comes first: a second icebox on the same state
	// directory must fail here, before SO_REUSEPORT lets it share (and
	// steal part of) the first one's UDP traffic.
	st, err := openState(cfg, senv.initState, log)
	if err != nil {
		return err
	}
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			err = errors.Join(err, closers[i]())
		}
		err = errors.Join(err, st.Close())
	}()

	kr, err := buildKeyring(cfg)
	if err != nil {
		return usageError{err}
	}
	var keyring atomic.Pointer[credentials.Keyring]
	keyring.Store(kr)
	keys := &keyringManager{cfg: cfg, ring: &keyring, now: time.Now}

	// The host's addresses are tracked by the relay itself (turnserver
	// Config.HostAddrs): they may change while it runs.
	local, err := relayplan.HostAddrs()
	if err != nil {
		return err
	}
	plan, err := relayplan.New(cfg.TURN.Relay.BindIP, cfg.TURN.Relay.PublicIP, local)
	if err != nil {
		return usageError{err}
	}

	ln, bound, certs, err := bindTURN(ctx, cfg.TURN, log)
	closers = append(closers, ln.close)
	if err != nil {
		return err
	}
	var lc net.ListenConfig
	httpLn, err := lc.Listen(ctx, "tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http: listen %s: %w", cfg.HTTP.Listen, err)
	}
	closers = append(closers, func() error { return ignoreClosed(httpLn.Close()) })
	var httpCerts *certReloader
	if cfg.HTTP.TLS.CertFile != "" {
		if httpCerts, err = newCertReloader(cfg.HTTP.TLS.CertFile, cfg.HTTP.TLS.KeyFile, log); err != nil {
			return usageError{fmt.Errorf("http.tls: %w", err)}
		}
		httpLn = tls.NewListener(httpLn, httpCerts.tlsConfig())
	}

	policy, err := turnserver.NewPolicy(turnserver.PolicyConfig{
		Allowed:       cfg.TURN.AllowedPeers,
		Denied:        cfg.TURN.DeniedPeers,
		AllowLoopback: cfg.TURN.AllowLoopbackPeers,
		RelayAddrs:    plan.Addrs(),
		MinPort:       uint16(cfg.TURN.Relay.MinPort),
		MaxPort:       uint16(cfg.TURN.Relay.MaxPort),
		ServicePorts:  relayplan.ListenPorts(bound.udp, bound.tcp, bound.tls, []string{httpLn.Addr().String()}),
	})
	if err != nil {
		return usageError{err}
	}
	for _, adv := range []netip.Addr{plan.Adv4, plan.Adv6} {
		if cfg.TURN.Relay.PublicIP == "" && adv.IsValid() && (adv.IsPrivate() || adv.IsLoopback() || adv.IsLinkLocalUnicast()) {
			log.Warn().Str("component", "turn").Stringer("relay_address", adv).
				Msg("relays advertise a private address: clients outside this network get no media. Behind a NAT (cloud VMs), set turn.relay.public_ip to the public address")
		}
	}
	if cfg.TURN.AllowLoopbackPeers {
		log.Warn().Str("component", "turn").
			Msg("turn.allow_loopback_peers is on: the relay may reach 127.0.0.0/8 and ::1 — test setups only, never in production")
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo())

	// Revocations outlive restarts: a call that ended before the restart
	// must not get its credentials back, not even for a moment.
	revs, err := st.Revocations(ctx, time.Now())
	if err != nil {
		return err
	}
	revoked := make([]turnserver.Revocation, 0, len(revs))
	for _, r := range revs {
		revoked = append(revoked, turnserver.Revocation{CallID: r.CallID, Until: r.Until})
	}
	turnSrv, err := turnserver.New(turnserver.Config{
		Revoked:               revoked,
		Realm:                 cfg.TURN.Realm,
		Keyring:               keyring.Load,
		RelayBindIPv4:         plan.Bind4,
		RelayIPv4:             plan.Adv4,
		RelayBindIPv6:         plan.Bind6,
		RelayIPv6:             plan.Adv6,
		MinPort:               uint16(cfg.TURN.Relay.MinPort),
		MaxPort:               uint16(cfg.TURN.Relay.MaxPort),
		Policy:                policy,
		Quotas:                turnserver.Quotas{PerUser: cfg.TURN.Quotas.PerUser, PerCall: cfg.TURN.Quotas.PerCall, Total: cfg.TURN.Quotas.Total},
		MaxAllocationDuration: cfg.TURN.MaxAllocationDuration,
		ErrorRate:             turnserver.ErrorRate{PerSecond: cfg.TURN.ErrorRate, Burst: cfg.TURN.ErrorBurst},
		BindingRate:           turnserver.ErrorRate{PerSecond: cfg.TURN.BindingRate, Burst: cfg.TURN.BindingBurst},
		RecvBatch:             cfg.TURN.RecvBatch,
		Logger:                log,
		Registerer:            reg,
	}, ln.listeners)
	if err != nil {
		return err
	}
	closers = append(closers, turnSrv.Close)

	auth, err := buildAuthenticator(cfg.Auth, cfg.Matrix)
	if err != nil {
		return usageError{err}
	}
	matrixTokens := cfg.Matrix.Enabled && cfg.Auth.MatrixTokens.Enabled
	if len(cfg.Auth.StaticTokens) == 0 && cfg.Auth.JWT.HS256Secret == "" && cfg.Auth.JWT.HS256SecretFile == "" && !matrixTokens {
		log.Warn().Str("component", "http").
			Msg("no API authentication is configured (auth.static_tokens, auth.jwt, Matrix tokens): every API request will be refused with 401")
	}
	hub := httpapi.NewHub(httpapi.HubConfig{Logger: log, Registerer: reg})
	closers = append(closers, hub.Close)
	svcCfg := signaling.ServiceConfig{
		Store:             st,
		Relay:             turnSrv,
		Publisher:         hub,
		InviteLifetime:    cfg.Calls.InviteLifetime,
		MaxInviteLifetime: cfg.Calls.MaxInviteLifetime,
		CredentialTTL:     cfg.Credentials.TTL,
		InitiateRate:      cfg.Calls.InitiateRate,
		InitiateBurst:     cfg.Calls.InitiateBurst,
		// A call outlives its media by no more than an allocation can: an
		// answered call whose clients vanished is ended then.
		MaxCallDuration: cfg.TURN.MaxAllocationDuration,
		CallRetention:   cfg.Calls.Retention,
		Logger:          log,
	}
	bridge, err := newBridge(cfg.Matrix, cfg.StateDir, st, hub, reg, log)
	if err != nil {
		return usageError{err}
	}
	svcCfg.RoomIndex = st
	if bridge != nil {
		svcCfg.Outbound, svcCfg.Rooms, svcCfg.Invites = bridge.Encoder(), bridge, bridge
		svcCfg.InviteWait = cfg.Matrix.InviteWait
	}
	calls, err := signaling.NewService(svcCfg)
	if err != nil {
		return usageError{err}
	}
	if bridge != nil {
		bridge.SetCalls(calls) // the sync loop turns Matrix users' m.call.* into transitions
	}

	host := relayplan.ICEHost(cfg.ICEServers.Hostname, cfg.TURN.Relay.PublicIP, plan, relayplan.First(bound.udp, bound.tcp, bound.tls))
	stunURIs, turnURIs := relayplan.ICEURIs(host, bound.udp, bound.tcp, bound.tls)
	var ready, draining atomic.Bool
	var ui http.Handler // nil: /ui/ answers 404
	if cfg.HTTP.UI {
		h, err := web.New()
		if err != nil {
			return fmt.Errorf("web ui: %w", err)
		}
		ui = h
	}
	api, err := httpapi.New(httpapi.Config{
		Keyring: keyring.Load,
		ICE: httpapi.ICEConfig{
			STUN:     stunURIs,
			TURN:     turnURIs,
			TTL:      cfg.Credentials.TTL,
			External: externalServers(cfg.ICEServers.External),
		},
		Ready: func() error {
			if !ready.Load() {
				return errors.New("not serving")
			}
			return st.Ping()
		},
		Calls:        calls,
		Auth:         auth,
		Hub:          hub,
		Allocations:  func() any { return turnSrv.Allocations() },
		ActiveCalls:  st.ActiveCalls,
		UI:           ui,
		KeyringAdmin: keys,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes,
		Draining:     draining.Load,
		Gatherer:     reg,
		Registerer:   reg,
		Logger:       log,
	})
	if err != nil {
		return err
	}

	// Components run until the drain is over, not until the first signal.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return turnSrv.Run(gctx) })
	g.Go(func() error { return api.Serve(gctx, httpLn) })
	g.Go(func() error { return calls.Run(gctx) })
	if bridge != nil {
		g.Go(func() error { return bridge.Run(gctx) })
	}
	g.Go(func() error { return notify.runWatchdog(gctx, func() bool { return st.Ping() == nil }) })
	reloaders := make([]*certReloader, 0, 2)
	for _, r := range []*certReloader{certs, httpCerts} {
		if r != nil {
			reloaders = append(reloaders, r)
			g.Go(func() error { return r.watch(gctx) })
		}
	}
	g.Go(func() error {
		retire := time.NewTicker(time.Minute)
		defer retire.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-sig.reload:
				log.Info().Msg("SIGHUP: reloading certificates and keyring")
				for _, r := range reloaders {
					r.reload("SIGHUP")
				}
				reloadKeyring(senv.configPath, senv.env, keys, log)
			case <-retire.C:
				retired, err := keys.refresh()
				if err != nil {
					log.Error().Err(err).Str("component", "credentials").Msg("retiring old keys")
				} else if len(retired) > 0 {
					log.Info().Str("component", "credentials").Strs("retired", retired).Msg("retired keys whose credentials have expired")
				}
			}
		}
	})
	ready.Store(true)
	if err := notify.notify("READY=1\nSTATUS=serving"); err != nil {
		log.Warn().Err(err).Msg("telling systemd we are ready")
	}
	log.Info().
		Strs("turn_udp", bound.udp).Strs("turn_tcp", bound.tcp).Strs("turn_tls", bound.tls).
		Str("http", httpLn.Addr().String()).Stringer("relay_ipv4", plan.Adv4).Stringer("relay_ipv6", plan.Adv6).
		Str("active_kid", kr.ActiveKID()).Str("state", st.Path()).
		Msg("ready")

	select {
	case <-ctx.Done():
	case <-gctx.Done(): // a component failed
	}
	ready.Store(false)
	draining.Store(true)
	if err := notify.notify("STOPPING=1\nSTATUS=draining"); err != nil {
		log.Warn().Err(err).Msg("telling systemd we are stopping")
	}
	drain(sig, gctx, cfg.DrainTimeout, log, func() (int, int) { return turnSrv.AllocationCount(), calls.ActiveTimers() })
	log.Info().Msg("shutting down")
	stopRun()
	return g.Wait()
}

// drainPoll is how often draining checks whether everything has ended.
const drainPoll = 250 * time.Millisecond

// drain waits, no longer than timeout, until no allocation is open and no
// invite rings (new credentials and calls are refused meanwhile). A second
// signal or a failed component ends it at once.
func drain(sig *signals, failed context.Context, timeout time.Duration, log zerolog.Logger, live func() (allocs, ringing int)) {
	if timeout <= 0 {
		return
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	allocs, ringing := live()
	log.Info().Int("allocations", allocs).Int("ringing", ringing).Dur("timeout", timeout).
		Msg("draining: no new credentials or calls; waiting for allocations and invites to end (signal again to exit now)")
	for allocs+ringing > 0 {
		select {
		case <-sig.force:
			log.Warn().Int("allocations", allocs).Int("ringing", ringing).Msg("second signal: exiting without waiting")
			return
		case <-failed.Done():
			return
		case <-deadline.C:
			log.Warn().Int("allocations", allocs).Int("ringing", ringing).Msg("drain timeout: exiting with allocations open")
			return
		case <-tick.C:
			allocs, ringing = live()
		}
	}
	log.Info().Msg("drained")
}

// turnListeners are the bound TURN sockets, and what they were bound to.
type turnListeners struct {
	listeners turnserver.Listeners
}

type boundAddrs struct{ udp, tcp, tls []string }

func (t *turnListeners) close() error {
	var errs []error
	for _, c := range t.listeners.UDP {
		errs = append(errs, ignoreClosed(c.Close()))
	}
	for _, l := range append(append([]net.Listener{}, t.listeners.TCP...), t.listeners.TLS...) {
		errs = append(errs, ignoreClosed(l.Close()))
	}
	return errors.Join(errs...)
}

// bindTURN binds every configured TURN listener; with TLS listeners it
// also returns the certificate reloader serving them.
func bindTURN(ctx context.Context, cfg config.TURN, log zerolog.Logger) (*turnListeners, boundAddrs, *certReloader, error) {
	tl := &turnListeners{}
	var b boundAddrs
	n := cfg.UDPSockets
	if n == 0 {
		n = runtime.NumCPU()
	}
	for _, addr := range cfg.Listen.UDP {
		conns, granted, err := turnserver.ListenUDP(ctx, addr, n, cfg.SocketBuffer)
		if err != nil {
			return tl, b, nil, err
		}
		tl.listeners.UDP = append(tl.listeners.UDP, conns...)
		b.udp = append(b.udp, conns[0].LocalAddr().String())
		if cfg.SocketBuffer > 0 && granted < cfg.SocketBuffer {
			log.Warn().Str("component", "turn").Int("wanted", cfg.SocketBuffer).Int("granted", granted).
				Msg("the kernel capped the UDP socket buffer; raise net.core.rmem_max/wmem_max or run with CAP_NET_ADMIN, or packets may be lost under load")
		}
	}
	for _, addr := range cfg.Listen.TCP {
		l, err := turnserver.ListenTCP(ctx, addr)
		if err != nil {
			return tl, b, nil, err
		}
		tl.listeners.TCP = append(tl.listeners.TCP, l)
		b.tcp = append(b.tcp, l.Addr().String())
	}
	if len(cfg.Listen.TLS) == 0 {
		return tl, b, nil, nil
	}
	certs, err := newCertReloader(cfg.TLS.CertFile, cfg.TLS.KeyFile, log)
	if err != nil {
		return tl, b, nil, usageError{fmt.Errorf("turn.tls: %w", err)}
	}
	tl.listeners.TLSConfig = certs.tlsConfig()
	for _, addr := range cfg.Listen.TLS {
		l, err := turnserver.ListenTCP(ctx, addr)
		if err != nil {
			return tl, b, nil, err
		}
		tl.listeners.TLS = append(tl.listeners.TLS, l)
		b.tls = append(b.tls, l.Addr().String())
	}
	return tl, b, certs, nil
}

func externalServers(in []config.ExternalServer) []httpapi.ICEServer {
	out := make([]httpapi.ICEServer, 0, len(in))
	for _, e := range in {
		out = append(out, httpapi.ICEServer{URLs: e.URLs, Username: e.Username, Credential: e.Credential})
	}
	return out
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
