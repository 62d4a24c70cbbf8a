package turnserver

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// stream is one paced flow of datagrams through the relay, and what
// arrived.
type stream struct {
	name     string
	send     func([]byte) error
	recv     net.PacketConn
	sent     int64
	received int64
	elapsed  time.Duration
}

// Sending rate and payload of the limit tests: 500 datagrams of 1000 bytes
// a second (4 Mbit/s), twice the 2 Mbit/s limits.
const (
	testLimitBPS   = 2_000_000
	testSendBPS    = 4_000_000
	testPayload    = 1000
	testSendFor    = 3 * time.Second
	testLimitBurst = 100 * time.Millisecond
)

// runStreams sends every stream at bps for d at once (paced per 10 ms
// tick) and counts what their receivers get until each has been quiet for
// 300 ms after the senders stopped.
func runStreams(t *testing.T, bps int64, d time.Duration, streams ...*stream) {
	t.Helper()
	perTick := int(bps / 8 / testPayload / 100) // datagrams per 10 ms
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Add(2)
		done := make(chan struct{})
		go func() { // receiver
			defer wg.Done()
			buf := make([]byte, 1600)
			for {
				wait := 2 * time.Second
				select {
				case <-done:
					wait = 300 * time.Millisecond
				default:
				}
				if err := s.recv.SetReadDeadline(time.Now().Add(wait)); err != nil {
					return
				}
				n, _, err := s.recv.ReadFrom(buf)
				if err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						select {
						case <-done:
							return
						default:
							continue
						}
					}
					return
				}
				s.received += int64(n)
			}
		}()
		go func() { // sender
			defer wg.Done()
			defer close(done)
			payload := make([]byte, testPayload)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			start := time.Now()
			for time.Since(start) < d {
				<-tick.C
				for range perTick {
					if err := s.send(payload); err != nil {
						t.Errorf("%s: send: %v", s.name, err)
						return
					}
					s.sent += testPayload
				}
			}
			s.elapsed = time.Since(start)
		}()
	}
	wg.Wait()
}

// bps is the stream's measured throughput.
func (s *stream) bps() float64 { return float64(s.received) * 8 / s.elapsed.Seconds() }

// toPeer is a stream from a client through its allocation to a peer of
// its own; the permission (and the channel) is set up first.
func toPeer(t *testing.T, name string, relay net.PacketConn) *stream {
	t.Helper()
	peer := newPeer(t)
	exchange(t, relay, peer)
	return &stream{name: name, recv: peer, send: func(p []byte) error {
		_, err := relay.WriteTo(p, peer.LocalAddr())
		return err
	}}
}

// fromPeer is a stream from a peer through the allocation to its client.
func fromPeer(t *testing.T, name string, relay net.PacketConn) *stream {
	t.Helper()
	peer := newPeer(t)
	exchange(t, relay, peer)
	return &stream{name: name, recv: relay, send: func(p []byte) error {
		_, err := peer.WriteTo(p, relay.LocalAddr())
		return err
	}}
}

func (r *testRelay) allocate(t *testing.T, user string) net.PacketConn {
	t.Helper()
	cred := r.mint(t, user, "", time.Hour)
	relay, err := r.newClient(t, overUDP, cred.Username, cred.Password, 0).Allocate()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	return relay
}

// within10 fails unless got is within 10 % of want.
func within10(t *testing.T, what string, got, want float64) {
	t.Helper()
	t.Logf("%s: %.0f bit/s (limit %.0f, %+.1f %%)", what, got, want, (got-want)/want*100)
	if got < want*0.9 || got > want*1.1 {
		t.Errorf("%s: %.0f bit/s, want %.0f ± 10 %%", what, got, want)
	}
}

