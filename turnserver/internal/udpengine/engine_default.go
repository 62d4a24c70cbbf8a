//go:build !linux || icebox_portable

package udpengine

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// The portable engine, for systems without epoll and recvmmsg (and for
// testing on Linux with the icebox_portable tag), in the manner of pion's
// null offload engine: each socket is read by a goroutine of its own,
// parked in Go's network poller, one datagram per read; what a Handler
// sends goes out at once. It relays correctly everywhere Go runs; its cost
// per datagram is not measured.

// Engine runs a reader goroutine per socket.
type Engine struct {
	sampled    zerolog.Logger // a failing socket must not flood the log
	sendFailed Counter

	mu     sync.Mutex
	socks  map[*Socket]struct{}
	closed bool
	wg     sync.WaitGroup
	once   sync.Once
}

// New returns an engine; Loops and Batch do not apply to it.
func New(cfg Config) (*Engine, error) {
	if cfg.SendFailed == nil {
		cfg.SendFailed = nopCounter{}
	}
	return &Engine{
		sampled:    cfg.Log.Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second}),
		sendFailed: cfg.SendFailed,
		socks:      make(map[*Socket]struct{}),
	}, nil
}

// Add serves a socket with h, on a goroutine of its own.
func (e *Engine) Add(sock *Socket, h Handler) error { return e.AddTo(0, sock, h) }

// AddTo is Add: there are no loops to choose from.
func (e *Engine) AddTo(_ int, sock *Socket, h Handler) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errClosed
	}
	sock.h = h
	e.socks[sock] = struct{}{}
	e.wg.Add(1)
	go e.read(sock)
	return nil
}

// Close stops the readers and waits for them. Sockets are closed by their
// owners; they can still send.
func (e *Engine) Close() {
	e.once.Do(func() {
		e.mu.Lock()
		e.closed = true
		for s := range e.socks {
			// Wakes the reader without closing the socket.
			_ = s.c.SetReadDeadline(time.Unix(1, 0))
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
}

func (e *Engine) stopped() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// read hands every datagram of sock to its Handler until the socket or the
// engine closes.
func (e *Engine) read(sock *Socket) {
	defer e.wg.Done()
	defer func() {
		e.mu.Lock()
		delete(e.socks, sock)
		e.mu.Unlock()
	}()
	// One byte more than RecvBufferSize tells a datagram that did not fit
	// (Go's ReadFrom truncates silently).
	buf := make([]byte, Headroom+RecvBufferSize+1)
	r := &Round{sendFailed: e.sendFailed}
	for {
		n, from, err := sock.c.ReadFromUDPAddrPort(buf[Headroom:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) || e.stopped() {
				return
			}
			if SocketError(err) {
				// An ICMP error reported on the socket, say: the next
				// read goes on.
				e.sampled.Warn().Err(err).Stringer("socket", addrPortStringer(sock.local)).Msg("relay reader: receive failed")
			}
			continue
		}
		if n > RecvBufferSize {
			continue // longer than any datagram pion takes
		}
		r.now = time.Now()
		sock.h.Receive(r, buf[:Headroom+n], from)
	}
}

// Round is one datagram's handling, as its Handler sees it.
type Round struct {
	now        time.Time
	sendFailed Counter
}

// Now is when the datagram was read.
func (r *Round) Now() time.Time { return r.now }

// Send sends p to to on socket via, at once; a datagram the socket cannot
// take is dropped and counted.
func (r *Round) Send(via *Socket, p []byte, to netip.AddrPort) {
	if _, err := via.SendTo(p, to); SocketError(err) {
		r.sendFailed.Add(1)
	}
}
