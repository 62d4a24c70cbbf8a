package turnserver

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// ErrorRate limits STUN responses of one kind per source on UDP listeners.
// An unauthenticated request is answered with a 401 about 2.4 times its
// size, a Binding request with a success response 2–3 times its size, so a
// spoofed source can use a TURN server to amplify traffic toward a victim;
// a per-source budget caps what one victim gets. A source is an IPv4
// address or an IPv6 /64: one subscriber (and so one attacker) holds a
// whole /64, and a victim's network is reached through any address in it.
type ErrorRate struct {
	PerSecond float64 // 0 disables the limit
	Burst     int
}

// maxTrackedSources bounds a limiter table; past it the table starts
// over, which at worst lets a flood of distinct sources get one burst each.
// The table's memory is bounded whatever arrives (≈ 100 bytes a source).
const maxTrackedSources = 100_000

type sourceLimiter struct {
	cfg ErrorRate
	mu  sync.Mutex
	m   map[netip.Addr]*rate.Limiter
}

func newSourceLimiter(cfg ErrorRate) *sourceLimiter {
	return &sourceLimiter{cfg: cfg, m: make(map[netip.Addr]*rate.Limiter)}
}

// reflectionSource is what a reflection budget is per: an IPv4 address, or
// the /64 of an IPv6 address.
func reflectionSource(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.WithZone("").Prefix(64) // cannot fail for an IPv6 address
		return p.Addr()
	}
	return a
}

// set replaces the limit (a configuration reload); every source starts
// again with a full burst. PerSecond 0 lets everything pass.
func (l *sourceLimiter) set(cfg ErrorRate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg = cfg
	clear(l.m)
}

func (l *sourceLimiter) allow(src netip.Addr, now time.Time) bool {
	src = reflectionSource(src)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cfg.PerSecond <= 0 {
		return true
	}
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

// reflectionLimitedConn wraps a UDP listener socket: STUN error responses
// and Binding success responses beyond their source's budgets (nil: no
// limit) are dropped; everything else passes untouched.
type reflectionLimitedConn struct {
	net.PacketConn
	errors, bindings               *sourceLimiter
	errorsDropped, bindingsDropped prometheus.Counter
}

func (c *reflectionLimitedConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	var lim *sourceLimiter
	var dropped prometheus.Counter
	switch {
	case c.errors != nil && isSTUNErrorResponse(p):
		lim, dropped = c.errors, c.errorsDropped
	case c.bindings != nil && isSTUNBindingSuccess(p):
		lim, dropped = c.bindings, c.bindingsDropped
	}
	if lim != nil {
		if ap, ok := addrPortOf(addr); ok && !lim.allow(ap.Addr(), time.Now()) {
			dropped.Inc()
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

// isSTUNBindingSuccess reports whether p is a STUN Binding success response
// (type 0x0101).
func isSTUNBindingSuccess(p []byte) bool {
	return isSTUNType(p, stun.MethodBinding, stun.ClassSuccessResponse)
}