// TestBandwidthLimits sends real traffic through pion's client at twice
// each limit and measures what arrives: within 10 % of the limit, the
// drops counted by the limit that made them, and a user without a limit
// on the same server unaffected.
func TestBandwidthLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("sends for seconds")
	}
	t.Run("allocation", func(t *testing.T) {
		r := startRelay(t, relayOptions{allowLoopback: true,
			bandwidth: Bandwidth{PerAllocation: testLimitBPS, Burst: testLimitBurst}})
		relay := r.allocate(t, "alice")
		up := toPeer(t, "to peer", relay)
		runStreams(t, testSendBPS, testSendFor, up)
		within10(t, "allocation, to peer", up.bps(), testLimitBPS)
		if got := r.counter(t, "icebox_turn_bandwidth_dropped_total", "limit", "allocation", "direction", "to_peer"); got == 0 {
			t.Error("no drop counted for the allocation limit to the peer")
		} else {
			t.Logf("dropped to the peer: %v datagrams of %d sent", got, up.sent/testPayload)
		}
		down := fromPeer(t, "from peer", relay)
		runStreams(t, testSendBPS, testSendFor, down)
		within10(t, "allocation, from peer", down.bps(), testLimitBPS)
		if got := r.counter(t, "icebox_turn_bandwidth_dropped_total", "limit", "allocation", "direction", "from_peer"); got == 0 {
			t.Error("no drop counted for the allocation limit from the peer")
		}
	})
	t.Run("user", func(t *testing.T) {
		r := startRelay(t, relayOptions{allowLoopback: true,
			bandwidth: Bandwidth{PerUser: testLimitBPS, Burst: testLimitBurst}})
		// bob's override lifts his limit: he is the unlimited user.
		if err := r.srv.SetUserBandwidth("bob", 0); err != nil {
			t.Fatal(err)
		}
		if err := r.srv.SetUserBandwidth("bob", -1); err == nil {
			t.Fatal("a negative override was accepted")
		}
		if ub := r.srv.UserBandwidth("bob"); ub.MaxBPS != 0 || !ub.Override || ub.DefaultBPS != testLimitBPS {
			t.Fatalf("UserBandwidth(bob) = %+v", ub)
		}
		// alice's two allocations share her limit, each sending at the
		// limit: twice it together.
		a1 := toPeer(t, "alice 1", r.allocate(t, "alice"))
		a2 := toPeer(t, "alice 2", r.allocate(t, "alice"))
		b := toPeer(t, "bob", r.allocate(t, "bob"))
		runStreams(t, testSendBPS/2, testSendFor, a1, a2, b)
		a1.elapsed = max(a1.elapsed, a2.elapsed)
		a1.received += a2.received
		within10(t, "user alice (two allocations)", a1.bps(), testLimitBPS)
		t.Logf("unlimited user bob: sent %d bytes, %d arrived", b.sent, b.received)
		if float64(b.received) < 0.9*float64(b.sent) {
			t.Errorf("unlimited bob: %d of %d bytes arrived", b.received, b.sent)
		}
		if got := r.counter(t, "icebox_turn_bandwidth_dropped_total", "limit", "user", "direction", "to_peer"); got == 0 {
			t.Error("no drop counted for the user limit")
		}
		// The override can be forgotten again.
		r.srv.ClearUserBandwidth("bob")
		if ub := r.srv.UserBandwidth("bob"); ub.MaxBPS != testLimitBPS || ub.Override {
			t.Fatalf("UserBandwidth(bob) after Clear = %+v", ub)
		}
	})
	t.Run("total", func(t *testing.T) {
		r := startRelay(t, relayOptions{allowLoopback: true,
			bandwidth: Bandwidth{Total: testLimitBPS, Burst: testLimitBurst}})
		a := toPeer(t, "alice", r.allocate(t, "alice"))
		b := toPeer(t, "bob", r.allocate(t, "bob"))
		runStreams(t, testSendBPS/2, testSendFor, a, b)
		a.elapsed = max(a.elapsed, b.elapsed)
		a.received += b.received
		within10(t, "total (two users)", a.bps(), testLimitBPS)
		if got := r.counter(t, "icebox_turn_bandwidth_dropped_total", "limit", "total", "direction", "to_peer"); got == 0 {
			t.Error("no drop counted for the total limit")
		}
	})
}

func TestBandwidthConfig(t *testing.T) {
	if _, err := newLimiter(Bandwidth{PerUser: -1}); err == nil {
		t.Fatal("a negative limit was accepted")
	}
	l, err := newLimiter(Bandwidth{})
	if err != nil || l.on.Load() || l.burst.Load() != DefaultBandwidthBurst.Nanoseconds() {
		t.Fatalf("newLimiter(zero) = on %v burst %v, %v", l.on.Load(), l.burst.Load(), err)
	}
}

