package turnserver

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Defaults of the TCP/TLS client connection limits (Config.TCPMaxPerSource,
// TCPMaxTotal, TCPIdleTimeout).
const (
	// A client needs one connection per TCP/TLS allocation, plus one per
	// RFC 6062 peer data connection; a browser in a call holds a handful.
	// 32 leaves room for a small office behind one NAT address.
	defaultTCPMaxPerSource = 32
	// Each connection costs a file descriptor and two goroutines with
	// their buffers; 10 000 stays well inside a 65 536 descriptor limit
	// with the relay sockets those connections allocate.
	defaultTCPMaxTotal = 10_000
	// A client keeps its allocation alive with a Refresh before the
	// allocation's lifetime (10 minutes by default) runs out: pion's client
	// refreshes at half of it (5 minutes), libwebrtc a minute before its end.
	// During a call, media and ICE consent checks (every few seconds, RFC
	// 7675) arrive far more often. A connection silent for longer than a
	// default lifetime plus a minute carries no live allocation.
	defaultTCPIdleTimeout = 11 * time.Minute
)

// Backoff of Accept after a temporary error (EMFILE, ENFILE, ENOBUFS,
// ECONNABORTED…), as net/http's Server.Serve: returning the error would end
// pion's accept loop for good.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// Reasons a TCP/TLS client connection is refused, the "reason" label of
// icebox_turn_tcp_connections_refused_total.
const (
	refusedPerSource = "per_source"
	refusedTotal     = "total"
)

// connLimits counts TURN TCP/TLS client connections per source and in
// total; every TCP and TLS listener of a server shares one.
type connLimits struct {
	maxPerSource int // <= 0: unlimited
	maxTotal     int // <= 0: unlimited

	mu        sync.Mutex
	perSource map[netip.Addr]int
	total     int
}

func newConnLimits(maxPerSource, maxTotal int) *connLimits {
	return &connLimits{maxPerSource: maxPerSource, maxTotal: maxTotal, perSource: make(map[netip.Addr]int)}
}

// sourceKey is what the per-source limit counts: an IPv4 address, or the
// /64 of an IPv6 address (one subscriber holds a whole /64).
func sourceKey(a net.Addr) netip.Addr {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	ip := tcp.AddrPort().Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64) // cannot fail for an IPv6 address
		return p.Addr()
	}
	return ip
}

// acquire counts a connection from src, or names the limit that refuses it.
func (l *connLimits) acquire(src netip.Addr) (refused string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.maxTotal > 0 && l.total >= l.maxTotal:
		return refusedTotal
	case l.maxPerSource > 0 && l.perSource[src] >= l.maxPerSource:
		return refusedPerSource
	}
	l.total++
	l.perSource[src]++
	return ""
}

func (l *connLimits) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perSource[src] <= 1 {
		delete(l.perSource, src)
		return
	}
	l.perSource[src]--
}

func (l *connLimits) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// connTracker wraps a TURN TCP/TLS listener (under the TLS layer). It
//   - closes the client connections it accepted when it is closed: pion's
//     Server.Close stops accepting but leaves live TCP connections (and so
//     their allocations) running;
//   - retries temporary Accept errors instead of passing them to pion,
//     whose accept loop ends on the first error;
//   - enforces the connection limits and the idle timeout.
type connTracker struct {
	ln      net.Listener
	limits  *connLimits
	idle    time.Duration // <= 0: none
	refused *prometheus.CounterVec
	errs    prometheus.Counter
	log     zerolog.Logger

	done      chan struct{}
	closeOnce sync.Once

	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool
}

var _ net.Listener = (*connTracker)(nil)

func (s *Server) trackConns(l net.Listener) *connTracker {
	return &connTracker{
		ln:      l,
		limits:  s.connLimits,
		idle:    s.cfg.TCPIdleTimeout,
		refused: s.m.tcpRefused,
		errs:    s.m.tcpAcceptErrors,
		log:     s.log,
		done:    make(chan struct{}),
		conns:   make(map[*trackedConn]struct{}),
	}
}

func (l *connTracker) Addr() net.Addr { return l.ln.Addr() }

// Accept returns the next client connection within the limits. It returns
// an error only once the listener is closed.
func (l *connTracker) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
			l.errs.Inc()
			l.log.Error().Err(err).Stringer("listener", l.ln.Addr()).Dur("retry_in", delay).
				Msg("turn tcp accept failed; retrying")
			t := time.NewTimer(delay)
			select {
			case <-t.C:
				continue
			case <-l.done:
				t.Stop()
				return nil, net.ErrClosed
			}
		}
		delay = 0
		src := sourceKey(c.RemoteAddr())
		if reason := l.limits.acquire(src); reason != "" {
			l.refused.WithLabelValues(reason).Inc()
			_ = c.Close() // refused before any byte; nothing to report
			continue
		}
		tc := &trackedConn{Conn: c, l: l, src: src, idle: l.idle}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			l.limits.release(src)
			return nil, errors.Join(net.ErrClosed, c.Close())
		}
		l.conns[tc] = struct{}{}
		l.mu.Unlock()
		return tc, nil
	}
}

func (l *connTracker) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	err := l.ln.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for c := range conns {
		if cerr := c.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
	}
	return err
}

func (l *connTracker) forget(c *trackedConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.limits.release(c.src)
}

// trackedConn is an accepted client connection. Each Read pushes its read
// deadline to now+idle, so a client that sends nothing for the idle timeout
// is disconnected (slowloris, or a peer that vanished without a FIN). A read
// deadline the connection's user sets still applies if it is earlier.
type trackedConn struct {
	net.Conn
	l    *connTracker
	src  netip.Addr
	idle time.Duration
	once sync.Once

	// userDeadline is the read deadline set through SetDeadline or
	// SetReadDeadline, in Unix nanoseconds; 0 is none.
	userDeadline atomic.Int64
	// armedUntil is the idle deadline last set on the socket, in Unix
	// nanoseconds. Reads within idle/16 of arming it do not re-arm, which
	// spares a timer update per packet: the effective idle timeout lies
	// between 15/16 and all of idle.
	armedUntil atomic.Int64
}

func (c *trackedConn) Read(p []byte) (int, error) {
	if c.idle > 0 {
		if err := c.armIdle(); err != nil {
			return 0, err
		}
	}
	return c.Conn.Read(p)
}

func (c *trackedConn) armIdle() error {
	now := time.Now()
	until := now.Add(c.idle).UnixNano()
	user := c.userDeadline.Load()
	if user == 0 && until-c.armedUntil.Load() < int64(c.idle/16) {
		return nil
	}
	if user != 0 && user < until {
		until = user
	}
	c.armedUntil.Store(until)
	return c.Conn.SetReadDeadline(time.Unix(0, until))
}

func (c *trackedConn) setUserDeadline(t time.Time) {
	if t.IsZero() {
		c.userDeadline.Store(0)
	} else {
		c.userDeadline.Store(t.UnixNano())
	}
	c.armedUntil.Store(0) // the next Read arms the idle deadline again
}

func (c *trackedConn) SetDeadline(t time.Time) error {
	c.setUserDeadline(t)
	return c.Conn.SetDeadline(t)
}

func (c *trackedConn) SetReadDeadline(t time.Time) error {
	c.setUserDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.forget(c) })
	return c.Conn.Close()
}
