// Package portmux serves TURN over TCP, TURN over TLS and the HTTP API
// (HTTP, HTTPS, WebSocket) on one TCP port, for clients behind firewalls
// that let nothing but port 443 through.
//
// Each connection is told apart by its first bytes: a TLS record (0x16),
// a STUN message (two zero bits, then the magic cookie at bytes 4–7), or an
// HTTP method (an upper-case letter). TLS is terminated here, with the
// certificate source the node already has (tls.Config.GetCertificate), and
// split again by ALPN: "stun.turn" (RFC 7443) is TURN, "h2" and "http/1.1"
// are the API, "acme-tls/1" is a tls-alpn-01 check that the certificate
// source answered during the handshake (closed after it); without ALPN the
// first decrypted bytes decide, as outside. A ClientHello whose SNI matches
// no certificate gets the default one (the first ACME domain, or the file's
// certificate), like every other TLS listener of icebox: the client's name
// check then fails, not the handshake.
//
// The split is a hand-written peek rather than github.com/soheilhy/cmux:
// cmux matches raw bytes only, so the second split (ALPN, then decrypted
// bytes) would need this code anyway, and cmux has no place for PROXY
// protocol before the match nor per-protocol accounting.
//
// PROXY protocol (v1 and v2, github.com/pires/go-proxyproto) is read from
// trusted sources only (Config.TrustedProxies): there it is required, and
// its source address becomes the connection's RemoteAddr, which TURN's
// per-source limits, quotas, logs and the allocation list see. A PROXY
// header from any other source closes the connection; a trusted source
// without one is refused too (a load balancer that forgets the header
// would otherwise make every client look like the balancer).
package portmux

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The protocols a connection is counted under (the metric's label values).
const (
	ProtoTURN    = "turn"     // TURN over TCP
	ProtoTURNTLS = "turn_tls" // TURN over TLS
	ProtoHTTPS   = "https"    // the API over TLS (HTTP/1.1, h2, WebSocket)
	ProtoHTTP    = "http"     // the API in clear
	ProtoUnknown = "unknown"  // closed before it was told apart
	// protoPassed is a Passthrough Mux's connection (not counted by
	// protocol: it was not told apart).
	protoPassed = "passed"
)

// ALPN protocol IDs.
const (
	alpnTURN = "stun.turn"  // RFC 7443
	alpnACME = "acme-tls/1" // RFC 8737, answered by the certificate source
)

// Defaults.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	// maxPending bounds the connections being told apart at once (each
	// holds a goroutine and a buffer until its first bytes or timeout): a
	// flood of silent connections is closed at once beyond it.
	maxPending = 4096
	// queueLen is how many told-apart connections wait for their server's
	// Accept per protocol.
	queueLen = 64
)

// stunMagicCookie is at bytes 4–7 of every STUN message (RFC 8489 §6).
const stunMagicCookie = 0x2112A442

// v2Signature starts a PROXY protocol v2 header; v1 starts with "PROXY ".
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Config configures a Mux.
type Config struct {
	// TLS serves the TLS connections (its GetCertificate or Certificates);
	// its NextProtos are kept (acme-tls/1 for tls-alpn-01) and stun.turn,
	// h2 and http/1.1 added. nil: TLS connections are closed.
	TLS *tls.Config
	// TrustedProxies are the load balancers whose PROXY headers are
	// read; empty: PROXY protocol is refused from everyone.
	TrustedProxies []netip.Prefix
	// HandshakeTimeout bounds the PROXY header, the first bytes and the
	// TLS handshake. Default: DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	Logger           zerolog.Logger
	Registerer       prometheus.Registerer
	// Metrics, when set, are counted into instead of registering new ones
	// with Registerer: several Muxes of one process share them
	// (NewMetrics).
	Metrics *Metrics
	// Passthrough serves a listener of one protocol behind load balancers
	// (turn.proxy_protocol, http.proxy_protocol): each connection's PROXY
	// header is read as on the shared port, then the connection is handed
	// on untouched — no sniffing, no TLS — to Passed().
	Passthrough bool
}

// Metrics are the Muxes' counters (NewMetrics).
type Metrics struct{ m metrics }

// NewMetrics makes the counters and registers them with reg (nil: none).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Metrics{m}, nil
}

// Mux accepts on its listeners and hands each connection, told apart, to
// one of its three listeners: TURN (TCP), TURNTLS (TLS terminated) and
// HTTP (clear or TLS terminated).
type Mux struct {
	cfg     Config
	tls     *tls.Config
	lns     []net.Listener
	turn    *chanListener
	turnTLS *chanListener
	http    *chanListener
	pending chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	m       metrics
	log     zerolog.Logger
}

