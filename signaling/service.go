package signaling

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// ServiceConfig configures the calls Service.
type ServiceConfig struct {
	Store     Store
	Relay     Relay     // nil: no relay to revoke on (tests)
	Publisher Publisher // nil: events go nowhere

	// Matrix bridge parts; nil when Matrix is off. Outbound's entries are
	// written with each transition; Rooms gives conversations a room;
	// Invites lets Initiate report the invite's event ID, waiting at most
	// InviteWait (0 = do not wait).
	Outbound   Outbound
	Rooms      RoomCreator
	RoomIndex  RoomIndex // finds the conversation of an inbound Matrix event's room
	Invites    InviteWaiter
	InviteWait time.Duration

	// InviteLifetime is the default invite lifetime; a client may ask for
	// any lifetime_ms in [5 s, MaxInviteLifetime]. Defaults: 60 s, 5 min.
	InviteLifetime    time.Duration
	MaxInviteLifetime time.Duration
	// CredentialTTL is how long a call's TURN credentials live, so how
	// long a revocation must be kept after the call ends. Default: 24 h.
	CredentialTTL time.Duration
	// InitiateRate and InitiateBurst limit call initiations per user.
	// Defaults: 0.5/s, burst 5.
	InitiateRate  float64
	InitiateBurst int
	// MaxCallDuration ends an answered call this long after its answer
	// (its clients may have vanished without hanging up), which revokes
	// its TURN credentials. Default: 12 h.
	MaxCallDuration time.Duration
	// SweepInterval is how often Run looks for answered calls past
	// MaxCallDuration and for ended calls past CallRetention. Default:
	// sweepInterval (5 min).
	SweepInterval time.Duration
	// CallRetention is how long an ended call stays readable (GET
	// /calls/{id}, listings) before the sweep deletes it. Its revocation
	// is kept apart, until its credentials would have expired. Default:
	// 72 h.
	CallRetention time.Duration

	// Which protocol conversations' calls use (callprotocol.go):
	// CallProtocol is matrix.call_protocol, the default of a conversation
	// that does not set its own ("" = legacy); RTCRooms is the bridge's
	// MatrixRTC membership state ("auto" reads it; nil: no MatrixRTC
	// call is ever seen, so auto means legacy).
	CallProtocol string
	RTCRooms     RTCRooms

	// RTC is the MatrixRTC gateway (rtccalls.go): a call in a conversation
	// whose calls resolve to MatrixRTC is placed through it. nil: such a
	// call is refused (409 matrixrtc_unsupported) while Matrix is on.
	RTC RTCCalls

	Logger zerolog.Logger
	Now    func() time.Time // Default: time.Now
	NewID  func() string    // Default: a random UUID
}

const minInviteLifetime = 5 * time.Second

// Service runs calls: it validates requests, applies transitions through
// the store (one transaction each), revokes the relay credentials of calls
// that end, expires unanswered invites and publishes domain events. Its
// parts: the transitions (transitions.go, inbound.go for those from Matrix)
// and how they commit (commit.go); conversations (conversations.go); reads
// (reads.go); invite expiry (expiry.go) and the sweeps (sweep.go), which
// Run drives; per-user rate limits (limits.go).
type Service struct {
	cfg ServiceConfig
	log zerolog.Logger

	initiates *userLimits // call initiations
	signals   *userLimits // candidates and renegotiations

	timers inviteTimers   // invite expiry
	wg     sync.WaitGroup // the sweeper

	convLocks keyLocks // by conversation ID: PutConversation and RoomJoined
	idemLocks keyLocks // by user and idempotency key (callsidempotency.go)

	// created is when this Service was made: bridged calls created up to
	// then are a previous run's (endStaleRTC); later ones are this run's,
	// even when they come before Run has looked.
	created time.Time
}

// NewService checks the configuration and applies defaults.
func NewService(cfg ServiceConfig) (*Service, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Service{
		cfg:       cfg,
		log:       cfg.Logger.With().Str("component", "calls").Logger(),
		initiates: newUserLimits(rate.Limit(cfg.InitiateRate), cfg.InitiateBurst, cfg.Now),
		signals:   newUserLimits(signalRate, signalBurst, cfg.Now),
		created:   cfg.Now(),
	}, nil
}

