//go:build linux

package main

// relayrate: the relay's rate at the loss point and its one-way latency,
// run by the harness in the client namespace of the veth bed.
//
// N sessions (raw TURN over UDP: Allocate, then ChannelBind to the partner
// session's relay address — sessions pair up as turnutils_uclient -y
// does) send ChannelData to each other through the relay. The offered
// rate steps up (bounded: -steps, each -step long) until more than
// -max-loss of a step's datagrams are lost, or this generator cannot
// offer the rate any more (it shares the machine's cores with the server).
// Every datagram carries its step and its send time (this process's
// monotonic clock); the receiving session reads the same clock, so the
// latency is one way — client → relay → client, across the veth pair and
// back — with no clock skew.

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

const rateChannel = 0x4000

// rawSession is one client socket with its allocation.
type rawSession struct {
	conn         *net.UDPConn
	server       *net.UDPAddr
	user, pass   string
	realm        stun.Realm
	nonceV       stun.Nonce
	relay        netip.AddrPort
	partnerRelay netip.AddrPort
	integrity    stun.MessageIntegrity
}

type attrFunc func(*stun.Message) error

func (f attrFunc) AddTo(m *stun.Message) error { return f(m) }

var udpTransport = attrFunc(func(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
})

// roundTrip sends req (built again for each try: a fresh transaction) and
// returns the answer; 3 tries, 1 s each.
func (s *rawSession) roundTrip(build func() (*stun.Message, error)) (*stun.Message, error) {
	buf := make([]byte, 1500)
	for range 3 {
		req, err := build()
		if err != nil {
			return nil, err
		}
		if _, err := s.conn.WriteTo(req.Raw, s.server); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(time.Second)
		for {
			_ = s.conn.SetReadDeadline(deadline)
			n, err := s.conn.Read(buf)
			if err != nil {
				break // timeout: try again
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() != nil || res.TransactionID != req.TransactionID {
				continue
			}
			_ = s.conn.SetReadDeadline(time.Time{})
			return res, nil
		}
	}
	return nil, errors.New("no answer")
}

// authed builds an authenticated request of method with attrs.
func (s *rawSession) authed(method stun.Method, attrs ...stun.Setter) func() (*stun.Message, error) {
	return func() (*stun.Message, error) {
		setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
		setters = append(setters, stun.NewUsername(s.user), s.realm, s.nonceV, s.integrity, stun.Fingerprint)
		return stun.Build(setters...)
	}
}

func errCode(m *stun.Message) int {
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) != nil {
		return 0
	}
	return int(ec.Code)
}

// request sends an authenticated request, once more with a fresh nonce if
// the server calls it stale.
func (s *rawSession) request(method stun.Method, attrs ...stun.Setter) (*stun.Message, error) {
	for range 2 {
		res, err := s.roundTrip(s.authed(method, attrs...))
		if err != nil {
			return nil, fmt.Errorf("%v: %w", method, err)
		}
		if res.Type.Class == stun.ClassSuccessResponse {
			return res, nil
		}
		if c := errCode(res); c == 438 {
			_ = s.nonceV.GetFrom(res)
			continue
		}
		return nil, fmt.Errorf("%v: error %d", method, errCode(res))
	}
	return nil, fmt.Errorf("%v: stale nonce twice", method)
}

func (s *rawSession) allocate() error {
	res, err := s.roundTrip(func() (*stun.Message, error) {
		return stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), udpTransport, stun.Fingerprint)
	})
	if err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	if err := s.realm.GetFrom(res); err != nil {
		return fmt.Errorf("allocate: no realm in the challenge (%d)", errCode(res))
	}
	if err := s.nonceV.GetFrom(res); err != nil {
		return fmt.Errorf("allocate: no nonce in the challenge")
	}
	s.integrity = stun.NewLongTermIntegrity(s.user, s.realm.String(), s.pass)
	res, err = s.request(stun.MethodAllocate, udpTransport)
	if err != nil {
		return err
	}
	var xr stun.XORMappedAddress
	if err := xr.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil {
		return fmt.Errorf("allocate: %w", err)
	}
	ip, _ := netip.AddrFromSlice(xr.IP)
	s.relay = netip.AddrPortFrom(ip.Unmap(), uint16(xr.Port))
	return nil
}