type metrics struct {
	conns        *prometheus.CounterVec
	proxyRefused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_portmux_connections_total",
			Help: "Connections accepted on the shared port (turn.mux), by the protocol they were told to speak.",
		}, []string{"protocol"}),
		proxyRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_portmux_proxy_refused_total",
			Help: "Connections on the shared port, or on a TURN or API listener with PROXY protocol on, closed for their PROXY protocol header: untrusted (a header from a source not in proxy_protocol.trusted), missing (a trusted source sent none), invalid.",
		}, []string{"reason"}),
	}
	for _, p := range []string{ProtoTURN, ProtoTURNTLS, ProtoHTTPS, ProtoHTTP, ProtoUnknown} {
		m.conns.WithLabelValues(p)
	}
	for _, r := range []string{"untrusted", "missing", "invalid"} {
		m.proxyRefused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.proxyRefused} {
			if err := reg.Register(c); err != nil {
				return m, fmt.Errorf("portmux: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// New makes a mux over the bound listeners lns (it owns them from now on);
// Serve starts accepting.
func New(cfg Config, lns ...net.Listener) (*Mux, error) {
	if len(lns) == 0 {
		return nil, errors.New("portmux: new: no listener")
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	m := &Mux{
		cfg:     cfg,
		lns:     lns,
		pending: make(chan struct{}, maxPending),
		done:    make(chan struct{}),
		log:     cfg.Logger.With().Str("component", "portmux").Logger(),
	}
	if cfg.Metrics != nil {
		m.m = cfg.Metrics.m
	} else {
		var err error
		if m.m, err = newMetrics(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	if cfg.TLS != nil {
		m.tls = cfg.TLS.Clone()
		for _, p := range []string{alpnTURN, "h2", "http/1.1"} {
			if !slices.Contains(m.tls.NextProtos, p) {
				m.tls.NextProtos = append(m.tls.NextProtos, p)
			}
		}
	}
	addr := lns[0].Addr()
	m.turn = newChanListener(addr, m.done)
	m.turnTLS = newChanListener(addr, m.done)
	m.http = newChanListener(addr, m.done)
	return m, nil
}

// TURN is the listener of TURN over TCP connections.
func (m *Mux) TURN() net.Listener { return m.turn }

// countUnknown counts a shared port's connection closed before it was told
// apart (a Passthrough Mux tells nothing apart).
func (m *Mux) countUnknown() {
	if !m.cfg.Passthrough {
		m.m.conns.WithLabelValues(ProtoUnknown).Inc()
	}
}

// Passed is where a Passthrough Mux hands its connections.
func (m *Mux) Passed() net.Listener { return m.turn }

// TURNTLS is the listener of TURN over TLS connections, their handshake
// done (a *tls.Conn when ALPN said stun.turn).
func (m *Mux) TURNTLS() net.Listener { return m.turnTLS }

// HTTP is the listener of the API's connections, in clear or TLS (a
// *tls.Conn when ALPN chose h2 or http/1.1, so net/http sees TLS and h2).
func (m *Mux) HTTP() net.Listener { return m.http }

// Addrs are the bound addresses.
func (m *Mux) Addrs() []net.Addr {
	out := make([]net.Addr, 0, len(m.lns))
	for _, l := range m.lns {
		out = append(out, l.Addr())
	}
	return out
}

// Serve accepts on every listener until Close.
func (m *Mux) Serve() {
	for _, l := range m.lns {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.acceptLoop(l)
		}()
	}
}

// Close stops accepting, closes the listeners and the connections still
// being told apart (those handed over belong to their servers), and waits
// for the accept loops.
func (m *Mux) Close() error {
	var errs []error
	m.once.Do(func() {
		close(m.done)
		for _, l := range m.lns {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
		m.wg.Wait()
	})
	return errors.Join(errs...)
}

func (m *Mux) acceptLoop(l net.Listener) {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			m.log.Error().Err(err).Stringer("listener", l.Addr()).Dur("retry_in", delay).Msg("accept failed; retrying")
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-m.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		select {
		case m.pending <- struct{}{}:
		default:
			m.countUnknown()
			_ = c.Close() // over maxPending: refused
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer func() { <-m.pending }()
			m.serveConn(c)
		}()
	}
}

// serveConn tells c apart and hands it over, or closes it.
func (m *Mux) serveConn(raw net.Conn) {
	// Closing the mux ends the wait for a silent client.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-m.done:
			_ = raw.SetDeadline(time.Now())
		case <-stop:
		}
	}()
	proto, c, err := m.classify(raw)
	if err != nil {
		m.countUnknown()
		m.log.Debug().Err(err).Stringer("client", raw.RemoteAddr()).Msg("connection closed before it was told apart")
		_ = raw.Close()
		return
	}
	if proto != protoPassed {
		m.m.conns.WithLabelValues(proto).Inc()
	}
	var dst *chanListener
	switch proto {
	case ProtoTURN, protoPassed:
		dst = m.turn
	case ProtoTURNTLS:
		dst = m.turnTLS
	default:
		dst = m.http
	}
	if !dst.hand(c) {
		_ = c.Close()
	}
}

// classify reads the PROXY header (trusted sources), peeks the first bytes
// and does the TLS handshake, within HandshakeTimeout; it returns the
// connection to hand over, deadline cleared.
func (m *Mux) classify(raw net.Conn) (string, net.Conn, error) {
	if err := raw.SetDeadline(time.Now().Add(m.cfg.HandshakeTimeout)); err != nil {
		return "", nil, err
	}
	pc := &peekConn{Conn: raw, r: bufio.NewReaderSize(raw, 1024), remote: raw.RemoteAddr()}
	if err := m.proxyHeader(pc); err != nil {
		return "", nil, err
	}
	if m.cfg.Passthrough {
		// Handed on as it is: what the PROXY header left in the buffer
		// is read through pc.
		if err := raw.SetDeadline(time.Time{}); err != nil {
			return "", nil, err
		}
		return protoPassed, pc, nil
	}
	proto, err := sniff(pc.r)
	if err != nil {
		return "", nil, err
	}
	var c net.Conn = pc
	if proto == "tls" {
		if proto, c, err = m.handshake(pc); err != nil {
			return "", nil, err
		}
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		return "", nil, err
	}
	return proto, c, nil
}

// proxyHeader reads a trusted source's PROXY header into pc's RemoteAddr,
// and refuses one from anyone else.
func (m *Mux) proxyHeader(pc *peekConn) error {
	if !m.trusted(pc.remote) {
		if hasProxyHeader(pc.r) {
			m.m.proxyRefused.WithLabelValues("untrusted").Inc()
			m.log.Warn().Stringer("source", pc.remote).Msg("PROXY protocol header from a source not in proxy_protocol.trusted; connection closed")
			return errors.New("portmux: PROXY header from an untrusted source")
		}
		return nil
	}
	h, err := proxyproto.Read(pc.r)
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		m.m.proxyRefused.WithLabelValues("missing").Inc()
		m.log.Warn().Stringer("source", pc.remote).Msg("a trusted load balancer sent no PROXY protocol header; connection closed")
		return fmt.Errorf("portmux: proxy header: %w", err)
	case err != nil:
		m.m.proxyRefused.WithLabelValues("invalid").Inc()
		return fmt.Errorf("portmux: proxy header: %w", err)
	}
	// LOCAL (the balancer's own health check) keeps the balancer's
	// address; PROXY carries the client's.
	if h.Command.IsProxy() {
		if src, _, ok := h.TCPAddrs(); ok {
			pc.remote = src
		}
	}
	return nil
}

// hasProxyHeader reports whether r starts with a PROXY v1 or v2 header. It
// peeks past the first byte only when that byte may start one ('P' is
// also POST, PUT and PATCH, whose request lines are longer), so a short
// first message of another protocol is not held up.
func hasProxyHeader(r *bufio.Reader) bool {
	b, err := r.Peek(1)
	if err != nil {
		return false
	}
	var sig []byte
	switch b[0] {
	case 'P':
		sig = []byte("PROXY ")
	case '\r':
		sig = v2Signature
	default:
		return false
	}
	b, _ = r.Peek(len(sig))
	return bytes.Equal(b, sig)
}

func (m *Mux) trusted(a net.Addr) bool {
	if len(m.cfg.TrustedProxies) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	for _, p := range m.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// sniff tells the first bytes apart: "tls", ProtoTURN or ProtoHTTP.
func sniff(r *bufio.Reader) (string, error) {
	b, err := r.Peek(1)
	if err != nil {
		return "", fmt.Errorf("portmux: first bytes: %w", err)
	}
	switch {
	case b[0] == 0x16: // TLS handshake record
		return "tls", nil
	case b[0] < 0x40: // a STUN message's first two bits are zero
		if b, err = r.Peek(8); err != nil {
			return "", fmt.Errorf("portmux: first bytes: %w", err)
		}
		if binary.BigEndian.Uint32(b[4:8]) != stunMagicCookie {
			return "", errors.New("portmux: first bytes: neither STUN, TLS nor HTTP")
		}
		return ProtoTURN, nil
	case b[0] >= 'A' && b[0] <= 'Z': // an HTTP method; net/http checks the rest
		return ProtoHTTP, nil
	}
	return "", errors.New("portmux: first bytes: neither STUN, TLS nor HTTP")
}

// handshake terminates TLS and tells the protocol inside.
func (m *Mux) handshake(pc *peekConn) (string, net.Conn, error) {
	if m.tls == nil {
		return "", nil, errors.New("portmux: TLS: no certificate configured")
	}
	tc := tls.Server(pc, m.tls)
	if err := tc.Handshake(); err != nil {
		return "", nil, fmt.Errorf("portmux: TLS handshake: %w", err)
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case alpnTURN:
		return ProtoTURNTLS, tc, nil
	case "h2", "http/1.1":
		return ProtoHTTPS, tc, nil
	case alpnACME:
		// The certificate source answered the CA's check in the
		// handshake; nothing follows.
		return "", nil, errors.New("portmux: tls-alpn-01 check done")
	}
	// No ALPN (coturn's clients, old HTTP clients): the first decrypted
	// bytes decide. The conn handed over is then not a *tls.Conn.
	inner := &peekConn{Conn: tc, r: bufio.NewReaderSize(tc, 1024), remote: pc.remote}
	proto, err := sniff(inner.r)
	switch {
	case err != nil:
		return "", nil, err
	case proto == ProtoTURN:
		return ProtoTURNTLS, inner, nil
	case proto == ProtoHTTP:
		return ProtoHTTPS, inner, nil
	}
	return "", nil, errors.New("portmux: TLS inside TLS")
}

// peekConn is a connection whose first bytes were peeked: reads drain the
// buffer, then go to the connection itself. RemoteAddr is the PROXY
// header's source when there was one.
type peekConn struct {
	net.Conn
	r      *bufio.Reader
	remote net.Addr
}

func (c *peekConn) Read(b []byte) (int, error) {
	if c.r.Buffered() > 0 {
		return c.r.Read(b)
	}
	return c.Conn.Read(b)
}

func (c *peekConn) RemoteAddr() net.Addr { return c.remote }

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr    net.Addr
	ch      chan net.Conn
	muxDone <-chan struct{}
	closed  chan struct{}
	once    sync.Once
}

func newChanListener(addr net.Addr, muxDone <-chan struct{}) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn, queueLen), muxDone: muxDone, closed: make(chan struct{})}
}

