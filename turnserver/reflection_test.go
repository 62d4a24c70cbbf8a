package turnserver

import (
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// unauthenticatedAllocates sends n Allocate requests without credentials
// from one socket and counts the error responses that come back.
func unauthenticatedAllocates(t *testing.T, from, server string, n int) (errors int) {
	t.Helper()
	conn, err := net.ListenPacket("udp4", from+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	to, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	for range n {
		msg := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport, stun.Fingerprint)
		if _, err := conn.WriteTo(msg.Raw, to); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	for {
		// Every response that will come has come once the socket is quiet
		// for this long (loopback answers in microseconds).
		if err := conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		k, _, err := conn.ReadFrom(buf)
		if err != nil {
			return errors
		}
		if isSTUNErrorResponse(buf[:k]) {
			errors++
		}
	}
}

func TestErrorResponsesRateLimitedPerSource(t *testing.T) {
	r := startRelay(t, relayOptions{errorRate: ErrorRate{PerSecond: 1, Burst: 5}})
	got := unauthenticatedAllocates(t, "127.0.0.1", r.udp, 50)
	// The burst, plus at most a couple refilled during the send.
	if got < 5 || got > 8 {
		t.Fatalf("got %d error responses to 50 unauthenticated Allocates, want the burst of 5 (+ refill)", got)
	}
	if dropped := r.counter(t, "icebox_turn_error_responses_dropped_total"); dropped < 42 {
		t.Fatalf("dropped counter = %v, want >= 42", dropped)
	}
	// Another source address has its own budget (the limit is per IP: the
	// victim of a reflection is an address, whatever the port).
	if got := unauthenticatedAllocates(t, "127.0.0.2", r.udp, 3); got != 3 {
		t.Fatalf("a second source got %d of 3 error responses", got)
	}
}

func TestErrorResponsesUnlimitedWhenOff(t *testing.T) {
	r := startRelay(t, relayOptions{})
	if got := unauthenticatedAllocates(t, "127.0.0.1", r.udp, 50); got != 50 {
		t.Fatalf("got %d of 50 error responses with the limit off", got)
	}
}

func TestIsSTUNErrorResponse(t *testing.T) {
	build := func(class stun.MessageClass) []byte {
		return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, class)).Raw
	}
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"error response", build(stun.ClassErrorResponse), true},
		{"success response", build(stun.ClassSuccessResponse), false},
		{"request", build(stun.ClassRequest), false},
		{"indication", build(stun.ClassIndication), false},
		{"channel data", append([]byte{0x40, 0x00, 0x00, 0x10}, make([]byte, 16)...), false},
		{"short", []byte{0x01, 0x13}, false},
	} {
		if got := isSTUNErrorResponse(tc.p); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func BenchmarkErrorLimitedWriteDataPath(b *testing.B) {
	// The check every relayed packet to a client pays.
	p := append([]byte{0x40, 0x00, 0x00, 0x64}, make([]byte, 100)...)
	b.ReportAllocs()
	for b.Loop() {
		if isSTUNErrorResponse(p) {
			b.Fatal("channel data taken for an error")
		}
	}
}
