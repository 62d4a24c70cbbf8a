package turnserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/turnserver/internal/udpengine"
)

// testEngine runs a relay engine of loops loops for a Server without pion
// (its metrics and the given peer policy only), as s.engine; it stops with
// the test.
func testEngine(t testing.TB, loops, batch int, policy *Policy) *Server {
	t.Helper()
	s := &Server{log: zerolog.Nop(), reg: newRegistry(Quotas{})}
	if policy == nil { // the peers are on loopback
		var err error
		if policy, err = NewPolicy(PolicyConfig{AllowLoopback: true}); err != nil {
			t.Fatal(err)
		}
	}
	s.policy.Store(policy)
	s.m = newMetrics(prometheus.NewRegistry(), s.reg, func() float64 { return 0 })
	s.reg.bw.registerMetrics(s.m)
	e, err := udpengine.New(udpengine.Config{Loops: loops, Batch: batch, Log: s.log, SendFailed: s.m.sendFailed})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	s.engine = e
	return s
}

// testListener binds a listener socket on 127.0.0.1 (4 MiB buffers) as
// an engineListener of s, not yet served; it closes with the test.
func testListener(t testing.TB, s *Server) *engineListener {
	t.Helper()
	conns, _, err := ListenUDP(context.Background(), "127.0.0.1:0", 1, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := udpengine.Adopt(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	l := newEngineListener(s.m, sock)
	t.Cleanup(func() { l.Close() })
	return l
}

// engineListenerForTest runs an engine with loops loops and one listener
// socket on 127.0.0.1 served by it.
func engineListenerForTest(t testing.TB, loops, batch int) *engineListener {
	t.Helper()
	s := testEngine(t, loops, batch, nil)
	l := testListener(t, s)
	if err := s.engine.AddTo(0, l.sock, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestEngineListenerReadsEveryDatagram: bursts from several sources, larger
// than one batch, all reach ReadFrom intact with their source; a datagram
// too long for a receive slot is dropped, the ones around it are not.
func TestEngineListenerReadsEveryDatagram(t *testing.T) {
	for _, batch := range []int{1, 8, DefaultRecvBatch} {
		t.Run(fmt.Sprint("batch=", batch), func(t *testing.T) {
			l := engineListenerForTest(t, 2, batch)
			const sources, each = 4, 150
			want := map[string]bool{}
			for s := range sources {
				c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				for i := range each {
					msg := fmt.Appendf(nil, "%s #%d %s", c.LocalAddr(), i, bytes.Repeat([]byte{'x'}, (s*each+i)%300))
					want[string(msg)] = true
					if _, err := c.WriteTo(msg, l.LocalAddr()); err != nil {
						t.Fatal(err)
					}
					if s == 1 && i == 10 {
						if _, err := c.WriteTo(make([]byte, udpengine.RecvBufferSize+100), l.LocalAddr()); err != nil {
							t.Fatal(err)
						}
					}
				}
			}
			buf := make([]byte, 1600)
			_ = l.SetReadDeadline(time.Now().Add(10 * time.Second))
			for range sources * each {
				n, from, err := l.ReadFrom(buf)
				if err != nil {
					t.Fatalf("%d datagrams left: %v", len(want), err)
				}
				msg := string(buf[:n])
				if !want[msg] {
					t.Fatalf("unexpected or repeated datagram of %d bytes", n)
				}
				if src := msg[:len(from.String())]; src != from.String() {
					t.Fatalf("datagram from %s reported from %s", src, from)
				}
				delete(want, msg)
			}
			_ = l.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := l.ReadFrom(buf); err == nil {
				t.Fatalf("one more datagram (%d bytes): the oversized one was not dropped", n)
			} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("ReadFrom past the deadline: %v, want a timeout", err)
			}
		})
	}
}

// TestEngineListenerClose: Close ends a blocked ReadFrom (how pion's read
// loop stops), and the socket refuses to send afterwards.
func TestEngineListenerClose(t *testing.T) {
	l := engineListenerForTest(t, 1, DefaultRecvBatch)
	done := make(chan error, 1)
	go func() {
		_, _, err := l.ReadFrom(make([]byte, 1600))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it block; the outcome does not depend on it
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadFrom after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrom did not return after Close")
	}
	if _, err := l.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v, want net.ErrClosed", err)
	}
}

// BenchmarkEngineListenerReceive: datagrams queued 256 at a time on a
// listener socket, received by the engine and read by pion's ReadFrom
// (the path STUN requests take); per datagram.
func BenchmarkEngineListenerReceive(b *testing.B) {
	l := engineListenerForTest(b, 1, DefaultRecvBatch)
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	payload := make([]byte, 100)
	buf := make([]byte, 1600)
	const burst = 256
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += burst {
		for range burst {
			if _, err := src.WriteTo(payload, l.LocalAddr()); err != nil {
				b.Fatal(err)
			}
		}
		for range burst {
			if _, _, err := l.ReadFrom(buf); err != nil {
				b.Fatal(err)
			}
		}
	}
}
