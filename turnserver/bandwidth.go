package turnserver

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bandwidth limits what allocations relay, in bits per second of UDP
// payload, each direction (to the peers, from the peers) on its own, as
// coturn's max-bps does. Zero means unlimited. TCP allocations (RFC 6062)
// relay over connections pion splices itself and are not limited.
type Bandwidth struct {
	PerAllocation int64
	PerUser       int64 // all of a user's live allocations together; SetUserBandwidth overrides it per user
	Total         int64
	// Burst is how far ahead of its rate a bucket may run: a limit of R
	// lets R×Burst/8 bytes through at once after a quiet spell (a video
	// key frame). Default (0): DefaultBandwidthBurst.
	Burst time.Duration
}

// DefaultBandwidthBurst is Bandwidth.Burst's default.
const DefaultBandwidthBurst = 500 * time.Millisecond

// Directions of relayed traffic, the index of the per-direction buckets.
const (
	dirToPeer = iota
	dirFromPeer
	numDirs
)

// Bandwidth limit names, the "limit" label of
// icebox_turn_bandwidth_dropped_total.
const (
	limitAllocation = "allocation"
	limitUser       = "user"
	limitTotal      = "total"
)

var errNegativeBandwidth = errors.New("turnserver: bandwidth: a limit must be >= 0 bits per second")

// bucket is a token bucket on bytes in its GCRA form: tat ("theoretical
// arrival time", nanoseconds on the limiter's monotonic clock) is when the
// bytes admitted so far would have drained at the rate. A datagram passes
// when tat is at most burst ahead of now, and moves tat on by its size
// over the rate. One atomic word, no lock and no allocation per datagram.
type bucket struct {
	rate atomic.Int64 // bytes per second; 0: unlimited
	tat  atomic.Int64
}

// take admits n bytes at now if the bucket allows it, and returns what it
// charged (for refund when a later bucket refuses).
func (b *bucket) take(n int, now, burst int64) (ok bool, charged int64) {
	rate := b.rate.Load()
	if rate <= 0 {
		return true, 0
	}
	inc := int64(n) * int64(time.Second) / rate
	for {
		tat := b.tat.Load()
		if tat-now > burst {
			return false, 0
		}
		if b.tat.CompareAndSwap(tat, max(tat, now)+inc) {
			return true, inc
		}
	}
}

func (b *bucket) refund(charged int64) {
	if charged > 0 {
		b.tat.Add(-charged)
	}
}

// setBPS sets the rate from bits per second.
func (b *bucket) setBPS(bps int64) { b.rate.Store(bytesPerSecond(bps)) }

func bytesPerSecond(bps int64) int64 {
	if bps <= 0 {
		return 0
	}
	return max(bps/8, 1)
}

// userBuckets are one user's buckets, shared by their live allocations.
type userBuckets struct {
	dir  [numDirs]bucket
	refs int // live allocations, under limiter.mu
}

// limiter holds the bandwidth limits: the total buckets, the per-user
// buckets of the users with live allocations, and the per-user overrides.
type limiter struct {
	cfg   Bandwidth    // under mu
	base  time.Time    // the monotonic clock's zero
	burst atomic.Int64 // ns
	// on is set once any limit is or was configured: until then the
	// relay does not even read the clock per datagram.
	on    atomic.Bool
	total [numDirs]bucket

	mu        sync.Mutex
	users     map[string]*userBuckets
	overrides map[string]int64 // bits per second; 0: no per-user limit for this user

	// dropped[limit][dir]: resolved once, incremented on a drop.
	dropped [3][numDirs]prometheus.Counter
}

func (cfg Bandwidth) withDefaults() (Bandwidth, error) {
	if cfg.PerAllocation < 0 || cfg.PerUser < 0 || cfg.Total < 0 || cfg.Burst < 0 {
		return cfg, errNegativeBandwidth
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBandwidthBurst
	}
	return cfg, nil
}

func newLimiter(cfg Bandwidth) (*limiter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &limiter{cfg: cfg, base: time.Now(),
		users: make(map[string]*userBuckets), overrides: make(map[string]int64)}
	l.burst.Store(cfg.Burst.Nanoseconds())
	for d := range numDirs {
		l.total[d].setBPS(cfg.Total)
	}
	l.on.Store(cfg.PerAllocation > 0 || cfg.PerUser > 0 || cfg.Total > 0)
	return l, nil
}

// set replaces the configured limits (a reload): the total and the users
// without an override at once; live allocations are the caller's (they
// are the registry's).
func (l *limiter) set(cfg Bandwidth) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = cfg
	l.burst.Store(cfg.Burst.Nanoseconds())
	for d := range numDirs {
		l.total[d].setBPS(cfg.Total)
	}
	for user, u := range l.users {
		if _, ok := l.overrides[user]; !ok {
			for d := range numDirs {
				u.dir[d].setBPS(cfg.PerUser)
			}
		}
	}
	if cfg.PerAllocation > 0 || cfg.PerUser > 0 || cfg.Total > 0 {
		l.on.Store(true)
	}
}

