package signaling

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Candidates and renegotiations fan out to every participant's WebSocket
// queue: without a bound, one client could get everyone else dropped as
// "too slow". A browser sends a few dozen candidates per call.
const (
	signalRate  = 20
	signalBurst = 200
)

// maxLimited bounds the users a userLimits remembers: beyond it, it forgets
// everyone, which is briefly generous but never unbounded memory.
const maxLimited = 100_000

// userLimits is a token bucket per user: call initiations, and candidates
// and renegotiations, are limited apart.
type userLimits struct {
	rate  rate.Limit
	burst int
	now   func() time.Time

	mu       sync.Mutex
	limiters map[string]*rate.Limiter
}

func newUserLimits(r rate.Limit, burst int, now func() time.Time) *userLimits {
	return &userLimits{rate: r, burst: burst, now: now, limiters: make(map[string]*rate.Limiter)}
}

// allow takes a token from user's bucket, if there is one.
func (l *userLimits) allow(user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.limiters[user]
	if !ok {
		if len(l.limiters) >= maxLimited {
			clear(l.limiters)
		}
		lim = rate.NewLimiter(l.rate, l.burst)
		l.limiters[user] = lim
	}
	return lim.AllowN(l.now(), 1)
}

// set changes the rate and burst of every user's bucket and of those made
// later (a reload of calls.initiate_rate and calls.initiate_burst). Each
// bucket keeps the tokens it holds (SetLimitAt and SetBurstAt first bring
// it up to now at the old rate): a reload neither refills everyone's bucket
// nor empties it; a lower burst caps a bucket at its user's next request,
// a higher one fills at the new rate.
func (l *userLimits) set(r rate.Limit, burst int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r == l.rate && burst == l.burst {
		return
	}
	now := l.now()
	l.rate, l.burst = r, burst
	for _, lim := range l.limiters {
		lim.SetLimitAt(now, r)
		lim.SetBurstAt(now, burst)
	}
}

// SetInitiateLimits changes the per-user limit of call initiations
// (calls.initiate_rate per second, bursts of calls.initiate_burst) of a
// running service, on SIGHUP: each user keeps the tokens of their bucket.
func (s *Service) SetInitiateLimits(perSecond float64, burst int) error {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) || burst < 1 {
		return invalidf("initiate rate must be > 0 and finite and burst >= 1 (got %v, %d)", perSecond, burst)
	}
	s.initiates.set(rate.Limit(perSecond), burst)
	return nil
}
