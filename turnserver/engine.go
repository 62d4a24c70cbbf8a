package turnserver

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The relay engine reads every UDP socket of the relay — the listeners
// clients send to and the relay sockets of the allocations — with a few
// epoll loops (one per two of Go's Ps) instead of a goroutine per socket
// parked in Go's network poller. Each wake-up of a loop serves every socket that has
// datagrams, a batch at a time (recvmmsg), and sends what the channel fast
// path relays to clients together (sendmmsg, one call per listener socket).
// At tens of thousands of datagrams a second this removes most of what a
// packet cost besides its own receive and send: a goroutine wake-up per
// datagram and socket, and the read that found the socket empty.
//
// What the fast path does not relay (STUN, Data and Send indications,
// unbound channels, datagrams of TCP clients' allocations) is queued for
// pion, which reads the sockets through engineListener and relayPacketConn
// as before.

// DefaultRecvBatch is how many datagrams one recvmmsg may return from one
// socket.
const DefaultRecvBatch = 64

// recvBufferSize is the room for one datagram: pion's listener MTU is 1600
// (a longer datagram is dropped as possibly truncated), so 2 KiB keeps
// every datagram pion would take whole.
const recvBufferSize = 2048

const (
	// poolSlots is how many datagrams one loop holds between sends.
	poolSlots = 256
	// slotSize leaves 4 bytes before each datagram for the ChannelData
	// header the fast path puts in front of a peer's datagram.
	slotSize = 4 + recvBufferSize
	// inboxSize bounds the datagrams queued for pion per listener socket;
	// past it they are dropped and counted (pion is not keeping up).
	inboxSize = 4096
	// relayInboxSize is the same for a relay socket, which carries one
	// allocation's slow-path traffic (a TCP client's media, Data
	// indications): room for a burst of a video key frame.
	relayInboxSize = 512
)

// engine runs the epoll loops.
type engine struct {
	s       *Server
	log     zerolog.Logger // sampled: a failing socket must not flood the log
	workers []*worker
	next    atomic.Uint32
	batch   int
	wg      sync.WaitGroup
	once    sync.Once
}

func newEngine(s *Server, loops, batch int) (*engine, error) {
	if loops < 1 {
		loops = 1
	}
	batch = max(1, min(batch, poolSlots))
	e := &engine{s: s, batch: batch,
		log: s.log.Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second})}
	for i := range loops {
		w, err := newWorker(e, i)
		if err != nil {
			e.close()
			return nil, err
		}
		e.workers = append(e.workers, w)
	}
	for _, w := range e.workers {
		e.wg.Add(1)
		go w.run()
	}
	return e, nil
}

// add hands a socket to a loop. Sockets are spread round robin, so the
// allocations of a busy server share all loops.
func (e *engine) add(sock *udpSock) error {
	w := e.workers[e.next.Add(1)%uint32(len(e.workers))]
	return w.add(sock, sockIDs.Add(1))
}

// addTo hands a socket to loop i (listeners: one per loop).
func (e *engine) addTo(i int, sock *udpSock) error {
	return e.workers[i%len(e.workers)].add(sock, sockIDs.Add(1))
}

// sockIDs numbers sockets in the epoll events, process-wide, from 1 (0 is
// a loop's stop signal).
var sockIDs atomic.Uint64

// close stops the loops and waits for them. Sockets are closed by their
// owners.
func (e *engine) close() {
	e.once.Do(func() {
		for _, w := range e.workers {
			w.stop()
		}
		e.wg.Wait()
		for _, w := range e.workers {
			w.mu.Lock()
			w.closed = true // sockets added or closed later leave the closed epoll alone
			unix.Close(w.epfd)
			unix.Close(w.evfd)
			w.mu.Unlock()
		}
	})
}

