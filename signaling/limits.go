package signaling

import (
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
