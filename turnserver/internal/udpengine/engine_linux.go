//go:build !icebox_portable

package udpengine

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// The epoll engine reads every socket with a few epoll loops (Config.Loops;
// the turnserver runs one per two of Go's Ps) instead of a goroutine per
// socket parked in Go's network poller. Each wake-up of a loop serves every
// socket that has datagrams, a batch at a time (recvmmsg), and sends what
// its Handlers queued with Round.Send together (sendmmsg, one call per
// socket). At tens of thousands of datagrams a second this removes most of
// what a packet cost besides its own receive and send: a goroutine wake-up
// per datagram and socket, and the read that found the socket empty.

// slotSize leaves Headroom bytes before each datagram.
const slotSize = Headroom + RecvBufferSize

// Engine runs the epoll loops.
type Engine struct {
	log     zerolog.Logger // unsampled: a loop that stops
	sampled zerolog.Logger // a failing socket must not flood the log
	workers []*worker
	next    atomic.Uint32
	batch   int
	gro     bool // Config.GRO
	// coalesced counts reads that held more than one datagram (tests).
	coalesced atomic.Int64
	wg        sync.WaitGroup
	once      sync.Once
}

// New starts the loops.
func New(cfg Config) (*Engine, error) {
	loops := max(1, cfg.Loops)
	if cfg.SendFailed == nil {
		cfg.SendFailed = nopCounter{}
	}
	e := &Engine{batch: max(1, min(cfg.Batch, poolSlots)), log: cfg.Log, gro: cfg.GRO,
		sampled: cfg.Log.Sample(&zerolog.BurstSampler{Burst: 5, Period: 10 * time.Second})}
	for i := range loops {
		w, err := newWorker(e, i, cfg.SendFailed)
		if err != nil {
			e.Close()
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

// Add serves a socket with h. Sockets are spread round robin, so the
// allocations of a busy server share all loops.
func (e *Engine) Add(sock *Socket, h Handler) error {
	w := e.workers[e.next.Add(1)%uint32(len(e.workers))]
	return w.add(sock, h, sockIDs.Add(1))
}

// AddTo serves a socket with h on loop i (listeners: one per loop).
func (e *Engine) AddTo(i int, sock *Socket, h Handler) error {
	return e.workers[i%len(e.workers)].add(sock, h, sockIDs.Add(1))
}

// sockIDs numbers sockets in the epoll events, process-wide, from 1 (0 is
// a loop's stop signal).
var sockIDs atomic.Uint64

// Close stops the loops and waits for them. Sockets are closed by their
// owners; they can still send.
func (e *Engine) Close() {
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
	e    *Engine
	idx  int
	epfd int
	evfd int // written to stop the loop

	mu     sync.Mutex
	socks  map[uint64]*Socket
	closed bool

	events    []unix.EpollEvent
	ready     []*Socket
	lastYield time.Time

	in    []mmsghdr
	iov   []unix.Iovec
	names [][sockaddrLen]byte
	bufs  []byte
	gro   *groBatch // nil unless the engine has GRO on

	round Round
}

// Round is one wake-up of a loop, as its Handlers see it: the time it
// began and the datagrams they queued for sending.
type Round struct {
	now time.Time

	// What the Handlers send this round, on any socket: out's entry i
	// goes out on outS[i]. tmp gathers one socket's entries when several
	// share the round.
	out        *outBatch
	outS       []*Socket
	tmp        []mmsghdr
	gso        *gsoBatch
	sendFailed Counter
}

// Now is when the round began: one clock read serves every datagram of
// the round.
func (r *Round) Now() time.Time { return r.now }

func newWorker(e *Engine, idx int, sendFailed Counter) (*worker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("udpengine: epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("udpengine: eventfd: %w", err)
	}
	// Event data 0 is the stop signal; sockets have ids from 1.
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("udpengine: epoll: %w", err)
	}
	w := &worker{
		e: e, idx: idx, epfd: epfd, evfd: evfd,
		socks:  make(map[uint64]*Socket),
		events: make([]unix.EpollEvent, 128),
		in:     make([]mmsghdr, poolSlots),
		iov:    make([]unix.Iovec, poolSlots),
		names:  make([][sockaddrLen]byte, poolSlots),
		bufs:   make([]byte, poolSlots*slotSize),
		round: Round{
			out:        newOutBatch(),
			outS:       make([]*Socket, poolSlots),
			tmp:        make([]mmsghdr, 0, poolSlots),
			gso:        newGSOBatch(),
			sendFailed: sendFailed,
		},
	}
	if e.gro {
		w.gro = newGROBatch()
	}
	for i := range w.in {
		w.iov[i].Base = &w.bufs[i*slotSize+Headroom]
		w.iov[i].SetLen(RecvBufferSize)
		w.in[i].hdr.Name = &w.names[i][0]
		w.in[i].hdr.Iov = &w.iov[i]
		w.in[i].hdr.SetIovlen(1)
	}
	return w, nil
}

func (w *worker) add(sock *Socket, h Handler, id uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errClosed
	}
	sock.id, sock.w, sock.h = id, w, h
	if w.e.gro {
		sock.gro = enableGRO(sock.fd)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, sock.fd, &ev); err != nil {
		return fmt.Errorf("udpengine: epoll add: %w", err)
	}
	w.socks[id] = sock
	return nil
}

// remove takes a socket out of the loop; its caller holds sock.mu, so the
// loop is not reading it.
func (w *worker) remove(sock *Socket) {
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
			w.e.log.Error().Err(err).Msg("relay loop: epoll_wait failed; the loop stops")
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
		if now := w.round.now; now.Sub(w.lastYield) > yieldEvery {
			w.lastYield = now
			runtime.Gosched()
		}
	}
}