// worker is one epoll loop and the buffers it receives into.
type worker struct {
	e    *engine
	idx  int
	epfd int
	evfd int // written to stop the loop

	mu     sync.Mutex
	socks  map[uint64]*udpSock
	closed bool

	events    []unix.EpollEvent
	ready     []*udpSock
	now       time.Time
	lastYield time.Time

	in    []mmsghdr
	iov   []unix.Iovec
	names [][sockaddrLen]byte
	bufs  []byte

	// What the fast path sends to clients this round, on any listener
	// socket: out's entry i goes out on outL[i]. tmp gathers one
	// listener's entries when several share the round.
	out  *outBatch
	outL []*engineListener
	tmp  []mmsghdr
}

func newWorker(e *engine, idx int) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("turnserver: eventfd: %w", err)
	}
	// Event data 0 is the stop signal; sockets have ids from 1.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("turnserver: epoll: %w", err)
	}
	w := &worker{
		e: e, idx: idx, epfd: epfd, evfd: evfd,
		socks:  make(map[uint64]*udpSock),
		events: make([]unix.EpollEvent, 128),
		in:     make([]mmsghdr, poolSlots),
		iov:    make([]unix.Iovec, poolSlots),
		names:  make([][sockaddrLen]byte, poolSlots),
		bufs:   make([]byte, poolSlots*slotSize),
		out:    newOutBatch(),
		outL:   make([]*engineListener, poolSlots),
		tmp:    make([]mmsghdr, 0, poolSlots),
	}
	for i := range w.in {
		w.iov[i].Base = &w.bufs[i*slotSize+4]
		w.iov[i].SetLen(recvBufferSize)
		w.in[i].hdr.Name = &w.names[i][0]
		w.in[i].hdr.Iov = &w.iov[i]
		w.in[i].hdr.SetIovlen(1)
	}
	return w, nil
}

func (w *worker) add(sock *udpSock, id uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errServerClosed
	}
	sock.id, sock.w = id, w
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, sock.fd, &ev); err != nil {
		return fmt.Errorf("turnserver: epoll add: %w", err)
	}
	w.socks[id] = sock
	return nil
}

// remove takes a socket out of the loop; its caller holds sock.mu, so the
// loop is not reading it.
func (w *worker) remove(sock *udpSock) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, sock.fd, nil) // closing the descriptor removes it anyway
	delete(w.socks, sock.id)
}

func (w *worker) stop() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	_, _ = unix.Write(w.evfd, one[:])
}

func (w *worker) run() {
	defer w.e.wg.Done()
	for {
		n, err := unix.EpollWait(w.epfd, w.events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			w.e.s.log.Error().Err(err).Msg("relay loop: epoll_wait failed; the loop stops")
			return
		}
		w.ready = w.ready[:0]
		stop := false
		w.mu.Lock()
		for _, ev := range w.events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				stop = true
			} else if sock := w.socks[id]; sock != nil {
				w.ready = append(w.ready, sock)
			}
		}
		w.mu.Unlock()
		if stop {
			return
		}
		w.serve()
		// A goroutine that never yields looks stuck to Go's runtime
		// monitor: every 10 ms it takes the loop's P away, and then wakes
		// every 20 µs for a millisecond. Yielding now and then, when there
		// is nothing else to run, costs next to nothing.
		if w.now.Sub(w.lastYield) > yieldEvery {
			w.lastYield = w.now
			runtime.Gosched()
		}
	}
}

// yieldEvery is how often a busy loop yields to Go's scheduler: within
// the monitor's 10 ms, and rarely, since a yield may wake another thread.
const yieldEvery = 4 * time.Millisecond

// reserveProcs returns the number of loops to run: half of GOMAXPROCS,
// at least one. A loop's goroutine waits in epoll_wait holding its P, so
// the other half stays for Go code (pion's STUN handling, the HTTP API);
// with a single P, GOMAXPROCS is raised to 2 for that (unless the
// environment sets it). Measured here on 2 CPUs, one loop beside one P
// for Go code beat two loops with GOMAXPROCS doubled: the same CPU per
// relayed message, 18 % less per allocation (idle Ps make the scheduler
// wake threads, and a context switch is dear).
func reserveProcs() int {
	procsOnce.Do(func() {
		p := runtime.GOMAXPROCS(0)
		if p < 2 && os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(2)
			p = 2
		}
		procsBase = max(1, p/2)
	})
	return procsBase
}

