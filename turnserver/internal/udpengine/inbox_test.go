package udpengine

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestInbox: datagrams come out in order and as copies; a full queue
// refuses; the reader's deadline and the socket's close end a wait.
func TestInbox(t *testing.T) {
	q := NewInbox(3)
	from := netip.MustParseAddrPort("192.0.2.1:5")
	buf := []byte("a")
	for i := range 3 {
		buf[0] = byte('a' + i)
		if !q.Push(buf, from) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.Push(buf, from) {
		t.Fatal("a fourth datagram was queued past the limit of 3")
	}
	for i := range 3 {
		p, err := q.Read()
		if err != nil || string(p.Data) != string(rune('a'+i)) || p.From != from {
			t.Fatalf("read %d = %q from %v, %v", i, p.Data, p.From, err)
		}
	}
	q.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := q.Read(); !errors.As(err, new(net.Error)) || !err.(net.Error).Timeout() {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	q.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		q.Discard()
	}()
	if _, err := q.Read(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v, want net.ErrClosed", err)
	}
}

// TestInboxBoundedWhileReaderLags: a reader that never catches up does
// not make the queue's memory grow with the traffic.
func TestInboxBoundedWhileReaderLags(t *testing.T) {
	const limit = 100
	q := NewInbox(limit)
	from := netip.MustParseAddrPort("192.0.2.1:5")
	for range limit - 1 {
		q.Push([]byte("x"), from)
	}
	for i := range 100 * limit {
		if !q.Push([]byte("x"), from) {
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