// hand queues c for Accept; false when the listener or the mux is closed.
func (l *chanListener) hand(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.closed:
	case <-l.muxDone:
	}
	return false
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
	case <-l.muxDone:
	}
	return nil, fmt.Errorf("portmux: accept: %w", net.ErrClosed)
}

// Close stops this listener; connections queued for it are closed.
func (l *chanListener) Close() error {
	l.once.Do(func() {
		close(l.closed)
		for {
			select {
			case c := <-l.ch:
				_ = c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// Merge is one listener over several (the API's own listener and the
// mux's HTTP listener, served by one http.Server): Accept returns the next
// connection of any; Close closes all.
func Merge(lns ...net.Listener) net.Listener {
	ml := &mergedListener{lns: lns, ch: make(chan acceptResult), done: make(chan struct{})}
	for _, l := range lns {
		go ml.pump(l)
	}
	return ml
}

type acceptResult struct {
	c   net.Conn
	err error
}

type mergedListener struct {
	lns  []net.Listener
	ch   chan acceptResult
	done chan struct{}
	once sync.Once
}

func (ml *mergedListener) pump(l net.Listener) {
	for {
		c, err := l.Accept()
		select {
		case ml.ch <- acceptResult{c, err}:
		case <-ml.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
	}
}

func (ml *mergedListener) Accept() (net.Conn, error) {
	select {
	case r := <-ml.ch:
		if r.err != nil && errors.Is(r.err, net.ErrClosed) {
			// One closed underneath: the merged one is done too.
			_ = ml.Close()
		}
		return r.c, r.err
	case <-ml.done:
		return nil, fmt.Errorf("portmux: accept: %w", net.ErrClosed)
	}
}

func (ml *mergedListener) Close() error {
	var errs []error
	ml.once.Do(func() {
		close(ml.done)
		for _, l := range ml.lns {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}

func (ml *mergedListener) Addr() net.Addr { return ml.lns[0].Addr() }