var (
	procsOnce sync.Once
	procsBase int
)

// serve reads every ready socket once (a batch each) and relays or queues
// what it read; then sends what the fast path relayed to clients.
func (w *worker) serve() {
	w.now = time.Now()
	used := 0
	for _, sock := range w.ready {
		if used+w.e.batch > poolSlots {
			w.flush()
			used = 0
		}
		ms := w.in[used : used+w.e.batch]
		for i := range ms {
			ms[i].hdr.Namelen = sockaddrLen
		}
		got, err := sock.recvmmsg(ms)
		if err != nil {
			if socketError(err) {
				w.e.log.Warn().Err(err).Stringer("socket", addrPortStringer(sock.local)).Msg("relay loop: receive failed")
			}
			continue
		}
		for i := range got {
			m := &ms[i]
			if m.hdr.Flags&unix.MSG_TRUNC != 0 {
				continue // longer than any datagram pion takes
			}
			from, ok := parseSockaddr(&w.names[used+i])
			if !ok {
				continue
			}
			off := (used + i) * slotSize
			slot := w.bufs[off : off+4+int(m.n)]
			if sock.relay != nil {
				w.fromPeer(sock.relay, slot, from)
			} else {
				w.fromClient(sock.lis, slot[4:], from)
			}
		}
		used += got
	}
	w.flush()
}

// fromPeer handles a datagram a relay socket received; slot holds it after
// 4 free bytes.
func (w *worker) fromPeer(rc *relayPacketConn, slot []byte, from netip.AddrPort) {
	n := len(slot) - 4
	rc.a.bytesFromPeer.Add(uint64(n))
	rc.a.packetsFromPeer.Add(1)
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	if peers := rc.peers.Load(); peers != nil {
		if b := (*peers)[from]; b != nil && b.live(w.now) {
			binary.BigEndian.PutUint16(slot[0:2], b.channel)
			binary.BigEndian.PutUint16(slot[2:4], uint16(n))
			w.queue(b.ln.engineListener, slot, b.clientAP)
			b.toClient.Add(1)
			return
		}
	}
	rc.deliver(slot[4:], from)
}

// fromClient handles a datagram a listener socket received.
func (w *worker) fromClient(l *engineListener, d []byte, from netip.AddrPort) {
	if l.fast != nil && len(d) >= 4 && d[0]&0xc0 == 0x40 { // ChannelData (RFC 8656 §12.4)
		if l.fast.relayToPeer(d, from, w.now) {
			return
		}
	}
	l.deliver(d, from)
}

// outBatch is what one loop sends to clients in one round.
type outBatch struct {
	msgs  []mmsghdr
	iov   []unix.Iovec
	names [][sockaddrLen]byte
	n     int
}

