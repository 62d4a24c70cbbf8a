package credentials

import (
	"errors"
	"testing"
	"time"
)

// FuzzParseUsername feeds ParseUsername untrusted usernames, as a TURN
// client would. It must never panic, must fail only with ErrMalformed, and
// whatever it accepts must format back to a username that parses to the same
// claims and is no longer than the input (only leading zeros of the expiry
// are dropped).
func FuzzParseUsername(f *testing.F) {
	for _, seed := range []string{
		vecCallUser, vecCompatUser, vecSynapseUser, vecK2User,
		"", ":", ".:", "0:a", "01732500000:bob", "999999999999:bob", "1234567890123:bob",
		"1732500000.:bob", "1732500000.k1", "1732500000.k1.k2:bob",
		"1732500000:call-", "1732500000:call-xyz", "1732500000:call-abc:", "1732500000:call-abc:call-def:x",
		"1732500000:calls:x", "1732500000:bob\xff", "1732500000:bob\x7f", "1732500000:@ålice:exämple.org",
		"253402300799:bob", "253402300800:bob", "1732500000:bob\u0085", "1732500000:bob\u202e", "1732500000:@bob🙂:example.org",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseUsername(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseUsername(%q) error %v does not wrap ErrMalformed", s, err)
			}
			return
		}
		if c.Expires.Location() != time.UTC || c.Expires.Nanosecond() != 0 {
			t.Fatalf("ParseUsername(%q).Expires = %v, want UTC whole seconds", s, c.Expires)
		}
		u := c.Username()
		if len(u) > len(s) {
			t.Fatalf("ParseUsername(%q).Username() = %q is longer than the input", s, u)
		}
		again, err := ParseUsername(u)
		if err != nil {
			t.Fatalf("ParseUsername(%q) = %+v, but its Username() %q does not parse: %v", s, c, u, err)
		}
		if !sameClaims(again, c) {
			t.Fatalf("round trip of %q through %q\n got %+v\nwant %+v", s, u, again, c)
		}
	})
}
