package livekitproc

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"
)

// RecoveryConfig says how the rooms of a livekit-server that stopped are
// recreated on the next one.
type RecoveryConfig struct {
	// Create creates one room (authservice's RoomCreator, so the room gets
	// the settings the authorization service gives it). Required.
	Create func(ctx context.Context, room string) error
	// MaxRooms bounds the rooms recreated after one restart (those with
	// the most participants first); the rest are counted as skipped.
	// Default: 1000.
	MaxRooms int
	// Timeout bounds one recreation; rooms not created by then count as
	// failed. Default: 30s.
	Timeout time.Duration

	Registerer prometheus.Registerer // nil = metrics not registered
	Logger     zerolog.Logger
}

// Recovery recreates the rooms a livekit-server had after the supervisor
// started a new one. livekit-server keeps its rooms in memory and runs
// with room.auto_create off (only the authorization service creates rooms,
// for full-access homeservers), so without this a client's own reconnect
// (resume, then rejoin with the JWT it has) finds no room and fails, and
// every client must fetch a new JWT. Rooms nobody rejoins close by their
// empty_timeout as any other.
type Recovery struct {
	cfg    RecoveryConfig
	log    zerolog.Logger
	result *prometheus.CounterVec

	mu      sync.Mutex
	pending []string // rooms to recreate on the next ready child, ≤ MaxRooms
}

// Results of one room's recreation (the counter's labels).
const (
	recreated = "recreated"
	failed    = "failed"
	skipped   = "skipped" // over MaxRooms
)

// NewRecovery checks cfg.
func NewRecovery(cfg RecoveryConfig) (*Recovery, error) {
	if cfg.Create == nil {
		return nil, errors.New("livekitproc: recovery: Create is required")
	}
	if cfg.MaxRooms <= 0 {
		cfg.MaxRooms = 1000
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	r := &Recovery{
		cfg: cfg,
		log: cfg.Logger.With().Str("component", "livekit").Logger(),
		result: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_livekit_rooms_recreated_total",
			Help: "Rooms of a managed livekit-server that stopped, recreated on the one icebox started next, by result (recreated, failed, skipped: over the bound).",
		}, []string{"result"}),
	}
	for _, l := range []string{recreated, failed, skipped} {
		r.result.WithLabelValues(l)
	}
	return r, nil
}

// Remember adds rooms (in order of preference) to those to recreate once
// the next child is ready: OnStart calls it with Webhook.Reset's list.
// Rooms past MaxRooms are dropped and counted as skipped.
func (r *Recovery) Remember(rooms []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	drop := 0
	for _, room := range rooms {
		switch {
		case slices.Contains(r.pending, room):
		case len(r.pending) >= r.cfg.MaxRooms:
			drop++
		default:
			r.pending = append(r.pending, room)
		}
	}
	if drop > 0 {
		r.result.WithLabelValues(skipped).Add(float64(drop))
		r.log.Warn().Int("skipped", drop).Int("max_rooms", r.cfg.MaxRooms).Msg("too many livekit rooms to recreate; skipping the emptiest")
	}
}

// Recreate creates the remembered rooms, one after another, within
// Timeout: the supervisor's OnReady calls it for each new child. If ctx
// ends first (that child stopped too), the rooms not yet created wait for
// the next child.
func (r *Recovery) Recreate(ctx context.Context) {
	r.mu.Lock()
	rooms := r.pending
	r.pending = nil
	r.mu.Unlock()
	if len(rooms) == 0 {
		return
	}
	started := time.Now()
	tctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	ok, bad := 0, 0
	for i, room := range rooms {
		if ctx.Err() != nil { // the child is gone: its successor takes the rest
			r.Remember(rooms[i:])
			break
		}
		if tctx.Err() != nil {
			bad += len(rooms) - i
			r.result.WithLabelValues(failed).Add(float64(len(rooms) - i))
			r.log.Warn().Int("rooms", len(rooms)-i).Dur("timeout", r.cfg.Timeout).Msg("livekit rooms not recreated in time")
			break
		}
		if err := r.cfg.Create(tctx, room); err != nil {
			if ctx.Err() != nil {
				r.Remember(rooms[i:])
				break
			}
			bad++
			r.result.WithLabelValues(failed).Inc()
			r.log.Warn().Str("room", room).Str("error", err.Error()).Msg("recreating a livekit room failed")
			continue
		}
		ok++
		r.result.WithLabelValues(recreated).Inc()
	}
	r.log.Info().Int("recreated", ok).Int("failed", bad).Int("rooms", len(rooms)).Dur("took", time.Since(started)).
		Msg("livekit rooms of the stopped livekit-server recreated")
}
