package turnserver

import "testing"

// TestSetRateLimits: a limit turned on while serving (a reload) applies to
// the next responses, and turned off again lets every one through.
func TestSetRateLimits(t *testing.T) {
	r := startRelay(t, relayOptions{})
	if got := unauthenticatedAllocates(t, "127.0.0.1", r.udp, 20); got != 20 {
		t.Fatalf("limit off: %d of 20 error responses", got)
	}
	r.srv.SetRateLimits(ErrorRate{PerSecond: 1, Burst: 5}, ErrorRate{})
	got := unauthenticatedAllocates(t, "127.0.0.1", r.udp, 50)
	if got < 5 || got > 8 {
		t.Fatalf("after SetRateLimits(1/s, burst 5): %d error responses to 50, want the burst of 5 (+ refill)", got)
	}
	r.srv.SetRateLimits(ErrorRate{}, ErrorRate{})
	if got := unauthenticatedAllocates(t, "127.0.0.1", r.udp, 20); got != 20 {
		t.Fatalf("limit off again: %d of 20 error responses", got)
	}
}
