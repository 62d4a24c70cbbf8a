package authservice

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestVerifyBounded: with every slot taken, a verification waits at most
// its time limit and asks no homeserver.
func TestVerifyBounded(t *testing.T) {
	v := newVerifier(map[string]string{"hs.example": "http://127.0.0.1:1"}, nil, 50*time.Millisecond, nil)
	for range cap(v.inFlight) {
		v.inFlight <- struct{}{}
	}
	start := time.Now()
	if _, err := v.Verify(context.Background(), "hs.example", "t"); !errors.Is(err, errBusy) {
		t.Fatalf("Verify = %v, want errBusy", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("waited %s for a slot", d)
	}
}

func TestExplicitAddr(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"example.org", "", false},
		{"example.org:8443", "example.org:8443", true},
		{"1.2.3.4", "1.2.3.4:8448", true},
		{"[::1]", "[::1]:8448", true},
		{"[::1]:99", "[::1]:99", true},
	} {
		got, ok := explicitAddr(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("explicitAddr(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []string{"", "a/b", "a b", "x?y", "@u:x"} {
		if validServerName(bad) {
			t.Errorf("validServerName(%q) = true", bad)
		}
	}
}
