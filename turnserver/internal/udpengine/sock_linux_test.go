//go:build !icebox_portable

package udpengine

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

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
