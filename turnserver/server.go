// Package turnserver is icebox's TURN/STUN relay, built on pion/turn: it
// authenticates TURN REST credentials from a keyring (with a refresh grace for
// expired ones and per-call revocation), applies the peer policy to every
// permission and relayed packet, enforces allocation quotas, and counts what
// it relays. Sockets are bound by the caller (see ListenUDP, ListenTCP) and
// handed in.
package turnserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

// Config configures a Server. Addresses and lists are parsed by the caller.
type Config struct {
	Realm string

	// Keyring returns the current keyring; it is called once per request so
	// a reload takes effect at once.
	Keyring func() *credentials.Keyring

	// RelayBindIPv4/RelayIPv4: where IPv4 relay sockets bind and the address
	// advertised to clients (they differ behind a 1:1 NAT). An invalid
	// RelayIPv4 disables IPv4 relays; likewise for IPv6.
	RelayBindIPv4, RelayIPv4 netip.Addr
	RelayBindIPv6, RelayIPv6 netip.Addr
	MinPort, MaxPort         uint16

	Policy *Policy
	Quotas Quotas

	// Bandwidth limits relayed UDP traffic per allocation, per user and
	// in total (bandwidth.go). Zero: unlimited.
	Bandwidth Bandwidth
	// RateInterval is how often each allocation's bit rate is computed
	// from its byte counters (AllocationInfo.BPSToPeer). Default (0):
	// DefaultRateInterval.
	RateInterval time.Duration

	// HostAddrs lists this host's addresses; the peer policy treats every
	// one like a relay address (only live relay ports reachable, see
	// PolicyConfig.LocalAddrs). New calls it first and fails if it fails
	// (the policy cannot protect addresses it does not know); the server
	// calls it again on every address change the kernel announces (Linux)
	// and every HostAddrsInterval, and swaps the set atomically. Default:
	// ListHostAddrs. Give your own where the server's sockets live in
	// another network namespace than the threads that would list them.
	HostAddrs func() ([]netip.Addr, error)
	// HostAddrsInterval: how often HostAddrs is called without an event.
	// Default (0): DefaultHostAddrsInterval.
	HostAddrsInterval time.Duration

	// ErrorRate limits STUN error responses per source on UDP (the
	// reflection guard). Zero PerSecond disables it.
	ErrorRate ErrorRate
	// BindingRate limits Binding success responses per source on UDP, with
	// a budget of its own (they are 2–3 times their request). Zero
	// PerSecond disables it.
	BindingRate ErrorRate

	// MaxAllocationDuration caps an allocation's life, however often it is
	// refreshed. Default: 12h.
	MaxAllocationDuration time.Duration

	// TCPMaxPerSource caps the TURN client connections open over TCP and
	// TLS from one source (an IPv4 address, or an IPv6 /64); more are
	// closed at accept. Default (0): 32. Negative: unlimited.
	TCPMaxPerSource int
	// TCPMaxTotal caps the TURN client connections open over TCP and TLS
	// together. Default (0): 10000. Negative: unlimited.
	TCPMaxTotal int
	// TCPIdleTimeout closes a TCP/TLS client connection that sends nothing
	// for this long. Default (0): 11m — longer than the 10-minute allocation
	// lifetime a client must refresh within, so only connections without a
	// live allocation (or RFC 6062 data connections whose client only
	// receives) are cut. Negative: none.
	TCPIdleTimeout time.Duration

	// RecvBatch is how many datagrams one system call may receive on a UDP
	// listener socket (recvmmsg). Default (0): DefaultRecvBatch; 1: one per
	// call, as pion reads.
	RecvBatch int

	// EngineLoops is how many loops of the relay engine read the UDP
	// sockets (Linux's epoll engine; the portable engine reads each socket
	// with a goroutine and ignores it). Default (0): half of GOMAXPROCS, at
	// least one (see defaultEngineLoops); New never changes GOMAXPROCS.
	EngineLoops int

	// SFUPeers is the allow-list of allocations made with an SFU
	// credential (credentials.Claims.SFU): the SFU's media addresses and
	// ports. Empty: such allocations reach nothing. SetSFUPeers replaces
	// it at run time.
	SFUPeers []PeerRange

	// NoFastPath leaves every datagram to pion, bound channels included
	// (fastpath.go). For comparisons and as a way out.
	NoFastPath bool

	// KernelPath: relay bound channels' ChannelData in the kernel (eBPF at
	// tc ingress, kernel.go): KernelPathOff, KernelPathAuto (on where it
	// loads, else user space, logged once) or KernelPathRequired (New
	// fails without it). Default: off.
	KernelPath string

	// KernelPathMode: the kernel path's hook per interface (kernel.go):
	// KernelModeAuto ("": native XDP where the driver has it and the
	// interface forwards, veth excepted; tc elsewhere), KernelModeXDP
	// (native XDP wherever the driver takes it, veth included) or
	// KernelModeTC (tc only).
	KernelPathMode string
	// kernelLegacyTC: the tc hook through a clsact qdisc and a cls_bpf
	// filter even where tcx exists (tests of the fallback for kernels
	// before 6.6).
	kernelLegacyTC bool
	// UDPGRO: coalesced receives (UDP_GRO) on the UDP listener and relay
	// sockets: UDPGROOn, UDPGROOff, or UDPGROAuto (on unless KernelPath is
	// auto or required: the kernel path leaves a coalesced packet to user
	// space). Default (""): off — measured, GRO saved no CPU per message
	// (bench/README.md).
	UDPGRO string

	// Revoked are calls revoked before this server started (kept by the
	// caller across restarts); they are refused from the first request.
	Revoked []Revocation

	Logger     zerolog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time // Default: time.Now

	// permissionTimeout is pion's permission lifetime; 0 leaves pion's
	// default (5 minutes, RFC 8656 §9). Tests shorten it.
	permissionTimeout time.Duration
	// tlsListeners are the TLS listeners' addresses, to tell a TLS client
	// from a TCP one (pion's events name the listener's address only).
	tlsListeners map[string]bool
}