// TestSetBandwidth: a reload's limits reach live allocations, their users
// (unless overridden) and the total at once.
func TestSetBandwidth(t *testing.T) {
	r := startRelay(t, relayOptions{allowLoopback: true})
	r.allocate(t, "alice")
	r.allocate(t, "bob")
	if err := r.srv.SetUserBandwidth("bob", 64_000); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.SetBandwidth(Bandwidth{PerAllocation: 8_000_000, PerUser: 16_000_000, Total: -1}); err == nil {
		t.Fatal("a negative total was accepted")
	}
	if err := r.srv.SetBandwidth(Bandwidth{PerAllocation: 8_000_000, PerUser: 16_000_000, Total: 80_000_000, Burst: time.Second}); err != nil {
		t.Fatal(err)
	}
	bw := r.srv.reg.bw
	if !bw.on.Load() || bw.burst.Load() != int64(time.Second) || bw.total[dirToPeer].rate.Load() != 10_000_000 {
		t.Fatalf("limiter after SetBandwidth: on %v burst %v total %v B/s", bw.on.Load(), bw.burst.Load(), bw.total[dirToPeer].rate.Load())
	}
	r.srv.reg.mu.Lock()
	defer r.srv.reg.mu.Unlock()
	for _, a := range r.srv.reg.byID {
		want := int64(2_000_000) // 16 Mbit/s
		if a.user == "bob" {
			want = 8_000 // his override, 64 kbit/s
		}
		if got := a.bw[dirFromPeer].rate.Load(); got != 1_000_000 {
			t.Errorf("%s's allocation: %d B/s, want 1000000", a.user, got)
		}
		if got := a.userBW.dir[dirToPeer].rate.Load(); got != want {
			t.Errorf("%s's user bucket: %d B/s, want %d", a.user, got, want)
		}
	}
}

// TestBucket: a bucket lets its burst through at once, then its rate.
func TestBucket(t *testing.T) {
	var b bucket
	b.setBPS(8000) // 1000 bytes/s
	burst := (100 * time.Millisecond).Nanoseconds()
	now := int64(time.Hour)
	admitted := 0
	for range 100 {
		if ok, _ := b.take(10, now, burst); ok {
			admitted++
		}
	}
	// 100 ms of burst is 100 bytes, plus the datagram that reaches it.
	if admitted != 11 {
		t.Fatalf("admitted %d datagrams of 10 bytes at once, want 11", admitted)
	}
	// A quiet second refills the burst, no more.
	now += int64(time.Second)
	admitted = 0
	for range 200 {
		if ok, _ := b.take(10, now, burst); ok {
			admitted++
		}
	}
	if admitted != 11 {
		t.Fatalf("admitted %d after a quiet second, want the burst again (11)", admitted)
	}
	// Offered ten times the rate for a second: the rate (100 datagrams)
	// passes, plus what was left of the burst.
	admitted = 0
	for range 1000 {
		now += int64(time.Millisecond)
		if ok, _ := b.take(10, now, burst); ok {
			admitted++
		}
	}
	if admitted < 99 || admitted > 101 {
		t.Fatalf("admitted %d of 10 bytes in a second at 1000 bytes/s, want 100", admitted)
	}
	var unlimited bucket
	if ok, c := unlimited.take(1<<16, now, 0); !ok || c != 0 {
		t.Fatal("an unlimited bucket refused")
	}
}

// BenchmarkBandwidthAdmit: the limiter's cost per datagram without the
// sockets around it: off (no limit configured: one atomic load), and with
// all three limits on (none refusing), given the engine round's time or
// reading the clock (pion's path).
func BenchmarkBandwidthAdmit(b *testing.B) {
	const huge = 1 << 50
	for _, bc := range []struct {
		name  string
		bw    Bandwidth
		clock bool
	}{
		{"off", Bandwidth{}, false},
		{"on", Bandwidth{PerAllocation: huge, PerUser: huge, Total: huge}, false},
		{"on+clock", Bandwidth{PerAllocation: huge, PerUser: huge, Total: huge}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := newLimiter(bc.bw)
			if err != nil {
				b.Fatal(err)
			}
			s := testEngine(b, 1, 1, nil)
			l.registerMetrics(s.m)
			a := &allocation{user: "bench"}
			l.attach(a)
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				if bc.clock {
					now = time.Now()
				}
				if l.on.Load() && !l.admit(a, dirToPeer, 1000, now) {
					b.Fatal("refused")
				}
			}
		})
	}
}