func (s *rawSession) bind() error {
	ch := attrFunc(func(m *stun.Message) error {
		m.Add(stun.AttrChannelNumber, []byte{rateChannel >> 8, rateChannel & 0xff, 0, 0})
		return nil
	})
	peer := stun.XORMappedAddress{IP: s.partnerRelay.Addr().AsSlice(), Port: int(s.partnerRelay.Port())}
	xp := attrFunc(func(m *stun.Message) error { return peer.AddToAs(m, stun.AttrXORPeerAddress) })
	_, err := s.request(stun.MethodChannelBind, ch, xp)
	return err
}

// latencyHist counts one-way latencies: 1 µs buckets below 2 ms, 50 µs
// buckets up to 200 ms, and one bucket beyond.
type latencyHist struct{ b [2000 + 3960 + 1]atomic.Int64 }

func (h *latencyHist) add(d time.Duration) {
	us := d.Microseconds()
	switch {
	case us < 0:
		us = 0
	case us >= 200_000:
		h.b[len(h.b)-1].Add(1)
		return
	}
	if us < 2000 {
		h.b[us].Add(1)
		return
	}
	h.b[2000+(us-2000)/50].Add(1)
}

// quantile is the q-quantile in µs (NaN without samples).
func (h *latencyHist) quantile(q float64) float64 {
	var total int64
	for i := range h.b {
		total += h.b[i].Load()
	}
	if total == 0 {
		return math.NaN()
	}
	rank := int64(math.Ceil(q * float64(total)))
	var seen int64
	for i := range h.b {
		seen += h.b[i].Load()
		if seen >= rank {
			if i < 2000 {
				return float64(i)
			}
			return float64(2000 + (i-2000)*50)
		}
	}
	return 200_000
}