func (l *limiter) registerMetrics(m *metrics) {
	for i, name := range []string{limitAllocation, limitUser, limitTotal} {
		for d, dir := range []string{"to_peer", "from_peer"} {
			l.dropped[i][d] = m.bandwidthDropped.WithLabelValues(name, dir)
		}
	}
}

// attach gives a new allocation its buckets (its own, and its user's).
func (l *limiter) attach(a *allocation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for d := range numDirs {
		a.bw[d].setBPS(l.cfg.PerAllocation)
	}
	u := l.users[a.user]
	if u == nil {
		u = &userBuckets{}
		bps, ok := l.overrides[a.user]
		if !ok {
			bps = l.cfg.PerUser
		}
		for d := range numDirs {
			u.dir[d].setBPS(bps)
		}
		l.users[a.user] = u
	}
	u.refs++
	a.userBW = u
}

// detach drops a released allocation's hold on its user's buckets.
func (l *limiter) detach(a *allocation) {
	if a.userBW == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if u := l.users[a.user]; u == a.userBW {
		if u.refs--; u.refs <= 0 {
			delete(l.users, a.user)
		}
	}
}

// admit charges n bytes relayed in direction dir by a to its buckets, and
// reports whether the datagram may go; a refusal is counted by the limit
// that refused. A bucket that admitted is refunded when a later one
// refuses, so a drop costs no limit anything.
func (l *limiter) admit(a *allocation, dir, n int, now time.Time) bool {
	t, burst := now.Sub(l.base).Nanoseconds(), l.burst.Load()
	ok, c1 := a.bw[dir].take(n, t, burst)
	if !ok {
		l.dropped[0][dir].Inc()
		return false
	}
	var c2 int64
	if u := a.userBW; u != nil {
		if ok, c2 = u.dir[dir].take(n, t, burst); !ok {
			a.bw[dir].refund(c1)
			l.dropped[1][dir].Inc()
			return false
		}
	}
	if ok, _ := l.total[dir].take(n, t, burst); !ok {
		a.bw[dir].refund(c1)
		if u := a.userBW; u != nil {
			u.dir[dir].refund(c2)
		}
		l.dropped[2][dir].Inc()
		return false
	}
	return true
}

// UserBandwidth is a user's per-user limit: the override set through
// SetUserBandwidth, or Bandwidth.PerUser.
type UserBandwidth struct {
	User     string `json:"user"`
	MaxBPS   int64  `json:"max_bps"` // 0: unlimited
	Override bool   `json:"override"`
	// DefaultBPS is Bandwidth.PerUser, what the user gets without an
	// override.
	DefaultBPS int64 `json:"default_max_bps"`
}

func (l *limiter) userBandwidth(user string) UserBandwidth {
	l.mu.Lock()
	defer l.mu.Unlock()
	bps, ok := l.overrides[user]
	if !ok {
		bps = l.cfg.PerUser
	}
	return UserBandwidth{User: user, MaxBPS: bps, Override: ok, DefaultBPS: l.cfg.PerUser}
}

// setUser overrides (bps >= 0) or, with clear, forgets the override of a
// user's per-user limit; the user's live allocations follow at once.
func (l *limiter) setUser(user string, bps int64, clear bool) error {
	if bps < 0 {
		return errNegativeBandwidth
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if clear {
		delete(l.overrides, user)
		bps = l.cfg.PerUser
	} else {
		l.overrides[user] = bps
	}
	if bps > 0 {
		l.on.Store(true)
	}
	if u := l.users[user]; u != nil {
		for d := range numDirs {
			u.dir[d].setBPS(bps)
		}
	}
	return nil
}

// SetBandwidth replaces the bandwidth limits (a configuration reload):
// live allocations, users without an override and the total follow at
// once. Per-user overrides stay.
func (s *Server) SetBandwidth(cfg Bandwidth) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	s.reg.bw.set(cfg)
	defer s.kernelSyncAll() // a limit keeps channels in user space; after the unlock
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	for _, a := range s.reg.byID {
		for d := range numDirs {
			a.bw[d].setBPS(cfg.PerAllocation)
		}
	}
	return nil
}

// UserBandwidth returns user's per-user bandwidth limit.
func (s *Server) UserBandwidth(user string) UserBandwidth { return s.reg.bw.userBandwidth(user) }

// SetUserBandwidth overrides Bandwidth.PerUser for user (bits per second, 0
// = unlimited), at once for their live allocations. Overrides live in
// memory: a restart goes back to the configuration.
func (s *Server) SetUserBandwidth(user string, bps int64) error {
	defer s.kernelSyncAll()
	return s.reg.bw.setUser(user, bps, false)
}

// ClearUserBandwidth forgets user's override: Bandwidth.PerUser applies
// again.
func (s *Server) ClearUserBandwidth(user string) { _ = s.reg.bw.setUser(user, 0, true) }