// DefaultRateInterval is Config.RateInterval's default.
const DefaultRateInterval = 2 * time.Second

// Revocation refuses a call's credentials until Until (when they would have
// expired anyway).
type Revocation struct {
	CallID string
	Until  time.Time
}

// Listeners are the sockets the relay serves; bind them first (ListenUDP,
// ListenTCP, ListenTLS). The server owns them from New on.
type Listeners struct {
	UDP []net.PacketConn
	TCP []net.Listener // TURN over TCP
	TLS []net.Listener // TCP listeners for TURN over TLS; New wraps them with TLSConfig
	// TLSDone are listeners of TURN over TLS whose handshake the caller
	// did (the shared port, internal/portmux); New does not wrap them.
	TLSDone []net.Listener
	// TLSConfig serves the TLS listeners; use GetCertificate to reload
	// certificates without a restart.
	TLSConfig *tls.Config
}

// Server is a running TURN relay.
type Server struct {
	cfg     Config
	log     zerolog.Logger
	authLog zerolog.Logger
	now     func() time.Time
	keyring func() *credentials.Keyring
	policy  atomic.Pointer[Policy] // swapped whole by SetPolicy
	hosts   *hostAddrs             // the host's addresses, tracked for the policy
	reg     *registry
	m       *metrics
	turn    *turn.Server

	// errLim and bindLim are the UDP listeners' reflection limits
	// (Config.ErrorRate, BindingRate), shared by all of them.
	errLim, bindLim *sourceLimiter

	connLimits *connLimits // TCP/TLS client connections, shared by all those listeners
	dials      *dialLimits // RFC 6062 Connect dials in flight (connect.go)
	bindKeys   channelBindKeys

	scopeState // scoped (SFU) allocations: scope.go

	// ctx ends with Close; it bounds RFC 6062 Connect dials.
	ctx    context.Context
	cancel context.CancelFunc

	// testHookTrack, if set, runs when an allocation's socket is bound and
	// before the allocation is published (tests stop it there).
	testHookTrack atomic.Pointer[func(relay net.Addr)]

	// relays are the live UDP relay sockets by port, for the channel fast
	// path to find an allocation's socket from pion's Allocate answer.
	relays sync.Map // relayPort → *relayPacketConn
	// tlsClients are the connected clients of TLSDone listeners
	// (address → struct{}), for the allocation list's transport.
	tlsClients sync.Map
	fast       []*fastListener
	engine     *udpengine.Engine

	revokedMu sync.RWMutex
	revoked   map[string]time.Time // call ID → when the revocation may be forgotten

	// stopHostEvents ends the address-change subscription; watchers
	// counts the goroutines Close waits for.
	stopHostEvents func()
	watchers       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New starts serving the given listeners.
func New(cfg Config, ln Listeners) (*Server, error) {
	cfg, err := cfg.withDefaults(ln)
	if err != nil {
		return nil, err
	}
	s := newServer(cfg)
	bw, err := newLimiter(cfg.Bandwidth)
	if err != nil {
		return nil, err
	}
	bw.registerMetrics(s.m)
	s.reg.bw = bw
	if err := s.SetSFUPeers(cfg.SFUPeers); err != nil {
		return nil, err
	}
	if err := s.refreshHostAddrs(); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.engine, err = udpengine.New(udpengine.Config{Loops: cfg.EngineLoops, Batch: cfg.RecvBatch,
		Log: s.log, SendFailed: s.m.sendFailed, GRO: cfg.groOn()})
	if err != nil {
		s.cancel()
		return nil, err
	}
	gen := relayAllocator{s: s}
	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.allowQuota,
		LoggerFactory: newPionLoggerFactory(s.log),
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
			OnPermissionCreated: s.onPermission(1),
			OnPermissionDeleted: s.onPermission(-1),
		},
		PermissionTimeout: cfg.permissionTimeout,
	}
	if sc.PacketConnConfigs, err = s.serveUDP(ln.UDP, gen); err != nil {
		return nil, err
	}
	if len(ln.TLS) > 0 && ln.TLSConfig == nil {
		s.closeUDP(sc.PacketConnConfigs, nil)
		return nil, errors.New("turnserver: TLS listeners need a TLSConfig")
	}
	sc.ListenerConfigs = s.streamListeners(ln, gen)
	ts, err := turn.NewServer(sc)
	if err != nil {
		s.closeUDP(sc.PacketConnConfigs, nil)
		return nil, fmt.Errorf("turnserver: %w", err)
	}
	s.turn = ts
	s.startHostAddrWatch()
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		s.sampleRates(s.ctx)
	}()
	// Last: a failure closes the whole server.
	k, err := openKernelPath(s, cfg.KernelPath, cfg.KernelPathMode)
	if err != nil {
		return nil, errors.Join(err, s.Close())
	}
	if k != nil {
		s.reg.kernel.Store(k)
	}
	return s, nil
}