type rateStep struct {
	Offered  float64 `json:"offered"`
	SentRate float64 `json:"sent_rate"`
	Sent     int64   `json:"sent"`
	Received int64   `json:"received"`
	LossPct  float64 `json:"loss_pct"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	CPU      stepCPU `json:"cpu"` // over the step and its drain
}

type rateResult struct {
	Sessions int        `json:"sessions"`
	Steps    []rateStep `json:"steps"`
	// Knee: the highest offered rate with loss ≤ max-loss; Limit: why
	// the stepping stopped (loss, generator, steps).
	Knee      float64 `json:"knee"`
	Limit     string  `json:"limit"`
	SetupSecs float64 `json:"setup_s"`
}

func cmdRelayRate(args []string) error {
	fs := flag.NewFlagSet("relayrate", flag.ContinueOnError)
	server := fs.String("server", vethServerIP+":3478", "TURN server address")
	bind := fs.String("bind", vethClientIP, "the clients' address")
	secret := fs.String("secret", "", "TURN REST secret (or $BENCH_TURN_SECRET)")
	sessions := fs.Int("sessions", 100, "sessions (even: they pair up)")
	size := fs.Int("size", 100, "payload bytes")
	rates := fs.String("rates", "5000,10000,20000,40000,60000,80000,100000,130000,160000,200000,250000,320000,400000,500000,600000,750000,900000", "offered rates, msgs/s in total, ascending")
	step := fs.Duration("step", 2*time.Second, "how long each rate is offered")
	maxLoss := fs.Float64("max-loss", 0.1, "loss in percent that ends the stepping")
	burst := fs.Int("burst", 1, "datagrams a session sends back to back before the next session's (a video frame's packets)")
	gso := fs.Bool("gso", false, "send a session's burst as one UDP_SEGMENT message (one system call per burst)")
	serverPID := fs.Int("server-pid", 0, "the server's PID, for its CPU per step (0: not measured)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var offered []float64
	for _, f := range strings.Split(*rates, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x <= 0 {
			return fmt.Errorf("relayrate: rate %q", f)
		}
		offered = append(offered, x)
	}
	if *sessions < 2 || *sessions%2 != 0 || *size < 12 || len(offered) > 20 || *burst < 1 || *burst > 64 {
		return errors.New("relayrate: want an even number of sessions ≥ 2, size ≥ 12, at most 20 rates, a burst of 1–64")
	}
	if err := raiseNoFile(uint64(*sessions) + 1024); err != nil {
		return err
	}
	srvAddr, err := net.ResolveUDPAddr("udp4", *server)
	if err != nil {
		return err
	}
	srvAP := srvAddr.AddrPort()
	sec := secretFlag(*secret)
	start := time.Now()
	ss := make([]*rawSession, *sessions)
	for i := range ss {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(*bind)})
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetReadBuffer(1 << 20)
		user, pass := restCredential(sec, fmt.Sprintf("rate%d", i), time.Now())
		ss[i] = &rawSession{conn: c, server: srvAddr, user: user, pass: pass}
	}
	if err := parallel(len(ss), 16, func(i int) error { return ss[i].allocate() }); err != nil {
		return err
	}
	for i := range ss {
		ss[i].partnerRelay = ss[i^1].relay
	}
	if err := parallel(len(ss), 16, func(i int) error { return ss[i].bind() }); err != nil {
		return err
	}
	setup := time.Since(start)

	// Receivers: one per session socket, until the sockets close.
	base := time.Now()
	recvd := make([]atomic.Int64, len(offered)+1) // index 0: the warm-up
	hists := make([]latencyHist, len(offered)+1)
	var wg sync.WaitGroup
	for _, s := range ss {
		br, err := newBatchReader(s.conn)
		if err != nil {
			return err
		}
		wg.Go(func() {
			_ = br.read(func(buf []byte) {
				if len(buf) < 16 || binary.BigEndian.Uint16(buf[0:2]) != rateChannel {
					return
				}
				st := int(binary.BigEndian.Uint32(buf[4:8]))
				if st >= len(recvd) {
					return
				}
				sent := time.Duration(binary.BigEndian.Uint64(buf[8:16]))
				recvd[st].Add(1)
				hists[st].add(time.Since(base) - sent)
			})
		})
	}
	// The sender: rate r for d, round-robin over the sessions, paced per
	// millisecond.
	msgLen := 4 + *size
	gw := newGSOWriter(msgLen)
	for k := range 64 {
		msg := gw.buf[k*msgLen:]
		binary.BigEndian.PutUint16(msg[0:2], rateChannel)
		binary.BigEndian.PutUint16(msg[2:4], uint16(*size))
	}
	next, inBurst := 0, 0
	send := func(st int, r float64, d time.Duration) (int64, time.Duration) {
		for k := range 64 {
			binary.BigEndian.PutUint32(gw.buf[k*msgLen+4:], uint32(st))
		}
		t0 := time.Now()
		var sent int64
		for {
			el := time.Since(t0)
			if el >= d {
				return sent, el
			}
			due := int64(r * el.Seconds())
			for sent < due {
				s := ss[next]
				k := 1
				if *gso {
					k = int(min(int64(*burst-inBurst), due-sent))
				}
				if inBurst += k; inBurst >= *burst {
					next, inBurst = (next+1)%len(ss), 0
				}
				now := uint64(time.Since(base))
				for j := range k {
					binary.BigEndian.PutUint64(gw.buf[j*msgLen+8:], now)
				}
				_ = gw.send(s.conn, k, msgLen, srvAP) // an error (a full socket buffer) is loss: counted as offered
				sent += int64(k)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	drain := func() { time.Sleep(300 * time.Millisecond) }
	send(0, offered[0], time.Second) // warm-up: the channels settle (the kernel's maps, caches)
	drain()
	res := rateResult{Sessions: len(ss), SetupSecs: setup.Seconds(), Limit: "steps"}
	for i, r := range offered {
		st := i + 1
		c0, err := takeCPUSample(*serverPID)
		if err != nil {
			return err
		}
		t0 := time.Now()
		sent, el := send(st, r, *step)
		drain()
		c1, err := takeCPUSample(*serverPID)
		if err != nil {
			return err
		}
		cpu := cpuBetween(c0, c1, time.Since(t0).Seconds())
		got := recvd[st].Load()
		step := rateStep{
			Offered: r, SentRate: float64(sent) / el.Seconds(), Sent: sent, Received: got,
			LossPct: 100 * float64(sent-min(got, sent)) / float64(max(sent, 1)),
			P50us:   hists[st].quantile(0.50), P99us: hists[st].quantile(0.99), CPU: cpu,
		}
		res.Steps = append(res.Steps, step)
		if step.LossPct > *maxLoss {
			res.Limit = "loss"
			break
		}
		if step.SentRate < 0.9*r {
			res.Limit = "generator" // it could not offer the rate: the knee is above
			res.Knee = step.SentRate
			break
		}
		res.Knee = r
	}
	for _, s := range ss {
		_ = s.conn.Close()
	}
	wg.Wait()
	return printJSON(res)
}

// parallel runs fn(0..n-1) on workers goroutines; the first error wins.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || first.Load() != nil {
					return
				}
				if err := fn(i); err != nil {
					first.CompareAndSwap(nil, fmt.Errorf("session %d: %w", i, err))
				}
			}
		})
	}
	wg.Wait()
	if err, _ := first.Load().(error); err != nil {
		return err
	}
	return nil
}