// withDefaults checks cfg and fills in the defaults its fields document.
func (cfg ServiceConfig) withDefaults() (ServiceConfig, error) {
	if cfg.Store == nil {
		return cfg, errors.New("signaling: Store is required")
	}
	setDefault(&cfg.InviteLifetime, 60*time.Second)
	setDefault(&cfg.MaxInviteLifetime, 5*time.Minute)
	setDefault(&cfg.CredentialTTL, 24*time.Hour)
	setDefault(&cfg.InitiateRate, 0.5)
	setDefault(&cfg.InitiateBurst, 5)
	setDefault(&cfg.MaxCallDuration, 12*time.Hour)
	setDefault(&cfg.SweepInterval, sweepInterval)
	setDefault(&cfg.CallRetention, 72*time.Hour)
	if cfg.MaxCallDuration < 0 || cfg.SweepInterval < 0 || cfg.CallRetention < 0 {
		return cfg, errors.New("signaling: MaxCallDuration, SweepInterval and CallRetention must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = func() string { return uuid.NewString() }
	}
	setDefault(&cfg.CallProtocol, CallProtocolLegacy)
	if !ValidCallProtocol(cfg.CallProtocol) {
		return cfg, fmt.Errorf("signaling: call protocol %q is not one of legacy, matrixrtc, auto", cfg.CallProtocol)
	}
	if cfg.InviteLifetime < minInviteLifetime || cfg.InviteLifetime > cfg.MaxInviteLifetime {
		return cfg, fmt.Errorf("signaling: invite lifetime %v outside [%v, %v]", cfg.InviteLifetime, minInviteLifetime, cfg.MaxInviteLifetime)
	}
	return cfg, nil
}

// setDefault sets *v to def if it is zero.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Run re-arms the expiry of invites that were ringing when icebox stopped
// (expiring at once those whose lifetime passed meanwhile), sweeps answered
// calls past MaxCallDuration at once and then every SweepInterval, then
// waits for ctx and stops the timers and the sweeper. It returns nil when
// ctx is done, also when that happens while it loads the ringing calls.
func (s *Service) Run(ctx context.Context) error {
	defer s.stop()
	ringing, err := s.cfg.Store.RingingCalls(ctx)
	// A database that is away for a moment (PostgreSQL restarting) must
	// not stop the node: relaying goes on without it. Try again, backing
	// off to 5 s, until it answers or the node stops.
	for wait := 100 * time.Millisecond; errors.Is(err, ErrStoreUnavailable) && ctx.Err() == nil; wait = min(2*wait, 5*time.Second) {
		s.log.Warn().Err(err).Dur("retry_in", wait).Msg("cannot load the ringing calls: the store is unavailable")
		select {
		case <-ctx.Done():
		case <-time.After(wait):
			ringing, err = s.cfg.Store.RingingCalls(ctx)
		}
	}
	if err != nil {
		if ctx.Err() != nil { // stopped while starting: err is that stop
			return nil
		}
		return fmt.Errorf("signaling: load ringing calls: %w", err)
	}
	// Bridged calls do not survive their process (their legs lived in
	// it): ended before the ringing ones are re-armed.
	if err := s.endStaleRTC(ctx); err != nil && ctx.Err() == nil {
		s.log.Error().Err(err).Msg("ending the MatrixRTC calls of the previous run")
	}
	for _, c := range ringing {
		if !c.Bridged() {
			s.armExpiry(c)
		}
	}
	s.wg.Go(func() { s.sweepLoop(ctx) })
	<-ctx.Done()
	return nil
}

// stop stops the expiry timers (those armed by transitions before Run
// too) and waits for the sweeper and the expiries in flight.
func (s *Service) stop() {
	s.timers.close()
	s.wg.Wait()
	s.timers.wait()
}

// ActiveTimers returns how many invites are waiting to expire (tests, metrics).
func (s *Service) ActiveTimers() int { return s.timers.count() }