// yieldEvery is how often a busy loop yields to Go's scheduler: within
// the monitor's 10 ms, and rarely, since a yield may wake another thread.
const yieldEvery = 4 * time.Millisecond

// serve reads every ready socket once (a batch each) and hands what it
// read to the sockets' Handlers; then sends what they queued.
func (w *worker) serve() {
	r := &w.round
	r.now = time.Now()
	used := 0
	for _, sock := range w.ready {
		if sock.gro {
			used = w.serveGRO(sock, used)
			continue
		}
		if used+w.e.batch > poolSlots {
			r.flush()
			used = 0
		}
		ms := w.in[used : used+w.e.batch]
		for i := range ms {
			ms[i].hdr.Namelen = sockaddrLen
		}
		got, err := sock.recvmmsg(ms)
		if err != nil {
			if SocketError(err) {
				w.e.sampled.Warn().Err(err).Stringer("socket", addrPortStringer(sock.local)).Msg("relay loop: receive failed")
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
			sock.h.Receive(r, w.bufs[off:off+Headroom+int(m.n)], from)
		}
		used += got
	}
	r.flush()
}

// outBatch is what one loop sends in one round.
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

// Send queues p for to on socket via; it goes out with the round's other
// datagrams (sendmmsg, one call per socket, in the order queued), without
// waiting: what the send buffer cannot take is dropped and counted. p must
// stay unchanged until the round ends: the pkt a Handler got, or memory it
// does not reuse.
func (r *Round) Send(via *Socket, p []byte, to netip.AddrPort) {
	ob := r.out
	salen := putSockaddr(&ob.names[ob.n], via.family, to)
	if salen == 0 {
		return
	}
	ob.msgs[ob.n].hdr.Namelen = uint32(salen)
	ob.iov[ob.n].Base = unsafe.SliceData(p)
	ob.iov[ob.n].SetLen(len(p))
	r.outS[ob.n] = via
	ob.n++
	if ob.n == len(ob.msgs) {
		r.flush()
	}
}

// flush sends what the round queued: one sendmmsg per socket, each
// socket's datagrams in the order they were queued.
func (r *Round) flush() {
	ob := r.out
	n := ob.n
	if n == 0 {
		return
	}
	first, mixed := r.outS[0], false
	for _, s := range r.outS[1:n] {
		if s != first {
			mixed = true
			break
		}
	}
	if !mixed {
		r.send(first, ob.msgs[:n])
	} else {
		for k := range n {
			s := r.outS[k]
			if s == nil {
				continue // sent with an earlier socket's group
			}
			t := r.tmp[:0]
			for i := k; i < n; i++ {
				if r.outS[i] == s {
					t = append(t, ob.msgs[i]) // the copy points at the same name and iovec
					r.outS[i] = nil
				}
			}
			r.send(s, t)
		}
	}
	clear(r.outS[:n])
	ob.n = 0
}

func (r *Round) send(s *Socket, ms []mmsghdr) {
	if len(ms) > 1 && s.gso.Load() {
		if gs, ok := r.gso.coalesce(ms); ok {
			sent, err := s.sendmmsg(gs)
			lost := 0 // the datagrams of the messages that did not go (the last ones, as sendmmsg counts)
			for _, c := range r.gso.count[sent:] {
				lost += c
			}
			if lost > 0 && SocketError(err) {
				r.sendFailed.Add(float64(lost))
				if err == unix.EIO || err == unix.EINVAL {
					s.gso.Store(false) // the device or path refuses segmentation (gso_linux.go)
				}
			}
			return
		}
	}
	sent, err := s.sendmmsg(ms)
	if lost := len(ms) - sent; lost > 0 && SocketError(err) {
		r.sendFailed.Add(float64(lost))
	}
}