// withDefaults checks what New cannot do without and fills the zero values.
func (cfg Config) withDefaults(ln Listeners) (Config, error) {
	if cfg.Keyring == nil || cfg.Policy == nil {
		return cfg, errors.New("turnserver: Keyring and Policy are required")
	}
	if len(ln.UDP)+len(ln.TCP)+len(ln.TLS)+len(ln.TLSDone) == 0 {
		return cfg, errNoListeners
	}
	if cfg.MinPort == 0 || cfg.MinPort > cfg.MaxPort {
		return cfg, fmt.Errorf("turnserver: relay port range %d–%d: want 0 < MinPort <= MaxPort", cfg.MinPort, cfg.MaxPort)
	}
	if cfg.MaxAllocationDuration <= 0 {
		cfg.MaxAllocationDuration = 12 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.TCPMaxPerSource == 0 {
		cfg.TCPMaxPerSource = defaultTCPMaxPerSource
	}
	if cfg.TCPMaxTotal == 0 {
		cfg.TCPMaxTotal = defaultTCPMaxTotal
	}
	if cfg.TCPIdleTimeout == 0 {
		cfg.TCPIdleTimeout = defaultTCPIdleTimeout
	}
	if cfg.RecvBatch == 0 {
		cfg.RecvBatch = DefaultRecvBatch
	}
	if cfg.EngineLoops <= 0 {
		cfg.EngineLoops = defaultEngineLoops()
	}
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = ListHostAddrs
	}
	if cfg.HostAddrsInterval <= 0 {
		cfg.HostAddrsInterval = DefaultHostAddrsInterval
	}
	if cfg.RateInterval <= 0 {
		cfg.RateInterval = DefaultRateInterval
	}
	for i, l := range ln.TLS {
		if i == 0 {
			cfg.tlsListeners = make(map[string]bool)
		}
		cfg.tlsListeners[l.Addr().String()] = true
	}
	return cfg, nil
}

