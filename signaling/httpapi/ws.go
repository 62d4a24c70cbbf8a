package httpapi

// The WebSocket hub: GET /ws pushes call events to the participants of a
// call's conversation and lets clients run commands over the same socket.
//
// Protocol (text frames only; a binary frame closes the connection with
// 1003 "text frames only"):
//
//   - server → client, events: the event's payload JSON as is, e.g.
//     {"type":"CallInvite","call_id":"…",…}. Every payload has a "type" field
//     (see signaling.Event*).
//   - client → server, commands: a JSON object
//     {"type":"<command>","ref":"<client id, optional>",…}. The whole message
//     is handed to the CommandFunc. Commands from one connection run one at a
//     time, in the order they were sent; events keep flowing meanwhile.
//   - server → client, the result of a command:
//     {"type":"reply","ref":"<ref>","result":<result>} on success,
//     {"type":"error","ref":"<ref>","error":{"code":"…","message":"…"}} on
//     failure, with the same codes as the REST API. "ref" is omitted when the
//     command had none. A message that is not a JSON object with a string
//     "type" (and, if present, a string "ref") gets an "invalid_request"
//     error; the connection stays open. A client with more than
//     maxPendingCommands commands waiting gets "rate_limited" for the excess
//     ones at once (the only reply that may overtake earlier ones).
//   - the server pings every PingInterval; a client that has not answered
//     within PingInterval is disconnected. Browsers answer pings themselves.
//   - a client that does not read fast enough for its queue (QueueSize
//     messages) is closed with 1013 "too slow"; it should reconnect and
//     re-read the state of its calls (GET /calls), as events were lost.
//   - each user has an output budget for events, a token bucket of bytes
//     shared by all the user's connections (UserBytesPerSecond,
//     UserBurstBytes): an event each connection is sent costs its size once
//     per connection. A connection whose event finds the budget spent is
//     closed with 1013 "output budget exceeded" (counted as dropped, reason
//     "budget"), like a slow one: the client knows events were lost and
//     re-reads its calls. The budget is kept while it refills, so
//     reconnecting does not renew it. Replies to the user's own commands
//     are not charged. Without it, whoever may post candidates to a
//     conversation makes the server send them again to every connection
//     of every member.
//   - events and replies are encoded once, without HTML escaping ('<' is
//     one byte, not six), and every connection gets the same bytes; an
//     event reaches each connection at most once.
//   - a session authenticated by a token that expires is closed at the
//     expiry with 1008 "token expired"; the client reconnects with a new one.
//   - on shutdown the server closes with 1001 "server shutting down".

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/icebox-voip/icebox/signaling"
)

// HubConfig configures the hub. Zero values take the defaults.
type HubConfig struct {
	Logger zerolog.Logger
	// Registerer receives the hub's metrics. Default: a private registry.
	Registerer prometheus.Registerer
	// MaxPerUser caps a user's open connections (429 beyond): each costs
	// goroutines and a queue. Default: 16; negative = unlimited.
	MaxPerUser int
	// UserBytesPerSecond is the rate of each user's output budget: event
	// bytes per second across all the user's connections (an event sent to
	// 16 connections costs 16 times its size). Default: 512 KiB/s;
	// negative = unlimited.
	UserBytesPerSecond int
	// UserBurstBytes is the size of each user's output budget. It must hold
	// the largest event times the connections it goes to: an invite with
	// a 64 KiB SDP to 16 connections is 1 MiB. Default: 4 MiB.
	UserBurstBytes int
	// QueueSize is the number of outgoing messages buffered per connection;
	// a connection whose queue overflows is closed. Default: 256.
	QueueSize int
	// PingInterval is how often the server pings; a connection that does
	// not answer a ping within PingInterval is closed. It bounds how long a
	// vanished client (no FIN, e.g. a phone that lost the network) keeps
	// its slot, and keeps the socket from looking idle to reverse proxies
	// (nginx's proxy_read_timeout and AWS ALB's idle timeout are both 60s
	// by default). Default: 20s.
	PingInterval time.Duration
	// WriteTimeout bounds the write of one message; a client that cannot
	// take a message in that time is treated as too slow. Default: 10s.
	WriteTimeout time.Duration
	// MaxMessage is the largest message a client may send (an SDP offer
	// with many candidates is tens of KiB). Default: 1 MiB.
	MaxMessage int64
	// OriginPatterns lists the browser origins, other than the request's
	// own host, allowed to open a socket (path.Match patterns against the
	// Origin host, or "scheme://host"). Default: none, same-origin only;
	// requests without an Origin header (non-browser clients) are allowed.
	OriginPatterns []string
}

