package httpapi

// One WebSocket connection of the hub (ws.go): why it closes, its queue,
// and the loops that read commands, run them in order, write events and
// replies, and ping.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// Labels of icebox_ws_dropped_connections_total.
const (
	dropSlow        = "slow"
	dropBudget      = "budget"
	dropPingTimeout = "ping_timeout"
	dropError       = "error"
)

// closeCause is why the server ends a connection.
type closeCause struct {
	name   string // for the log
	drop   string // metric label; empty when it is not a drop
	code   websocket.StatusCode
	text   string // close frame reason; keep it short and static
	abrupt bool   // close the TCP connection without a close handshake
}

var (
	causeSlow = closeCause{name: "slow", drop: dropSlow,
		code: websocket.StatusTryAgainLater, text: "too slow"}
	causeBudget = closeCause{name: "budget", drop: dropBudget,
		code: websocket.StatusTryAgainLater, text: "output budget exceeded"}
	// Not a drop: the session ends as its token said it would.
	causeExpired = closeCause{name: "token_expired",
		code: websocket.StatusPolicyViolation, text: "token expired"}
	// A peer that does not answer pings would not answer a close frame
	// either: do not spend the handshake's 10s on it.
	causePingTimeout = closeCause{name: "ping_timeout", drop: dropPingTimeout, abrupt: true}
	causeBinary      = closeCause{name: "unsupported_data", drop: dropError,
		code: websocket.StatusUnsupportedData, text: "text frames only"}
	causeError    = closeCause{name: "error", drop: dropError, abrupt: true}
	causeShutdown = closeCause{name: "going_away",
		code: websocket.StatusGoingAway, text: "server shutting down"}
	// The client's close frame was answered by coder/websocket already.
	causeClientClosed = closeCause{name: "closed_by_client", abrupt: true}
	// The client hung up without a close frame (killed, network lost): not
	// something the server dropped.
	causeClientGone = closeCause{name: "client_gone", abrupt: true}
)

// clientGone reports whether a read error means the client hung up without a
// close frame.
func clientGone(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// wsConn is one client connection. Its goroutines: the reader (Serve's own),
// the command runner, the writer (the only one that closes the socket) and
// the pinger.
type wsConn struct {
	hub    *Hub
	ws     *websocket.Conn
	user   string
	remote string

	send   chan []byte         // outgoing messages; never closed
	cmds   chan pendingCommand // read, not yet run; never closed
	budget *rate.Limiter       // the user's output budget; nil = unlimited

	once    sync.Once
	closing chan struct{} // closed by shutdown
	cause   closeCause    // set before closing is closed
}

// pendingCommand is a message read from the client: a command to run, or
// the error to reply with when it was not a valid command.
type pendingCommand struct {
	typ string
	ref string
	msg json.RawMessage
	err *Error
}

type wsReply struct {
	Type   string `json:"type"` // "reply"
	Ref    string `json:"ref,omitempty"`
	Result any    `json:"result"`
}

type wsError struct {
	Type  string `json:"type"` // "error"
	Ref   string `json:"ref,omitempty"`
	Error *Error `json:"error"`
}

// shutdown asks the writer to close the connection for cause, and counts
// the drop. Only the first cause counts; it reports whether this was it.
// It never blocks.
func (c *wsConn) shutdown(cause closeCause) bool {
	first := false
	c.once.Do(func() {
		first = true
		c.cause = cause
		close(c.closing)
		if cause.drop != "" {
			c.hub.dropped.WithLabelValues(cause.drop).Inc()
		}
	})
	return first
}

func (c *wsConn) isClosing() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// enqueue queues msg for the writer without blocking; a full queue means
// the client does not keep up, and it is dropped rather than delaying
// everyone else's events.
func (c *wsConn) enqueue(msg []byte) {
	if c.isClosing() {
		return
	}
	select {
	case c.send <- msg:
	default:
		c.shutdown(causeSlow)
	}
}

// readLoop reads messages until the connection fails or is closed, and
// queues them for the command runner. It returns the error that ended it.
func (c *wsConn) readLoop(ctx context.Context) error {
	for {
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return err
		}
		c.hub.received.Inc()
		if c.isClosing() {
			continue // draining until the close handshake completes
		}
		if typ != websocket.MessageText {
			c.shutdown(causeBinary)
			continue
		}
		pc := parseCommand(data)
		select {
		case c.cmds <- pc:
		default:
			c.reply(pc.ref, nil, apiError(http.StatusTooManyRequests, "rate_limited", "too many commands in flight"))
		}
	}
}

