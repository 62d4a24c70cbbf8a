package credentials

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSecurityUsernameGrammar: usernames whose user part carries C1 control
// characters (U+0080–U+009F: NEL, CSI…, which terminals and some log
// viewers act on) or invisible format characters, and expiries past the
// year 9999 (twelve digits reached the year 33658), are malformed; the
// usernames Synapse, Dendrite and coturn clients send still parse.
func TestSecurityUsernameGrammar(t *testing.T) {
	const prefix = "credentials: malformed username: "
	refused := []struct {
		name, in, want string
	}{
		{"C1 NEL", "1732500000:bob\u0085", "user contains a control character"},
		{"C1 CSI", "1732500000:\u009b31mbob", "user contains a control character"},
		{"C1 first", "1732500000:bob\u0080", "user contains a control character"},
		{"C1 last", "1732500000:bob\u009f", "user contains a control character"},
		{"C1 after call id", "1732500000.k1:call-c1:@alice\u0085:example.org", "user contains a control character"},
		{"C1 byte alone", "1732500000:bob\x85", "user is not valid UTF-8"},
		{"right-to-left override", "1732500000:@alice\u202e:example.org", "user contains a non-printable character"},
		{"zero width space", "1732500000:@al\u200bice:example.org", "user contains a non-printable character"},
		{"line separator", "1732500000:bob\u2028INFO forged", "user contains a non-printable character"},
		{"no-break space", "1732500000:bob\u00a0smith", "user contains a non-printable character"},
		{"unassigned code point", "1732500000:bob\u0378", "user contains a non-printable character"},
		{"private use", "1732500000:bob\ue000", "user contains a non-printable character"},
		{"expiry year 10000", "253402300800:bob", "expiry is after the year 9999"},
		{"expiry year 33658", "999999999999:bob", "expiry is after the year 9999"},
		{"expiry year 33658 with kid", "999999999999.k1:bob", "expiry is after the year 9999"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseUsername(tt.in)
			if err == nil {
				t.Fatalf("ParseUsername(%q) = %+v, want error %q", tt.in, got, prefix+tt.want)
			}
			if !errors.Is(err, ErrMalformed) || err.Error() != prefix+tt.want {
				t.Errorf("ParseUsername(%q) error\n got %v\nwant %q", tt.in, err, prefix+tt.want)
			}
		})
	}

	accepted := []string{
		"1732500000:@alice:example.org",            // Synapse, Dendrite: the Matrix user ID
		"1732500000:alice",                         // coturn's turnutils_uclient -u alice
		"1732500000.k1:call-c1:@alice:example.org", // icebox per-call
		"1732500000:@ålice:exämple.org",
		"1732500000:@bob🙂:example.org",
		"1732500000:bob smith",
		"1732500000:=;,+/_-.[]",
		"253402300799:bob", // the last second of the year 9999
	}
	for _, in := range accepted {
		if _, err := ParseUsername(in); err != nil {
			t.Errorf("ParseUsername(%q): %v, want it accepted", in, err)
		}
	}
}

// TestSecurityFarExpiry: a correctly signed username that expires more than
// MaxValidity (10 years) after the keyring's clock is refused by Lookup and
// Verify; Mint refuses such a TTL.
func TestSecurityFarExpiry(t *testing.T) {
	now := vecTime()
	k := mustKeyring(t, newClock(now).now, k1(true))
	for _, tt := range []struct {
		name    string
		expires time.Time
		want    string
	}{
		{"ten years and a second", now.Add(MaxValidity + time.Second),
			prefix() + "expiry 2034-11-23T02:00:01Z is more than 10 years ahead"},
		{"year 9999", time.Unix(253402300799, 0).UTC(),
			prefix() + "expiry 9999-12-31T23:59:59Z is more than 10 years ahead"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			username := strconv.FormatInt(tt.expires.Unix(), 10) + ".k1:bob"
			password := Password([]byte(secret1), username)
			if _, _, err := k.Lookup(username); !errors.Is(err, ErrMalformed) || err.Error() != tt.want {
				t.Errorf("Lookup(%q) error\n got %v\nwant %q", username, err, tt.want)
			}
			if _, err := k.Verify(username, password); !errors.Is(err, ErrMalformed) || err.Error() != tt.want {
				t.Errorf("Verify(%q) error\n got %v\nwant %q", username, err, tt.want)
			}
		})
	}
	// Exactly MaxValidity ahead is still good.
	username := strconv.FormatInt(now.Add(MaxValidity).Unix(), 10) + ".k1:bob"
	if _, err := k.Verify(username, Password([]byte(secret1), username)); err != nil {
		t.Errorf("Verify(%q): %v, want it accepted", username, err)
	}

	_, err := k.Mint(Subject{User: "bob"}, MaxValidity+time.Second)
	const wantMint = "credentials: mint: ttl 87600h0m1s is longer than 10 years"
	if err == nil || err.Error() != wantMint {
		t.Errorf("Mint with a TTL past MaxValidity: error %v, want %q", err, wantMint)
	}
	if err != nil && strings.Contains(err.Error(), secret1) {
		t.Error("error text contains the secret")
	}
	if _, err := k.Mint(Subject{User: "bob"}, MaxValidity); err != nil {
		t.Errorf("Mint with a TTL of MaxValidity: %v", err)
	}
}

func prefix() string { return "credentials: malformed username: " }
