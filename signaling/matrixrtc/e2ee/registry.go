package e2ee

import (
	"bytes"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// Element Call's timings (matrix-js-sdk 43 RTCEncryptionManager.join's
// defaults, which Element Call does not override).
const (
	// DefaultUseKeyDelay: a rotated key is used this long after it was sent.
	DefaultUseKeyDelay = time.Second
	// DefaultGracePeriod: a key younger than this is shared with a joining
	// member instead of being rotated.
	DefaultGracePeriod = 10 * time.Second
)

// Bounds of the keys held before their Session opens or their device
// joins: enough for a call's worth of members sending a key or two while
// icebox's leg connects, not a place to store keys.
const (
	DefaultHoldFor  = 30 * time.Second
	DefaultHoldKeys = 256
	// DefaultSendTimeout bounds one send of icebox's key (claiming one-time
	// keys and the to-device request).
	DefaultSendTimeout = 30 * time.Second
)

// Config configures a Registry. The zero value takes every default.
type Config struct {
	// Logger is the parent logger; the registry adds component=e2ee.
	Logger zerolog.Logger
	// Registerer takes the metrics. Default: nil, not registered.
	Registerer prometheus.Registerer
	// UseKeyDelay is how long after sending a rotated key a Session starts
	// encrypting with it. Default: DefaultUseKeyDelay.
	UseKeyDelay time.Duration
	// GracePeriod: a member joining while icebox's key is younger gets that
	// key; later, the key is rotated. Default: DefaultGracePeriod.
	GracePeriod time.Duration
	// HoldFor and HoldKeys bound the keys held before their Session opens
	// (per registry) or their device joins (per Session). Defaults:
	// DefaultHoldFor, DefaultHoldKeys.
	HoldFor  time.Duration
	HoldKeys int
	// SendTimeout bounds each send of icebox's key when the caller's
	// context has no earlier deadline. Default: DefaultSendTimeout.
	SendTimeout time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// Registry routes members' media keys (it is the Matrix bridge's
// RTCKeySink) to the open Sessions of their rooms, and holds those that
// come before their room's Session opens.
type Registry struct {
	sender  Sender
	cfg     Config
	log     zerolog.Logger
	metrics *metrics

	mu       sync.Mutex
	sessions map[string]map[*Session]struct{}
	held     []heldKey // oldest first
}

// heldKey is a key kept until it can be used.
type heldKey struct {
	KeyEvent
	at time.Time
}

// NewRegistry returns a registry sending icebox's keys with sender (the
// Matrix bridge). Its metrics are registered with cfg.Registerer, so one
// Registry per registry.
func NewRegistry(sender Sender, cfg Config) *Registry {
	if cfg.UseKeyDelay <= 0 {
		cfg.UseKeyDelay = DefaultUseKeyDelay
	}
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = DefaultGracePeriod
	}
	if cfg.HoldFor <= 0 {
		cfg.HoldFor = DefaultHoldFor
	}
	if cfg.HoldKeys <= 0 {
		cfg.HoldKeys = DefaultHoldKeys
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = DefaultSendTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Registry{
		sender: sender, cfg: cfg, log: cfg.Logger.With().Str("component", "e2ee").Logger(),
		metrics: newMetrics(cfg.Registerer), sessions: make(map[string]map[*Session]struct{}),
	}
}

// RTCKey takes a member's key: to the room's open Sessions, or held until
// one opens. It does not block (the Matrix bridge calls it from its sync).
func (r *Registry) RTCKey(e KeyEvent) {
	e.Key = bytes.Clone(e.Key)
	r.mu.Lock()
	r.expireLocked()
	open := make([]*Session, 0, len(r.sessions[e.RoomID]))
	for s := range r.sessions[e.RoomID] {
		open = append(open, s)
	}
	if len(open) == 0 {
		if len(r.held) >= r.cfg.HoldKeys {
			r.held = r.held[1:]
			r.metrics.received.WithLabelValues(recvEvicted).Inc()
		}
		r.held = append(r.held, heldKey{KeyEvent: e, at: r.cfg.Now()})
		r.mu.Unlock()
		r.metrics.received.WithLabelValues(recvHeld).Inc()
		r.log.Debug().Str("room_id", e.RoomID).Str("identity", e.Device.Identity()).Int("index", e.Index).
			Msg("media key held until the room's session opens")
		return
	}
	r.mu.Unlock()
	for _, s := range open {
		s.addKey(e)
	}
}

// expireLocked drops the held keys older than HoldFor.
func (r *Registry) expireLocked() {
	cut := r.cfg.Now().Add(-r.cfg.HoldFor)
	n := 0
	for n < len(r.held) && r.held[n].at.Before(cut) {
		n++
	}
	if n > 0 {
		clear(r.held[:n])
		r.held = r.held[n:]
		r.metrics.received.WithLabelValues(recvExpired).Add(float64(n))
	}
}

// Open opens the Session of icebox's device self in roomID, and hands it
// the keys held for the room. Close it when the leg ends.
func (r *Registry) Open(roomID string, self membership.Device) *Session {
	s := newSession(r, roomID, self)
	r.mu.Lock()
	r.expireLocked()
	if r.sessions[roomID] == nil {
		r.sessions[roomID] = make(map[*Session]struct{})
	}
	r.sessions[roomID][s] = struct{}{}
	var mine []KeyEvent
	kept := r.held[:0]
	for _, h := range r.held {
		if h.RoomID == roomID {
			mine = append(mine, h.KeyEvent)
			continue
		}
		kept = append(kept, h)
	}
	clear(r.held[len(kept):])
	r.held = kept
	r.mu.Unlock()
	for _, e := range mine {
		s.addKey(e)
	}
	return s
}

// remove forgets a closed Session.
func (r *Registry) remove(s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.sessions[s.room], s)
	if len(r.sessions[s.room]) == 0 {
		delete(r.sessions, s.room)
	}
}

// heldCount is the number of keys held for unopened Sessions (tests).
func (r *Registry) heldCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}