// SetOriginPatterns replaces HubConfig.OriginPatterns for the upgrades
// from now on (a configuration reload); open sockets stay.
func (h *Hub) SetOriginPatterns(patterns []string) {
	p := slices.Clone(patterns)
	h.origins.Store(&p)
}

// Defaults of HubConfig.
const (
	defaultQueueSize    = 256
	defaultPingInterval = 20 * time.Second
	defaultWriteTimeout = 10 * time.Second
	defaultMaxMessage   = 1 << 20
	defaultUserRate     = 512 << 10
	defaultUserBurst    = 4 << 20
)

// maxIdleBudgets bounds the budgets kept for users with no connection
// (kept while they refill, so that reconnecting does not renew them).
// Beyond it they are all forgotten: briefly generous, never unbounded.
const maxIdleBudgets = 10_000

// errSessionExpired is the cause of a Serve context that ended because the
// client's token expired (see Server.websocket).
var errSessionExpired = errors.New("ws: token expired")

// maxPendingCommands bounds the commands read from one connection and not
// yet run. The reader must keep reading while a command runs, or it would
// not see the pongs and the connection would look dead.
const maxPendingCommands = 16

// CommandFunc runs one command a client sent over the socket (a JSON object
// with a "type" field and an optional "ref" string) for the authenticated
// user, and returns the result to send back. ctx ends when the connection
// does; Serve waits for a running command to return.
type CommandFunc func(ctx context.Context, user string, msg json.RawMessage) (any, error)

// Hub tracks the open WebSocket connections by user and delivers events to
// them. It implements signaling.Publisher.
type Hub struct {
	cfg     HubConfig
	log     zerolog.Logger
	origins atomic.Pointer[[]string] // HubConfig.OriginPatterns, swapped by SetOriginPatterns

	mu     sync.RWMutex
	users  map[string]*userState // by user ID
	n      int                   // open connections
	idle   int                   // users entries kept only for their budget
	closed bool
	wg     sync.WaitGroup // one per Serve past the closed check

	sent     prometheus.Counter
	received prometheus.Counter
	dropped  *prometheus.CounterVec
}

var _ signaling.Publisher = (*Hub)(nil)

// userState is one user's connections, reservations and output budget.
// Guarded by Hub.mu (the limiter locks itself).
type userState struct {
	conns map[*wsConn]struct{}
	// reserved counts upgrades under way: a slot is taken under the lock
	// before the upgrade, so concurrent requests cannot all pass the cap.
	reserved int
	budget   *rate.Limiter // nil = unlimited
	idle     bool          // no connection or reservation; kept for budget
}

// NewHub returns a hub with no connections.
func NewHub(cfg HubConfig) *Hub {
	if cfg.MaxPerUser == 0 {
		cfg.MaxPerUser = 16
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = defaultQueueSize
	}
	if cfg.PingInterval <= 0 {
		cfg.PingInterval = defaultPingInterval
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = defaultWriteTimeout
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = defaultMaxMessage
	}
	if cfg.UserBytesPerSecond == 0 {
		cfg.UserBytesPerSecond = defaultUserRate
	}
	if cfg.UserBurstBytes <= 0 {
		cfg.UserBurstBytes = defaultUserBurst
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &Hub{
		cfg:   cfg,
		log:   cfg.Logger.With().Str("component", "ws").Logger(),
		users: make(map[string]*userState),
	}
	h.SetOriginPatterns(cfg.OriginPatterns)
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_ws_connections",
		Help: "Open WebSocket connections.",
	}, func() float64 { return float64(h.Connections()) })
	h.sent = f.NewCounter(prometheus.CounterOpts{
		Name: "icebox_ws_messages_sent_total",
		Help: "Messages (events and command replies) written to WebSocket clients.",
	})
	h.received = f.NewCounter(prometheus.CounterOpts{
		Name: "icebox_ws_messages_received_total",
		Help: "Messages read from WebSocket clients.",
	})
	h.dropped = f.NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_ws_dropped_connections_total",
		Help: "WebSocket connections closed by the server: slow (queue overflow or write timeout), budget (the user's output budget was spent), ping_timeout, error (protocol violation or I/O error).",
	}, []string{"reason"})
	for _, r := range []string{dropSlow, dropBudget, dropPingTimeout, dropError} {
		h.dropped.WithLabelValues(r)
	}
	return h
}

