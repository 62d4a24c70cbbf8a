package udpengine

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// The engine reads every socket itself, so a goroutine that reads one the
// way pion does (a blocking ReadFrom) reads from an Inbox instead: the
// socket's Handler queues there what it leaves to that reader.

// Packet is a datagram queued in an Inbox.
type Packet struct {
	Data []byte
	From netip.AddrPort
}

// Inbox holds the datagrams queued for one socket's reader. It takes
// memory only while it holds some: 10 000 quiet allocations cost no buffer
// each.
type Inbox struct {
	mu     sync.Mutex
	q      []Packet
	head   int
	limit  int
	closed bool          // discarded: nothing more is queued
	ready  chan struct{} // a token when the queue may have become non-empty
	done   chan struct{} // closed when the socket closes
	rd     deadline
}

// NewInbox returns an empty inbox that holds up to limit datagrams.
func NewInbox(limit int) *Inbox {
	return &Inbox{limit: limit, ready: make(chan struct{}, 1), done: make(chan struct{})}
}

// queuedBytes is what all inboxes hold, process-wide; past maxQueuedBytes
// datagrams are dropped (counted as queue_full) however long a single
// queue is: a flood to many relay ports while pion is starved must not
// take the memory the kernel's socket buffers never could.
var queuedBytes atomic.Int64

const maxQueuedBytes = 64 << 20

// Push queues a copy of d; false if the queue is full (or discarded).
func (q *Inbox) Push(d []byte, from netip.AddrPort) bool {
	q.mu.Lock()
	if q.closed || len(q.q)-q.head >= q.limit {
		q.mu.Unlock()
		return false
	}
	if queuedBytes.Add(int64(len(d))) > maxQueuedBytes {
		queuedBytes.Add(-int64(len(d)))
		q.mu.Unlock()
		return false
	}
	if q.head > 0 && q.head >= len(q.q)/2 {
		// The reader lags: drop the consumed front before growing, so
		// the queue holds at most about twice its limit.
		n := copy(q.q, q.q[q.head:])
		clear(q.q[n:])
		q.q, q.head = q.q[:n], 0
	}
	q.q = append(q.q, Packet{Data: append([]byte(nil), d...), From: from})
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop returns the oldest queued datagram, if any.
func (q *Inbox) pop() (Packet, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.q) {
		if cap(q.q) > 64 {
			q.q = nil // a burst is over: give its memory back
		} else {
			q.q = q.q[:0]
		}
		q.head = 0
		return Packet{}, false
	}
	p := q.q[q.head]
	q.q[q.head] = Packet{}
	q.head++
	queuedBytes.Add(-int64(len(p.Data)))
	return p, true
}

// Discard ends the queue when its socket closes: what it holds is
// dropped (and given back to the budget), and a waiting reader returns.
func (q *Inbox) Discard() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	for _, p := range q.q[q.head:] {
		queuedBytes.Add(-int64(len(p.Data)))
	}
	q.q, q.head = nil, 0
	close(q.done)
}

// Read waits for the next datagram (the reader's side): net.ErrClosed once
// discarded, a net.Error with Timeout past the read deadline.
func (q *Inbox) Read() (Packet, error) {
	timeout, stop := q.rd.timer()
	defer stop()
	for {
		if p, ok := q.pop(); ok {
			return p, nil
		}
		select {
		case <-q.ready:
		case <-q.done:
			return Packet{}, net.ErrClosed
		case <-timeout:
			return Packet{}, errTimeout{}
		}
	}
}

// SetReadDeadline sets the deadline for Read (the zero time: none).
func (q *Inbox) SetReadDeadline(t time.Time) { q.rd.set(t) }

// deadline is a read deadline for a reader waiting on a channel.
type deadline struct {
	mu sync.Mutex
	t  time.Time
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.t = t
	d.mu.Unlock()
}

// timer returns a channel that fires at the deadline (nil: none) and a
// function to release it.
func (d *deadline) timer() (<-chan time.Time, func() bool) {
	d.mu.Lock()
	t := d.t
	d.mu.Unlock()
	if t.IsZero() {
		return nil, func() bool { return false }
	}
	tm := time.NewTimer(time.Until(t))
	return tm.C, tm.Stop
}

// errTimeout is a read deadline's error (net.Error with Timeout true).
type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

var _ net.Error = errTimeout{}
