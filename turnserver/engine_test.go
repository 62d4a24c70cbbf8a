package turnserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// testEngine runs an engine of loops loops for a Server without pion (its
// metrics and the given peer policy only); it stops with the test.
func testEngine(t testing.TB, loops, batch int, policy *Policy) *engine {
	t.Helper()
	s := &Server{log: zerolog.Nop(), policy: policy}
	s.m = newMetrics(prometheus.NewRegistry(), newRegistry(Quotas{}), func() float64 { return 0 })
	e, err := newEngine(s, loops, batch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

// testListener binds a listener socket on 127.0.0.1 (4 MiB buffers) as
// an engineListener of e, not yet served; it closes with the test.
func testListener(t testing.TB, e *engine) *engineListener {
	t.Helper()
	conns, _, err := ListenUDP(context.Background(), "127.0.0.1:0", 1, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	sock, err := adoptUDP(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	l := newEngineListener(e, sock)
	t.Cleanup(func() { l.Close() })
	return l
}

// engineListenerForTest runs an engine with loops loops and one listener
// socket on 127.0.0.1 served by it.
func engineListenerForTest(t testing.TB, loops, batch int) *engineListener {
	t.Helper()
	e := testEngine(t, loops, batch, nil)
	l := testListener(t, e)
	if err := e.addTo(0, l.sock); err != nil {
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
						if _, err := c.WriteTo(make([]byte, recvBufferSize+100), l.LocalAddr()); err != nil {
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

// TestSockaddrRoundTrip: addresses written for the kernel read back the
// same, IPv4 on an IPv6 socket as v4-mapped; an IPv6 address has no form
// on an IPv4 socket.
func TestSockaddrRoundTrip(t *testing.T) {
	var sa [sockaddrLen]byte
	for _, tc := range []struct {
		family int
		in     string
		want   string
	}{
		{unix.AF_INET, "192.0.2.1:3478", "192.0.2.1:3478"},
		{unix.AF_INET, "[::ffff:192.0.2.1]:3478", "192.0.2.1:3478"},
		{unix.AF_INET6, "[2001:db8::1]:443", "[2001:db8::1]:443"},
		{unix.AF_INET6, "192.0.2.1:5", "[::ffff:192.0.2.1]:5"},
	} {
		if putSockaddr(&sa, tc.family, netip.MustParseAddrPort(tc.in)) == 0 {
			t.Fatalf("putSockaddr(%s) refused", tc.in)
		}
		got, ok := parseSockaddr(&sa)
		if !ok || got.String() != tc.want {
			t.Errorf("%s → %v (%v), want %s", tc.in, got, ok, tc.want)
		}
	}
	if putSockaddr(&sa, unix.AF_INET, netip.MustParseAddrPort("[2001:db8::1]:1")) != 0 {
		t.Error("an IPv6 address was written for an IPv4 socket")
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

// BenchmarkSockSendTo: one datagram sent by the fast path's sendTo; it
// allocates nothing.
func BenchmarkSockSendTo(b *testing.B) {
	sock, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"), 4<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer sock.Close()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	go func() { // drain, so the sink's buffer never fills
		buf := make([]byte, 1600)
		for {
			if _, _, err := sink.ReadFromUDPAddrPort(buf); err != nil {
				return
			}
		}
	}()
	payload := make([]byte, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := sock.sendTo(payload, to); err != nil && !errors.Is(err, unix.EAGAIN) {
			b.Fatal(err)
		}
	}
}

// TestPktQueue: datagrams come out in order and as copies; a full queue
// refuses; the reader's deadline and the socket's close end a wait.
func TestPktQueue(t *testing.T) {
	q := newPktQueue(3)
	from := netip.MustParseAddrPort("192.0.2.1:5")
	buf := []byte("a")
	for i := range 3 {
		buf[0] = byte('a' + i)
		if !q.push(buf, from) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push(buf, from) {
		t.Fatal("a fourth datagram was queued past the limit of 3")
	}
	for i := range 3 {
		p, err := q.read()
		if err != nil || string(p.data) != string(rune('a'+i)) || p.from != from {
			t.Fatalf("read %d = %q from %v, %v", i, p.data, p.from, err)
		}
	}
	q.rd.set(time.Now().Add(20 * time.Millisecond))
	if _, err := q.read(); !errors.As(err, new(net.Error)) || !err.(net.Error).Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	q.rd.set(time.Time{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		q.discard()
	}()
	if _, err := q.read(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want net.ErrClosed", err)
	}
}

// TestPktQueueBoundedWhileReaderLags: a reader that never catches up does
// not make the queue's memory grow with the traffic.
func TestPktQueueBoundedWhileReaderLags(t *testing.T) {
	const limit = 100
	q := newPktQueue(limit)
	from := netip.MustParseAddrPort("192.0.2.1:5")
	for range limit - 1 {
		q.push([]byte("x"), from)
	}
	for i := range 100 * limit {
		if !q.push([]byte("x"), from) {
			t.Fatalf("push %d refused with %d queued", i, len(q.q)-q.head)
		}
		if _, ok := q.pop(); !ok {
			t.Fatal("pop found nothing")
		}
	}
	if c := cap(q.q); c > 4*limit {
		t.Fatalf("queue of at most %d datagrams holds room for %d", limit, c)
	}
}