// Publish implements signaling.Publisher: it encodes the event's payload
// once and queues those bytes on every open connection of every recipient,
// once per connection however often a user is listed, within the user's
// output budget. It never blocks; a connection whose queue is full is
// closed as too slow, one whose budget is spent as over budget.
func (h *Hub) Publish(ev signaling.Event) {
	var targets []*wsConn
	seen := make(map[string]struct{}, len(ev.Recipients))
	h.mu.RLock()
	for _, user := range ev.Recipients {
		if _, dup := seen[user]; dup {
			continue
		}
		seen[user] = struct{}{}
		if u := h.users[user]; u != nil {
			for c := range u.conns {
				targets = append(targets, c)
			}
		}
	}
	h.mu.RUnlock()
	if len(targets) == 0 {
		return
	}
	msg, err := encodeMessage(ev.Payload)
	if err != nil {
		// A bug in the payload type, not the client's fault.
		h.log.Error().Err(err).Str("event", ev.Type).Str("call_id", ev.CallID).Msg("encoding event")
		return
	}
	now := time.Now()
	for _, c := range targets {
		if c.isClosing() {
			continue
		}
		if c.budget != nil && !c.budget.AllowN(now, len(msg)) {
			c.shutdown(causeBudget)
			continue
		}
		c.enqueue(msg)
	}
}

// encodeMessage encodes a message for clients: without HTML escaping (no
// message is embedded in HTML, and escaping makes '<' six bytes) and
// without json.Encoder's trailing newline.
func encodeMessage(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Serve upgrades the request to a WebSocket for user (authenticated by the
// caller), selecting subprotocol if it is not empty (browsers require the
// server to pick one of the subprotocols they offered), and serves it until
// either side closes it or ctx ends. It returns nil when the connection
// ended with a close handshake or was closed by the hub (the hub logs and
// counts those), the I/O error when it broke. When the hub is closed it
// writes a 503 error response and returns that *Error; when the upgrade
// fails, the response has been written too.
func (h *Hub) Serve(ctx context.Context, w http.ResponseWriter, r *http.Request, user, subprotocol string, cmd CommandFunc) error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		ae := apiError(http.StatusServiceUnavailable, "unavailable", "server is shutting down")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ae.Status)
		_ = json.NewEncoder(w).Encode(map[string]*Error{"error": ae}) // the client is gone if this fails
		return ae
	}
	// The slot is taken before the upgrade, under the same lock as the
	// count: checked and taken separately, concurrent upgrades all passed
	// the check before any was counted.
	if !h.reserve(user) {
		h.mu.Unlock()
		ae := apiError(http.StatusTooManyRequests, "rate_limited", "too many WebSocket connections for this user")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(ae.Status)
		_ = json.NewEncoder(w).Encode(map[string]*Error{"error": ae}) // the client is gone if this fails
		return ae
	}
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()
	opts := &websocket.AcceptOptions{OriginPatterns: *h.origins.Load()}
	if subprotocol != "" {
		opts.Subprotocols = []string{subprotocol}
	}
	ws, err := websocket.Accept(w, r, opts)
	if err != nil {
		h.release(user)
		return fmt.Errorf("ws: accept: %w", err)
	}
	ws.SetReadLimit(h.cfg.MaxMessage)
	c := &wsConn{
		hub:     h,
		ws:      ws,
		user:    user,
		remote:  r.RemoteAddr,
		send:    make(chan []byte, h.cfg.QueueSize),
		cmds:    make(chan pendingCommand, maxPendingCommands),
		closing: make(chan struct{}),
	}
	if !h.register(c) {
		return ws.Close(causeShutdown.code, causeShutdown.text)
	}
	h.log.Info().Str("user", user).Str("remote", c.remote).Msg("websocket connected")

	// Reads and writes must not inherit ctx's cancellation: coder/websocket
	// tears the TCP connection down when an operation's context ends, and
	// ctx ending should rather close it with 1001 (the writer does).
	ioCtx := context.WithoutCancel(ctx)
	cmdCtx, cancelCmds := context.WithCancel(ctx)
	stop := make(chan struct{}) // the reader is done: the socket is closed
	var wg sync.WaitGroup
	wg.Go(func() { c.writeLoop(ctx, ioCtx, stop) })
	wg.Go(func() { c.pingLoop(ioCtx, stop) })
	wg.Go(func() { c.commandLoop(cmdCtx, stop, cmd) })

	// Whatever ended the read, settle the cause before the other goroutines
	// stop: a shutdown the hub began first keeps its cause (the read error
	// is then only its echo), and later Publish calls skip the connection.
	readErr := c.readLoop(ioCtx)
	var result error
	peerCode := websocket.CloseStatus(readErr)
	switch {
	case peerCode != -1:
		c.shutdown(causeClientClosed)
	case clientGone(readErr):
		if c.shutdown(causeClientGone) {
			result = fmt.Errorf("ws: %w", readErr)
		}
	default:
		if c.shutdown(causeError) {
			result = fmt.Errorf("ws: %w", readErr)
		}
	}
	close(stop)
	cancelCmds()
	wg.Wait()
	_ = ws.CloseNow() // normally closed already; then this is a no-op

	h.unregister(c)
	ev := h.log.Info().Str("user", user).Str("remote", c.remote).Str("reason", c.cause.name)
	if c.cause == causeClientClosed {
		ev = ev.Int("code", int(peerCode))
	}
	ev.Err(result).Msg("websocket disconnected")
	return result
}

