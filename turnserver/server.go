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
	"time"

	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
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

	// ErrorRate limits STUN error responses per source on UDP (the
	// reflection guard). Zero PerSecond disables it.
	ErrorRate ErrorRate

	// MaxAllocationDuration caps an allocation's life, however often it is
	// refreshed. Default: 12h.
	MaxAllocationDuration time.Duration

	Logger     zerolog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time // Default: time.Now
}

// Listeners are the sockets the relay serves; bind them first (ListenUDP,
// ListenTCP, ListenTLS). The server owns them from New on.
type Listeners struct {
	UDP []net.PacketConn
	TCP []net.Listener // TURN over TCP
	TLS []net.Listener // TCP listeners for TURN over TLS; New wraps them with TLSConfig
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
	policy  *Policy
	reg     *registry
	m       *metrics
	turn    *turn.Server

	revokedMu sync.RWMutex
	revoked   map[string]time.Time // call ID → when the revocation may be forgotten

	closeOnce sync.Once
	closeErr  error
}

// New starts serving the given listeners.
func New(cfg Config, ln Listeners) (*Server, error) {
	if cfg.Keyring == nil || cfg.Policy == nil {
		return nil, errors.New("turnserver: Keyring and Policy are required")
	}
	if len(ln.UDP)+len(ln.TCP)+len(ln.TLS) == 0 {
		return nil, errNoListeners
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
	log := cfg.Logger.With().Str("component", "turn").Logger()
	s := &Server{
		cfg:     cfg,
		log:     log,
		authLog: log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second}),
		now:     cfg.Now,
		keyring: cfg.Keyring,
		policy:  cfg.Policy,
		reg:     newRegistry(cfg.Quotas),
		revoked: make(map[string]time.Time),
	}
	s.m = newMetrics(cfg.Registerer, func() float64 { return float64(s.reg.count()) })

	gen := relayAllocator{s: s}
	sc := turn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.allowQuota,
		LoggerFactory: newPionLoggerFactory(log),
		EventHandler: turn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
		},
	}
	var limiter *sourceLimiter
	if cfg.ErrorRate.PerSecond > 0 {
		limiter = newSourceLimiter(cfg.ErrorRate)
	}
	for _, pc := range ln.UDP {
		if limiter != nil {
			pc = &errorLimitedConn{PacketConn: pc, lim: limiter, dropped: s.m.errorsDropped}
		}
		sc.PacketConnConfigs = append(sc.PacketConnConfigs, turn.PacketConnConfig{
			PacketConn: pc, RelayAddressGenerator: gen, PermissionHandler: s.allowPeer,
		})
	}
	if len(ln.TLS) > 0 && ln.TLSConfig == nil {
		return nil, errors.New("turnserver: TLS listeners need a TLSConfig")
	}
	// Connections are tracked under the TLS layer, so pion still sees
	// *tls.Conn (it bounds the handshake time) and Close can end them all.
	for _, l := range ln.TCP {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: trackConns(l), RelayAddressGenerator: gen, PermissionHandler: s.allowPeer,
		})
	}
	for _, l := range ln.TLS {
		sc.ListenerConfigs = append(sc.ListenerConfigs, turn.ListenerConfig{
			Listener: tls.NewListener(trackConns(l), ln.TLSConfig), RelayAddressGenerator: gen, PermissionHandler: s.allowPeer,
		})
	}
	ts, err := turn.NewServer(sc)
	if err != nil {
		return nil, fmt.Errorf("turnserver: %w", err)
	}
	s.turn = ts
	return s, nil
}

// Run blocks until ctx is done, then closes the server.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	return s.Close()
}

// Close stops the listeners and closes every allocation. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.turn.Close()
		// pion closes allocations of TCP clients with their connections;
		// UDP allocations' relay sockets are closed here.
		for _, a := range s.reg.all() {
			if err := a.closer.Close(); err != nil {
				s.closeErr = errors.Join(s.closeErr, err)
			}
		}
	})
	return s.closeErr
}

// AllocationCount returns the number of live allocations, for draining.
func (s *Server) AllocationCount() int { return s.reg.count() }

// Allocations lists the live allocations.
func (s *Server) Allocations() []AllocationInfo { return s.reg.list() }

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
	ev := s.log.Info().Str("transport", transport).Stringer("client", src).Stringer("relay", relay)
	if c, err := credentials.ParseUsername(username); err == nil {
		ev = ev.Str("user", c.User).Str("call_id", c.CallID)
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