// parseCommand checks the envelope of a client message.
func parseCommand(data []byte) pendingCommand {
	invalid := func(msg string) pendingCommand {
		return pendingCommand{err: apiError(http.StatusBadRequest, "invalid_request", msg)}
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return invalid("a command is a JSON object")
	}
	var pc pendingCommand
	if raw, ok := fields["ref"]; ok {
		if err := json.Unmarshal(raw, &pc.ref); err != nil {
			return invalid(`"ref" must be a string`)
		}
	}
	raw, ok := fields["type"]
	if !ok || json.Unmarshal(raw, &pc.typ) != nil || pc.typ == "" {
		return pendingCommand{ref: pc.ref, err: apiError(http.StatusBadRequest, "invalid_request", `"type" must be a non-empty string`)}
	}
	pc.msg = json.RawMessage(data)
	return pc
}

// commandLoop runs the commands one at a time and queues their replies.
func (c *wsConn) commandLoop(ctx context.Context, stop <-chan struct{}, cmd CommandFunc) {
	for {
		select {
		case <-stop:
			return
		case <-c.closing:
			return
		case pc := <-c.cmds:
			if pc.err != nil {
				c.reply(pc.ref, nil, pc.err)
				continue
			}
			result, err := c.run(ctx, cmd, pc)
			c.reply(pc.ref, result, err)
		}
	}
}

// run calls cmd, turning a panic into an internal error: the command runs on
// the hub's goroutine, out of reach of the HTTP server's recovery.
func (c *wsConn) run(ctx context.Context, cmd CommandFunc, pc pendingCommand) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ws: command %q panicked: %v", pc.typ, p)
		}
	}()
	return cmd(ctx, c.user, pc.msg)
}

// reply queues the answer to a command.
func (c *wsConn) reply(ref string, result any, err error) {
	var msg []byte
	if err == nil {
		msg, err = encodeMessage(wsReply{Type: "reply", Ref: ref, Result: result})
	}
	if err != nil {
		ae := asAPIError(err)
		if ae.Status == http.StatusInternalServerError {
			c.hub.log.Error().Err(err).Str("user", c.user).Msg("websocket command failed")
		}
		msg, err = encodeMessage(wsError{Type: "error", Ref: ref, Error: ae})
		if err != nil { // unreachable: *Error is three plain fields
			c.hub.log.Error().Err(err).Msg("encoding websocket error reply")
			return
		}
	}
	c.enqueue(msg)
}

// writeLoop writes queued messages until the connection closes; it is the
// one goroutine that closes the socket, so that a close frame is never
// stuck behind a message it would have to interrupt.
func (c *wsConn) writeLoop(ctx, ioCtx context.Context, stop <-chan struct{}) {
	done := ctx.Done()
	for {
		// A close goes before the queued messages: they would only delay
		// it, and a slow client would not read them anyway.
		if c.isClosing() {
			c.closeSocket()
			return
		}
		select {
		case <-stop:
			return
		case <-done:
			done = nil
			if errors.Is(context.Cause(ctx), errSessionExpired) {
				c.shutdown(causeExpired)
			} else {
				c.shutdown(causeShutdown)
			}
		case <-c.closing:
		case msg := <-c.send:
			wctx, cancel := context.WithTimeout(ioCtx, c.hub.cfg.WriteTimeout)
			err := c.ws.Write(wctx, websocket.MessageText, msg)
			cancel()
			switch {
			case err == nil:
				c.hub.sent.Inc()
			case errors.Is(err, context.DeadlineExceeded):
				c.shutdown(causeSlow)
			case errors.Is(err, net.ErrClosed):
				// Closed under us (peer's close frame, ping timeout): the
				// reader sees it too and tells why.
				return
			default:
				c.shutdown(causeError)
			}
		}
	}
}

// closeSocket closes the socket as c.cause says. Serve logs the cause; the
// errors would say nothing more (Close's only tells that the client did not
// answer the close frame within coder/websocket's 5s).
func (c *wsConn) closeSocket() {
	if c.cause.abrupt {
		_ = c.ws.CloseNow()
	} else {
		_ = c.ws.Close(c.cause.code, c.cause.text)
	}
}

// pingLoop pings every PingInterval and closes a connection whose pong does
// not come within PingInterval. coder/websocket sees the pong only while
// the reader reads, which is why commands run on their own goroutine.
func (c *wsConn) pingLoop(ioCtx context.Context, stop <-chan struct{}) {
	interval := c.hub.cfg.PingInterval
	t := time.NewTimer(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-c.closing:
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ioCtx, interval)
		err := c.ws.Ping(pctx)
		cancel()
		switch {
		case err == nil:
			t.Reset(interval)
		case errors.Is(err, context.DeadlineExceeded):
			c.shutdown(causePingTimeout)
			return
		default:
			return // the connection is closed; the reader tells why
		}
	}
}