// newServer makes the server's state from a complete config; it opens
// nothing.
func newServer(cfg Config) *Server {
	log := cfg.Logger.With().Str("component", "turn").Logger()
	reg := newRegistry(cfg.Quotas)
	hosts := &hostAddrs{}
	s := &Server{
		cfg:        cfg,
		log:        log,
		authLog:    log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
		now:        cfg.Now,
		keyring:    cfg.Keyring,
		hosts:      hosts,
		reg:        reg,
		revoked:    make(map[string]time.Time),
		connLimits: newConnLimits(cfg.TCPMaxPerSource, cfg.TCPMaxTotal),
		dials:      newDialLimits(defaultConnectDialsPerAllocation, defaultConnectDialsTotal),
	}
	// The server's own addresses are peers only on the ports of its live
	// relay sockets.
	s.policy.Store(cfg.Policy.forServer(reg.liveRelayPort, hosts))
	now := cfg.Now()
	for _, r := range cfg.Revoked {
		if r.CallID != "" && r.Until.After(now) {
			s.revoked[r.CallID] = r.Until
		}
	}
	s.m = newMetrics(cfg.Registerer, reg,
		func() float64 { return float64(s.connLimits.count()) })
	return s
}

// serveUDP hands every UDP listener socket to the engine and returns what
// pion reads from each: the guard, over the reflection limits, over the
// fast path (or the engine listener alone). On failure every socket is
// closed.
func (s *Server) serveUDP(udp []net.PacketConn, gen relayAllocator) ([]turn.PacketConnConfig, error) {
	// Made even when off (PerSecond 0 passes everything): SetRateLimits
	// may turn them on while serving.
	errLim, bindLim := newSourceLimiter(s.cfg.ErrorRate), newSourceLimiter(s.cfg.BindingRate)
	s.errLim, s.bindLim = errLim, bindLim
	var out []turn.PacketConnConfig
	for i, raw := range udp {
		sock, err := udpengine.Adopt(raw)
		if err != nil {
			s.closeUDP(out, udp[i:])
			return nil, err
		}
		el := newEngineListener(s.m, sock)
		var pc net.PacketConn = el
		var h udpengine.Handler = el
		if !s.cfg.NoFastPath {
			fl := newFastListener(el, s)
			s.fast = append(s.fast, fl)
			pc, h = fl, fl
		}
		// Served from here on: the listener is complete.
		if err := s.engine.AddTo(i, sock, h); err != nil {
			_ = el.Close()
			s.closeUDP(out, udp[i+1:])
			return nil, err
		}
		pc = &reflectionLimitedConn{PacketConn: pc, errors: errLim, bindings: bindLim,
			errorsDropped: s.m.errorsDropped, bindingsDropped: s.m.bindingsDropped}
		pc = &udpGuard{PacketConn: pc, s: s, ln: i} // outermost: pion reads this one (guard.go)
		out = append(out, turn.PacketConnConfig{
			PacketConn: pc, RelayAddressGenerator: gen, PermissionHandler: s.scopedPermission(i),
		})
	}
	return out, nil
}

// streamListeners wraps the TCP and TLS listeners for pion. Connections are
// tracked under the TLS layer, so Close can end them all (and a silent one
// is cut before its handshake); the guard sits above it, where it sees STUN
// messages (guard.go).
func (s *Server) streamListeners(ln Listeners, gen relayAllocator) []turn.ListenerConfig {
	// Stream listeners are numbered after each other (TCP, then TLS): a
	// scoped client is known by listener and address (scope.go).
	var out []turn.ListenerConfig
	for i, l := range ln.TCP {
		out = append(out, turn.ListenerConfig{
			Listener: &streamGuard{Listener: s.trackConns(l), s: s, ln: i}, RelayAddressGenerator: gen,
			PermissionHandler: s.scopedPermission(i),
		})
	}
	for i, l := range ln.TLS {
		n := len(ln.TCP) + i
		out = append(out, turn.ListenerConfig{
			Listener:              &streamGuard{Listener: tls.NewListener(s.trackConns(l), ln.TLSConfig), s: s, ln: n},
			RelayAddressGenerator: gen, PermissionHandler: s.scopedPermission(n),
		})
	}
	for i, l := range ln.TLSDone {
		n := len(ln.TCP) + len(ln.TLS) + i
		out = append(out, turn.ListenerConfig{
			Listener:              &streamGuard{Listener: s.trackConns(&tlsDoneListener{Listener: l, s: s}), s: s, ln: n},
			RelayAddressGenerator: gen, PermissionHandler: s.scopedPermission(n),
		})
	}
	return out
}