func newOutBatch() *outBatch {
	b := &outBatch{
		msgs:  make([]mmsghdr, poolSlots),
		iov:   make([]unix.Iovec, poolSlots),
		names: make([][sockaddrLen]byte, poolSlots),
	}
	for i := range b.msgs {
		b.msgs[i].hdr.Name = &b.names[i][0]
		b.msgs[i].hdr.Iov = &b.iov[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b
}

// queue adds p (in the loop's pool until the next flush) for the client
// to on listener l.
func (w *worker) queue(l *engineListener, p []byte, to netip.AddrPort) {
	ob := w.out
	salen := putSockaddr(&ob.names[ob.n], l.sock.family, to)
	if salen == 0 {
		return
	}
	ob.msgs[ob.n].hdr.Namelen = uint32(salen)
	ob.iov[ob.n].Base = unsafe.SliceData(p)
	ob.iov[ob.n].SetLen(len(p))
	w.outL[ob.n] = l
	ob.n++
	if ob.n == len(ob.msgs) {
		w.flush()
	}
}

// flush sends what the round queued: one sendmmsg per listener socket,
// each socket's datagrams in the order they were queued.
func (w *worker) flush() {
	ob := w.out
	n := ob.n
	if n == 0 {
		return
	}
	first, mixed := w.outL[0], false
	for _, l := range w.outL[1:n] {
		if l != first {
			mixed = true
			break
		}
	}
	if !mixed {
		w.send(first, ob.msgs[:n])
	} else {
		for k := range n {
			l := w.outL[k]
			if l == nil {
				continue // sent with an earlier listener's group
			}
			t := w.tmp[:0]
			for i := k; i < n; i++ {
				if w.outL[i] == l {
					t = append(t, ob.msgs[i]) // the copy points at the same name and iovec
					w.outL[i] = nil
				}
			}
			w.send(l, t)
		}
	}
	clear(w.outL[:n])
	ob.n = 0
}

func (w *worker) send(l *engineListener, ms []mmsghdr) {
	sent, err := l.sock.sendmmsg(ms)
	if lost := len(ms) - sent; lost > 0 && socketError(err) {
		w.e.s.m.sendFailed.Add(float64(lost))
	}
}

// addrPortStringer formats an address only when a log line is written.
type addrPortStringer netip.AddrPort

func (a addrPortStringer) String() string { return netip.AddrPort(a).String() }

// inPacket is a datagram queued for pion.
type inPacket struct {
	data []byte
	from netip.AddrPort
}

// pktQueue holds the datagrams queued for pion's reader on one socket. It
// takes memory only while it holds some: 10 000 quiet allocations cost no
// buffer each.
type pktQueue struct {
	mu     sync.Mutex
	q      []inPacket
	head   int
	limit  int
	closed bool          // discarded: nothing more is queued
	ready  chan struct{} // a token when the queue may have become non-empty
	done   chan struct{} // closed when the socket closes
	rd     deadline
}

func newPktQueue(limit int) *pktQueue {
	return &pktQueue{limit: limit, ready: make(chan struct{}, 1), done: make(chan struct{})}
}

// queuedBytes is what all queues for pion hold, process-wide; past
// maxQueuedBytes datagrams are dropped (counted as queue_full) however
// long a single queue is: a flood to many relay ports while pion is
// starved must not take the memory the kernel's socket buffers never
// could.
var queuedBytes atomic.Int64

const maxQueuedBytes = 64 << 20

// push queues a copy of d; false if the queue is full.
func (q *pktQueue) push(d []byte, from netip.AddrPort) bool {
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
	q.q = append(q.q, inPacket{data: append([]byte(nil), d...), from: from})
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop returns the oldest queued datagram, if any.
func (q *pktQueue) pop() (inPacket, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.head == len(q.q) {
		if cap(q.q) > 64 {
			q.q = nil // a burst is over: give its memory back
		} else {
			q.q = q.q[:0]
		}
		q.head = 0
		return inPacket{}, false
	}
	p := q.q[q.head]
	q.q[q.head] = inPacket{}
	q.head++
	queuedBytes.Add(-int64(len(p.data)))
	return p, true
}

// discard ends the queue when its socket closes: what it holds is
// dropped (and given back to the budget), and a waiting reader returns.
func (q *pktQueue) discard() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	for _, p := range q.q[q.head:] {
		queuedBytes.Add(-int64(len(p.data)))
	}
	q.q, q.head = nil, 0
	close(q.done)
}

// read waits for the next datagram (the reader's side).
func (q *pktQueue) read() (inPacket, error) {
	timeout, stop := q.rd.timer()
	defer stop()
	for {
		if p, ok := q.pop(); ok {
			return p, nil
		}
		select {
		case <-q.ready:
		case <-q.done:
			return inPacket{}, net.ErrClosed
		case <-timeout:
			return inPacket{}, errTimeout{}
		}
	}
}

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