// Close closes every connection with 1001 (going away), makes later Serve
// calls refuse, and waits for the connections to finish. A client that does
// not answer the close handshake holds it up to coder/websocket's 10s.
func (h *Hub) Close() error {
	h.mu.Lock()
	h.closed = true
	var all []*wsConn
	for _, u := range h.users {
		for c := range u.conns {
			all = append(all, c)
		}
	}
	h.mu.Unlock()
	for _, c := range all {
		c.shutdown(causeShutdown)
	}
	h.wg.Wait()
	return nil
}

// Connections returns the number of open connections.
func (h *Hub) Connections() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.n
}

// reserve takes one of user's connection slots, unless the cap is reached.
// h.mu must be held.
func (h *Hub) reserve(user string) bool {
	u := h.users[user]
	if u == nil {
		u = &userState{conns: make(map[*wsConn]struct{})}
		if h.cfg.UserBytesPerSecond > 0 {
			u.budget = rate.NewLimiter(rate.Limit(h.cfg.UserBytesPerSecond), h.cfg.UserBurstBytes)
		}
		h.users[user] = u
	}
	if h.cfg.MaxPerUser > 0 && len(u.conns)+u.reserved >= h.cfg.MaxPerUser {
		return false
	}
	if u.idle {
		u.idle = false
		h.idle--
	}
	u.reserved++
	return true
}

// release gives back a slot reserve took, when the upgrade failed.
func (h *Hub) release(user string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[user]
	u.reserved--
	h.forgetIfUnused(user, u)
}

// register turns c's reserved slot into an open connection, unless the hub
// has been closed since Serve began.
func (h *Hub) register(c *wsConn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[c.user]
	u.reserved--
	if h.closed {
		h.forgetIfUnused(c.user, u)
		return false
	}
	u.conns[c] = struct{}{}
	c.budget = u.budget
	h.n++
	return true
}

func (h *Hub) unregister(c *wsConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.users[c.user]
	if u == nil {
		return
	}
	if _, ok := u.conns[c]; !ok {
		return
	}
	delete(u.conns, c)
	h.n--
	h.forgetIfUnused(c.user, u)
}

// forgetIfUnused drops the entry of a user with no connection and no
// reservation, unless the budget is still refilling: then it is kept (up
// to maxIdleBudgets such entries), so that reconnecting does not renew it.
// h.mu must be held.
func (h *Hub) forgetIfUnused(user string, u *userState) {
	if len(u.conns) > 0 || u.reserved > 0 || u.idle {
		return
	}
	if u.budget == nil || u.budget.TokensAt(time.Now()) >= float64(u.budget.Burst()) {
		delete(h.users, user)
		return
	}
	u.idle = true
	h.idle++
	if h.idle <= maxIdleBudgets {
		return
	}
	for name, v := range h.users {
		if v.idle {
			delete(h.users, name)
		}
	}
	h.idle = 0
}
