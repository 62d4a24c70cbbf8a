package turnserver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// unauthenticatedAllocates sends n Allocate requests without credentials
// from one socket and counts the error responses that come back.
func unauthenticatedAllocates(t *testing.T, from, server string, n int) int {
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}
	return countAnswers(t, from, server, n, func() []byte {
		return stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), transport, stun.Fingerprint).Raw
	}, isSTUNErrorResponse)
}

// bindings sends n Binding requests from one socket and counts the success
// responses that come back.
func bindings(t *testing.T, from, server string, n int) int {
	return countAnswers(t, from, server, n, func() []byte {
		return stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint).Raw
	}, isSTUNBindingSuccess)
}

// countAnswers sends n requests built by req from one socket bound to from
// and counts the responses that match.
func countAnswers(t *testing.T, from, server string, n int, req func() []byte, match func([]byte) bool) (got int) {
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
	for range n {
		if _, err := conn.WriteTo(req(), to); err != nil {
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
			return got
		}
		if match(buf[:k]) {
			got++
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

// TestSecurityBindingResponsesRateLimited: Binding success responses (2–3
// times their request) have a budget per source of their own, apart from
// the error responses'. Before, every Binding was answered.
func TestSecurityBindingResponsesRateLimited(t *testing.T) {
	r := startRelay(t, relayOptions{errorRate: ErrorRate{PerSecond: 1, Burst: 5}, bindingRate: ErrorRate{PerSecond: 1, Burst: 10}})
	got := bindings(t, "127.0.0.1", r.udp, 60)
	if got < 10 || got > 13 {
		t.Fatalf("got %d Binding responses to 60 requests, want the burst of 10 (+ refill)", got)
	}
	if dropped := r.counter(t, "icebox_turn_binding_responses_dropped_total"); dropped < 47 {
		t.Fatalf("binding dropped counter = %v, want >= 47", dropped)
	}
	// The error budget is untouched by the Bindings.
	if n := unauthenticatedAllocates(t, "127.0.0.1", r.udp, 5); n != 5 {
		t.Fatalf("got %d of 5 error responses after the Bindings", n)
	}
	t.Logf("60 Bindings from one source: %d answered, %v dropped", got, r.counter(t, "icebox_turn_binding_responses_dropped_total"))
}

// TestSecurityReflectionBudgetPerIPv6Prefix: one budget per IPv6 /64 (an
// attacker holds a whole /64), one per IPv4 address.
func TestSecurityReflectionBudgetPerIPv6Prefix(t *testing.T) {
	l := newSourceLimiter(ErrorRate{PerSecond: 1, Burst: 3})
	now := time.Now()
	answered := 0
	for i := range 64 {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(i)})
		for range 3 {
			if l.allow(src, now) {
				answered++
			}
		}
	}
	if answered != 3 {
		t.Fatalf("64 addresses of one /64 got %d answers, want one burst of 3", answered)
	}
	if !l.allow(netip.MustParseAddr("2001:db8:0:2::1"), now) {
		t.Fatal("another /64 shares the first one's budget")
	}
	if !l.allow(netip.MustParseAddr("192.0.2.1"), now) || !l.allow(netip.MustParseAddr("192.0.2.2"), now) {
		t.Fatal("IPv4 addresses share a budget")
	}
	one := newSourceLimiter(ErrorRate{PerSecond: 1, Burst: 1})
	if !one.allow(netip.MustParseAddr("::ffff:192.0.2.3"), now) || one.allow(netip.MustParseAddr("192.0.2.3"), now) {
		t.Fatal("an IPv4-mapped source has a budget apart from its IPv4 address")
	}
	t.Logf("64 addresses of one /64, 3 requests each: %d answered", answered)
}

func TestReflectionLimiterBounded(t *testing.T) {
	l := newSourceLimiter(ErrorRate{PerSecond: 1, Burst: 1})
	now := time.Now()
	for i := range maxTrackedSources + 10 {
		l.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
	}
	if n := len(l.m); n > maxTrackedSources {
		t.Fatalf("limiter tracks %d sources, bound %d", n, maxTrackedSources)
	}
}
