package credentials

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Test vectors. The passwords were computed once, outside Go, with
//
//	import hmac, hashlib, base64
//	def pw(secret, username):
//	    return base64.b64encode(hmac.new(secret.encode(), username.encode(),
//	                                     hashlib.sha1).digest()).decode()
const (
	secret1 = "icebox-test-secret-0123456789"     // kid "k1"
	secret2 = "icebox-test-secret-new-abcdefghij" // kid "k2"

	vecExpiry = 1732500000 // 2024-11-25T02:00:00Z
	vecCallID = "3f1c6a1e-7d3b-4a8e-9c1e-0d5b2e6f4a10"

	vecCallUser = "1732500000.k1:call-3f1c6a1e-7d3b-4a8e-9c1e-0d5b2e6f4a10:@alice:example.org"
	vecCallPass = "RB7GQptoXkijCORzDfiLiT+TtJY=" // pw(secret1, vecCallUser)

	vecCompatUser = "1732500000:bob"
	vecCompatPass = "e88RTVkLMXw01YT/XOqs8XU5zNw=" // pw(secret1, vecCompatUser)

	// The Synapse way (synapse/rest/client/voip.py), with its clock at
	// expiry-24h and turn_user_lifetime 24h:
	//
	//	expiry = (self.hs.get_clock().time_msec() + userLifetime) / 1000
	//	username = "%d:%s" % (expiry, requester.user.to_string())
	//	mac = hmac.new(turnSecret.encode(), msg=username.encode(), digestmod=hashlib.sha1)
	//	password = base64.b64encode(mac.digest()).decode("ascii")
	//
	// with turnSecret = secret1 and user_id "@alice:example.org".
	vecSynapseUser = "1732500000:@alice:example.org"
	vecSynapsePass = "7YDE5tOGFPPiIVlDPf1+z4H5u3Y="

	vecK2User     = "1732500000.k2:bob"
	vecK2Pass     = "5P+DTyPm77ZGEXMClOABTVnnaeE=" // pw(secret2, vecK2User)
	vecK2PassByK1 = "UyiPq0aQz0a2KdY9AlfyjXxfxMo=" // pw(secret1, vecK2User): right HMAC, wrong secret
)

func vecTime() time.Time { return time.Unix(vecExpiry, 0).UTC() }

// sameClaims compares claims field by field; Expires must be UTC with no
// sub-second part, as the package promises.
func sameClaims(a, b Claims) bool {
	return a.Expires.Equal(b.Expires) &&
		a.Expires.Location() == time.UTC && b.Expires.Location() == time.UTC &&
		a.Expires.Nanosecond() == 0 && b.Expires.Nanosecond() == 0 &&
		a.KID == b.KID && a.CallID == b.CallID && a.User == b.User
}

func TestPasswordVectors(t *testing.T) {
	tests := []struct {
		secret, username, want string
	}{
		{secret1, vecCallUser, vecCallPass},
		{secret1, vecCompatUser, vecCompatPass},
		{secret1, vecSynapseUser, vecSynapsePass},
		{secret2, vecK2User, vecK2Pass},
		{secret1, vecK2User, vecK2PassByK1},
	}
	for _, tt := range tests {
		if got := Password([]byte(tt.secret), tt.username); got != tt.want {
			t.Errorf("Password(%q, %q) = %q, want %q", tt.secret, tt.username, got, tt.want)
		}
	}
}

