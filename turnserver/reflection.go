package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// ErrorRate limits STUN error responses (401, 400, …) per source address on
// UDP listeners. An unauthenticated request is answered with a 401 about 2.4
// times its size, so a spoofed source can use a TURN server to amplify
// traffic toward a victim; a per-source budget caps what one victim gets.
type ErrorRate struct {
	PerSecond float64 // 0 disables the limit
	Burst     int
}

// maxTrackedSources bounds the limiter table; past it the table starts
// over, which at worst lets a flood of distinct sources get one burst each.
const maxTrackedSources = 100_000

type sourceLimiter struct {
	cfg ErrorRate
	mu  sync.Mutex
	m   map[netip.Addr]*rate.Limiter
}

func newSourceLimiter(cfg ErrorRate) *sourceLimiter {
	return &sourceLimiter{cfg: cfg, m: make(map[netip.Addr]*rate.Limiter)}
}

func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.m[src]
	if !ok {
		if len(l.m) >= maxTrackedSources {
			clear(l.m)
		}
		lim = rate.NewLimiter(rate.Limit(l.cfg.PerSecond), l.cfg.Burst)
		l.m[src] = lim
	}
	return lim.AllowN(now, 1)
}

// errorLimitedConn wraps a UDP listener socket: STUN error responses beyond
// the source's budget are dropped; everything else passes untouched.
type errorLimitedConn struct {
	net.PacketConn
	lim     *sourceLimiter
	dropped prometheus.Counter
}

func (c *errorLimitedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if isSTUNErrorResponse(p) {
		if ap, ok := addrPortOf(addr); ok && !c.lim.allow(ap.Addr().Unmap(), time.Now()) {
			c.dropped.Inc()
			return len(p), nil
		}
	}
	return c.PacketConn.WriteTo(p, addr)
}

// stunMagicCookie marks a STUN message (RFC 8489 §5).
const stunMagicCookie = 0x2112A442

// isSTUNErrorResponse reports whether p is a STUN message of the error
// response class. ChannelData (first byte 0x40–0x7f) and Data indications,
// the bulk of what a listener sends, fail the first checks.
func isSTUNErrorResponse(p []byte) bool {
	if len(p) < 20 || p[0]&0xc0 != 0 || binary.BigEndian.Uint32(p[4:8]) != stunMagicCookie {
		return false
	}
	t := binary.BigEndian.Uint16(p[0:2])
	return t&0x0110 == 0x0110 // class bits C1 (0x0100) and C0 (0x0010): error response
}