// tlsDoneListener notes its clients' addresses while they are connected:
// the shared port's TLS and TCP clients have the same listener address, so
// the allocation list tells "tls" from "tcp" by the client's address.
type tlsDoneListener struct {
	net.Listener
	s *Server
}

func (l *tlsDoneListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	key := c.RemoteAddr().String()
	l.s.tlsClients.Store(key, struct{}{})
	return &tlsDoneConn{Conn: c, forget: func() { l.s.tlsClients.Delete(key) }}, nil
}

type tlsDoneConn struct {
	net.Conn
	once   sync.Once
	forget func()
}

func (c *tlsDoneConn) Close() error {
	c.once.Do(c.forget)
	return c.Conn.Close()
}

// startHostAddrWatch starts tracking the host's addresses: subscribed to
// the kernel's address events where there are any (in the namespace of the
// thread calling New, where its sockets were made), re-read once more now
// so nothing added since New's first read is missed, then on every event
// and every HostAddrsInterval until Close.
func (s *Server) startHostAddrWatch() {
	changed, stop, err := addrEvents()
	if err != nil {
		s.log.Warn().Err(err).Dur("interval", s.cfg.HostAddrsInterval).
			Msg("no address-change events; the host's addresses are re-read periodically only")
		changed, stop = nil, func() {}
	}
	s.stopHostEvents = stop
	if err := s.refreshHostAddrs(); err != nil {
		s.log.Warn().Err(err).Msg("re-reading the host's addresses; keeping the previous set")
	}
	s.watchers.Add(1)
	go func() {
		defer s.watchers.Done()
		s.watchHostAddrs(s.ctx, changed, s.cfg.HostAddrsInterval)
	}()
}

// closeUDP undoes a failed New: it closes the UDP listeners taken over so
// far and those not reached yet, and stops the engine.
func (s *Server) closeUDP(taken []turn.PacketConnConfig, rest []net.PacketConn) {
	for _, c := range taken {
		_ = c.PacketConn.Close()
	}
	for _, c := range rest {
		_ = c.Close()
	}
	s.engine.Close()
	s.cancel()
}

// Run blocks until ctx is done, then closes the server.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	return s.Close()
}

// closeDrainTimeout bounds how long Close waits for allocations that were
// being set up when it started: each is closed as soon as its bind returns.
const closeDrainTimeout = 5 * time.Second

// Close stops the listeners, closes every allocation, and waits (bounded)
// until none is left. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		// Closing the registry first refuses allocations from now on, and
		// makes one that is still binding its socket close it itself.
		allocs := s.reg.close()
		s.cancel() // pending RFC 6062 Connect dials, the address watcher
		s.stopHostEvents()
		s.watchers.Wait()
		s.closeErr = s.turn.Close()
		// pion closes allocations of TCP clients with their connections;
		// UDP allocations' relay sockets are closed here.
		for _, a := range allocs {
			if err := a.closer.Close(); err != nil {
				s.closeErr = errors.Join(s.closeErr, err)
			}
		}
		t := time.NewTimer(closeDrainTimeout)
		defer t.Stop()
		select {
		case <-s.reg.drained:
		case <-t.C:
			s.closeErr = errors.Join(s.closeErr, fmt.Errorf("turnserver: close: %d allocations still open after %v",
				s.reg.count(), closeDrainTimeout))
		}
		s.engine.Close()
		if k := s.reg.kernel.Load(); k != nil {
			s.closeErr = errors.Join(s.closeErr, k.close())
		}
	})
	return s.closeErr
}

// AllocationCount returns the number of live allocations, for draining.
func (s *Server) AllocationCount() int { return s.reg.count() }