func TestParseUsername(t *testing.T) {
	user256 := strings.Repeat("u", 256)
	tests := []struct {
		name, in string
		want     Claims
	}{
		{"compat", vecCompatUser, Claims{Expires: vecTime(), User: "bob"}},
		{"per-call with kid", vecCallUser, Claims{Expires: vecTime(), KID: "k1", CallID: vecCallID, User: "@alice:example.org"}},
		{"synapse matrix id", vecSynapseUser, Claims{Expires: vecTime(), User: "@alice:example.org"}},
		{"kid", "1732500000.k1:bob", Claims{Expires: vecTime(), KID: "k1", User: "bob"}},
		{"kid 16 chars", "1732500000.abcdefghij012345:bob", Claims{Expires: vecTime(), KID: "abcdefghij012345", User: "bob"}},
		{"expiry zero", "0:bob", Claims{Expires: time.Unix(0, 0).UTC(), User: "bob"}},
		{"expiry in the year 9999", "253402300799:bob", Claims{Expires: time.Unix(253402300799, 0).UTC(), User: "bob"}},
		{"expiry 12 digits with leading zeros", "001732500000:bob", Claims{Expires: vecTime(), User: "bob"}},
		{"expiry leading zeros", "01732500000:bob", Claims{Expires: vecTime(), User: "bob"}},
		{"dot in user", "1732500000:bob.smith", Claims{Expires: vecTime(), User: "bob.smith"}},
		{"dot and colon in user after kid", "1732500000.k1:a.b:c", Claims{Expires: vecTime(), KID: "k1", User: "a.b:c"}},
		{"user looks per-call after call id", "1732500000:call-abc:call-def:x", Claims{Expires: vecTime(), CallID: "abc", User: "call-def:x"}},
		{"calls is not call-", "1732500000:calls:x", Claims{Expires: vecTime(), User: "calls:x"}},
		{"prefix is case-sensitive", "1732500000:Call-x", Claims{Expires: vecTime(), User: "Call-x"}},
		{"call id 64 chars", "1732500000:call-" + strings.Repeat("A_-9", 16) + ":bob", Claims{Expires: vecTime(), CallID: strings.Repeat("A_-9", 16), User: "bob"}},
		{"unicode user", "1732500000:@ålice:exämple.org", Claims{Expires: vecTime(), User: "@ålice:exämple.org"}},
		{"space in user", "1732500000:bob smith", Claims{Expires: vecTime(), User: "bob smith"}},
		{"user 256 bytes", "1732500000:" + user256, Claims{Expires: vecTime(), User: user256}},
		{"user 256 bytes per-call with kid", "1732500000.k1:call-c1:" + user256, Claims{Expires: vecTime(), KID: "k1", CallID: "c1", User: user256}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUsername(tt.in)
			if err != nil {
				t.Fatalf("ParseUsername(%q): unexpected error %v", tt.in, err)
			}
			if !sameClaims(got, tt.want) {
				t.Errorf("ParseUsername(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseUsernameErrors(t *testing.T) {
	const prefix = "credentials: malformed username: "
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "no ':' after expiry"},
		{"no colon", "bob", "no ':' after expiry"},
		{"digits only", "1732500000", "no ':' after expiry"},
		{"no expiry", ":bob", "expiry must be 1 to 12 decimal digits"},
		{"no expiry before kid", ".k1:bob", "expiry must be 1 to 12 decimal digits"},
		{"plus sign", "+1732500000:bob", "expiry must be 1 to 12 decimal digits"},
		{"minus sign", "-1:bob", "expiry must be 1 to 12 decimal digits"},
		{"leading space", " 1732500000:bob", "expiry must be 1 to 12 decimal digits"},
		{"trailing space", "1732500000 :bob", "expiry must be 1 to 12 decimal digits"},
		{"hex", "0x10:bob", "expiry must be 1 to 12 decimal digits"},
		{"13 digits", "1234567890123:bob", "expiry must be 1 to 12 decimal digits"},
		{"non-ASCII digits", "١٧٣٢:bob", "expiry must be 1 to 12 decimal digits"},
		{"empty kid", "1732500000.:bob", "key id must match [a-z0-9]{1,16}"},
		{"uppercase kid", "1732500000.K1:bob", "key id must match [a-z0-9]{1,16}"},
		{"dotted kid", "1732500000.k1.k2:bob", "key id must match [a-z0-9]{1,16}"},
		{"kid 17 chars", "1732500000.abcdefghij0123456:bob", "key id must match [a-z0-9]{1,16}"},
		{"kid without colon", "1732500000.k1", "no ':' after key id"},
		{"empty subject", "1732500000:", "user is empty"},
		{"empty subject after kid", "1732500000.k1:", "user is empty"},
		{"call without second colon", "1732500000:call-xyz", "no ':' after call id"},
		{"bare call prefix", "1732500000:call-", "no ':' after call id"},
		{"empty call id", "1732500000:call-:bob", "call id must match [A-Za-z0-9_-]{1,64}"},
		{"space in call id", "1732500000:call-a b:bob", "call id must match [A-Za-z0-9_-]{1,64}"},
		{"dot in call id", "1732500000:call-a.b:bob", "call id must match [A-Za-z0-9_-]{1,64}"},
		{"call id 65 chars", "1732500000:call-" + strings.Repeat("a", 65) + ":bob", "call id must match [A-Za-z0-9_-]{1,64}"},
		{"empty user after call id", "1732500000:call-abc:", "user is empty"},
		{"user 257 bytes", "1732500000:" + strings.Repeat("u", 257), "user is longer than 256 bytes"},
		{"invalid UTF-8", "1732500000:bob\xff", "user is not valid UTF-8"},
		{"newline", "1732500000:bob\nINFO forged log line", "user contains a control character"},
		{"NUL", "1732500000:bob\x00", "user contains a control character"},
		{"DEL", "1732500000:bob\x7f", "user contains a control character"},
		{"tab", "1732500000:bob\t", "user contains a control character"},
		{"514 bytes", "1732500000:" + strings.Repeat("u", 503), "longer than 513 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUsername(tt.in)
			if err == nil {
				t.Fatalf("ParseUsername(%q) = %+v, want error %q", tt.in, got, prefix+tt.want)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("ParseUsername(%q): error %v does not wrap ErrMalformed", tt.in, err)
			}
			if err.Error() != prefix+tt.want {
				t.Errorf("ParseUsername(%q) error\n got %q\nwant %q", tt.in, err, prefix+tt.want)
			}
			if got != (Claims{}) {
				t.Errorf("ParseUsername(%q) = %+v with an error, want zero claims", tt.in, got)
			}
		})
	}
}

func TestClaimsUsername(t *testing.T) {
	tests := []struct {
		in   Claims
		want string
	}{
		{Claims{Expires: vecTime(), User: "bob"}, vecCompatUser},
		{Claims{Expires: vecTime(), KID: "k1", CallID: vecCallID, User: "@alice:example.org"}, vecCallUser},
		{Claims{Expires: vecTime(), User: "@alice:example.org"}, vecSynapseUser},
		{Claims{Expires: vecTime(), KID: "k2", User: "bob"}, vecK2User},
		// A non-UTC expiry formats as the same instant.
		{Claims{Expires: vecTime().In(time.FixedZone("CET", 3600)), User: "bob"}, vecCompatUser},
	}
	for _, tt := range tests {
		if got := tt.in.Username(); got != tt.want {
			t.Errorf("%+v.Username() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUsernameRoundTrip(t *testing.T) {
	claims := []Claims{
		{Expires: vecTime(), User: "bob"},
		{Expires: vecTime(), KID: "k1", User: "bob"},
		{Expires: vecTime(), KID: "k1", CallID: vecCallID, User: "@alice:example.org"},
		{Expires: vecTime(), CallID: "c", User: "call-d:e"},
		{Expires: time.Unix(0, 0).UTC(), KID: "0", CallID: "-", User: ":"},
		{Expires: time.Unix(253402300799, 0).UTC(), KID: "abcdefghij012345", CallID: strings.Repeat("Z", 64), User: strings.Repeat("é", 128)},
	}
	for _, c := range claims {
		u := c.Username()
		got, err := ParseUsername(u)
		if err != nil {
			t.Errorf("ParseUsername(%q): %v", u, err)
			continue
		}
		if !sameClaims(got, c) {
			t.Errorf("ParseUsername(%q)\n got %+v\nwant %+v", u, got, c)
		}
	}
}

func TestReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{ErrMalformed, "malformed"},
		{fmt.Errorf("%w: user is empty", ErrMalformed), "malformed"},
		{ErrUnknownKID, "unknown_kid"},
		{fmt.Errorf("turn auth: %w", ErrUnknownKID), "unknown_kid"},
		{ErrBadPassword, "bad_password"},
		{ErrExpired, "expired"},
		{fmt.Errorf("%w at 2024-11-25T02:00:00Z", ErrExpired), "expired"},
		{errors.New("credentials: malformed username"), "other"}, // same text, not the sentinel
		{errors.New("revoked"), "other"},
	}
	for _, tt := range tests {
		if got := Reason(tt.err); got != tt.want {
			t.Errorf("Reason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