// Allocations lists the live allocations.
func (s *Server) Allocations() []AllocationInfo { return s.reg.list(Filter{}, s.now()) }

// ListAllocations lists the live allocations f selects.
func (s *Server) ListAllocations(f Filter) []AllocationInfo { return s.reg.list(f, s.now()) }

// KillAllocation closes the allocation named id (AllocationInfo.ID) and
// reports whether there was one. Closing the relay socket ends the
// allocation in pion too: the client's next Refresh fails (437) and its
// data goes nowhere. The credential stays valid: the client may allocate
// again (RevokeCall is what refuses a call's credentials).
func (s *Server) KillAllocation(id string) bool {
	a := s.reg.byKeyOf(id)
	if a == nil {
		return false
	}
	s.kill(a)
	return true
}

// KillAllocations closes every allocation f selects and returns how many.
// An empty filter selects none.
func (s *Server) KillAllocations(f Filter) int {
	allocs := s.reg.matching(f)
	for _, a := range allocs {
		s.kill(a)
	}
	return len(allocs)
}

func (s *Server) kill(a *allocation) {
	s.log.Info().Str("user", a.user).Str("call_id", a.callID).Stringer("relay", a.relay).
		Msg("allocation killed through the admin API")
	if err := a.closer.Close(); err != nil {
		s.log.Warn().Err(err).Msg("closing a killed allocation")
	}
	s.m.killed.Inc()
}

// sampleRates computes the allocations' bit rates every RateInterval until
// ctx ends.
func (s *Server) sampleRates(ctx context.Context) {
	t := time.NewTicker(s.cfg.RateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.reg.sampleRates(now)
		}
	}
}

// RevokeCall refuses the call's credentials from now until `until` (when
// they would have expired anyway) and closes its live allocations. It returns
// how many allocations it closed.
func (s *Server) RevokeCall(callID string, until time.Time) int {
	s.revokedMu.Lock()
	s.revoked[callID] = until
	now := s.now()
	for id, t := range s.revoked { // forget revocations whose credentials are dead anyway
		if !t.After(now) && id != callID {
			delete(s.revoked, id)
		}
	}
	s.revokedMu.Unlock()

	allocs := s.reg.ofCall(callID)
	for _, a := range allocs {
		if err := a.closer.Close(); err != nil {
			s.log.Warn().Err(err).Str("call_id", callID).Msg("closing revoked allocation")
		}
	}
	s.m.revokedClosed.Add(float64(len(allocs)))
	return len(allocs)
}

func (s *Server) isRevoked(callID string) bool {
	s.revokedMu.RLock()
	_, ok := s.revoked[callID]
	s.revokedMu.RUnlock()
	return ok
}

// clientTransport names the transport of the client's connection. pion
// reports "UDP" for every allocation, so it is told from the listener's
// address: TCP and TLS listeners have TCP addresses.
func clientTransport(listener net.Addr) string {
	if _, ok := listener.(*net.TCPAddr); ok {
		return "tcp"
	}
	return "udp"
}

func (s *Server) onAllocationCreated(src, dst net.Addr, _, username, _ string, relay net.Addr, _ int) {
	transport := clientTransport(dst)
	s.m.allocationsTotal.WithLabelValues(transport).Inc()
	if port, ok := relayPortOf(relay); ok {
		shown := transport
		if _, ok := s.tlsClients.Load(src.String()); transport == "tcp" && (s.cfg.tlsListeners[dst.String()] || ok) {
			shown = "tls"
		}
		s.reg.noteClient(port, src.String(), shown)
	}
	ev := s.log.Info().Str("transport", transport).Stringer("client", src).Stringer("relay", relay)
	if c, err := credentials.ParseUsername(username); err == nil {
		ev = ev.Str("user", c.User).Str("call_id", c.CallID)
		if c.SFU {
			ev = ev.Bool("sfu_scoped", true)
		}
	}
	ev.Msg("allocation created")
}

func (s *Server) onAllocationDeleted(src, dst net.Addr, _, username, _ string) {
	ev := s.log.Info().Str("transport", clientTransport(dst)).Stringer("client", src)
	if c, err := credentials.ParseUsername(username); err == nil {
		ev = ev.Str("user", c.User).Str("call_id", c.CallID)
	}
	ev.Msg("allocation deleted")
}
