package credentials

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is an injected, settable clock. Tests set it between calls only,
// never while another goroutine reads it.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newClock(t time.Time) *clock { return &clock{t: t} }

func k1(compat bool) Secret { return Secret{KID: "k1", Key: []byte(secret1), Compat: compat} }
func k2(compat bool) Secret { return Secret{KID: "k2", Key: []byte(secret2), Compat: compat} }

func mustKeyring(t testing.TB, now func() time.Time, secrets ...Secret) *Keyring {
	t.Helper()
	k, err := NewKeyring(secrets, now)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

// checkNoSecrets fails if an error text carries a password or key.
func checkNoSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range []string{secret1, secret2, vecCallPass, vecCompatPass, vecSynapsePass, vecK2Pass, vecK2PassByK1} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a secret or password", err)
		}
	}
}

func TestNewKeyringErrors(t *testing.T) {
	tests := []struct {
		name    string
		secrets []Secret
		want    string
	}{
		{"none", nil, "credentials: keyring needs at least one secret"},
		{"empty kid", []Secret{{KID: "", Key: []byte(secret1)}}, "credentials: secrets[0]: key id must match [a-z0-9]{1,16}"},
		{"uppercase kid", []Secret{{KID: "K1", Key: []byte(secret1)}}, "credentials: secrets[0]: key id must match [a-z0-9]{1,16}"},
		{"key pasted as kid", []Secret{k1(false), {KID: secret2, Key: []byte(secret2)}}, "credentials: secrets[1]: key id must match [a-z0-9]{1,16}"},
		{"duplicate kid", []Secret{k1(false), k2(false), {KID: "k1", Key: []byte(secret2)}}, `credentials: secrets[2]: key id "k1" already used by secrets[0]`},
		{"short key", []Secret{{KID: "k1", Key: []byte("0123456789abcde")}}, `credentials: secrets[0]: key "k1" is 15 bytes, need at least 16`},
		{"nil key", []Secret{k1(false), {KID: "k2"}}, `credentials: secrets[1]: key "k2" is 0 bytes, need at least 16`},
		{"two compat", []Secret{k1(true), k2(true)}, `credentials: secrets[1]: key "k2" is compat, but secrets[0] already is; at most one may be`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := NewKeyring(tt.secrets, nil)
			if err == nil {
				t.Fatalf("NewKeyring = %v, want error %q", k, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("NewKeyring error\n got %q\nwant %q", err, tt.want)
			}
			checkNoSecrets(t, err)
		})
	}
}

func TestKeyringAccessors(t *testing.T) {
	tests := []struct {
		name       string
		secrets    []Secret
		active     string
		kids       []string
		compatKID  string
		compatUser bool // whether a kid-less username is looked up
	}{
		{"one compat", []Secret{k1(true)}, "k1", []string{"k1"}, "k1", true},
		{"one plain", []Secret{k1(false)}, "k1", []string{"k1"}, "", false},
		{"rotated, old is compat", []Secret{k2(false), k1(true)}, "k2", []string{"k2", "k1"}, "k1", true},
		{"rotated, new is compat", []Secret{k2(true), k1(false)}, "k2", []string{"k2", "k1"}, "k2", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKeyring(t, nil, tt.secrets...)
			if got := k.ActiveKID(); got != tt.active {
				t.Errorf("ActiveKID() = %q, want %q", got, tt.active)
			}
			if got := k.KIDs(); strings.Join(got, ",") != strings.Join(tt.kids, ",") {
				t.Errorf("KIDs() = %q, want %q", got, tt.kids)
			}
			if got := k.CompatKID(); got != tt.compatKID {
				t.Errorf("CompatKID() = %q, want %q", got, tt.compatKID)
			}
			_, _, err := k.Lookup("1732500000:bob")
			if got := err == nil; got != tt.compatUser {
				t.Errorf("Lookup(compat username) error = %v, want looked up: %t", err, tt.compatUser)
			}
		})
	}
}

func TestKeyringIsImmutable(t *testing.T) {
	key := []byte(secret1)
	secrets := []Secret{{KID: "k1", Key: key, Compat: true}}
	k := mustKeyring(t, newClock(vecTime().Add(-time.Hour)).now, secrets...)

	// The caller wipes its copy of the key and reuses its slice.
	for i := range key {
		key[i] = 0
	}
	secrets[0].KID = "zz"
	k.KIDs()[0] = "yy"

	if _, err := k.Verify(vecCompatUser, vecCompatPass); err != nil {
		t.Errorf("Verify after the caller changed its secrets: %v", err)
	}
	if got := k.KIDs(); len(got) != 1 || got[0] != "k1" {
		t.Errorf("KIDs() = %q, want [k1]", got)
	}
}

func TestVerifyVectors(t *testing.T) {
	clk := newClock(vecTime().Add(-time.Hour))
	k := mustKeyring(t, clk.now, k1(true))
	tests := []struct {
		name, username, password string
		want                     Claims
	}{
		{"per-call", vecCallUser, vecCallPass, Claims{Expires: vecTime(), KID: "k1", CallID: vecCallID, User: "@alice:example.org"}},
		{"compat", vecCompatUser, vecCompatPass, Claims{Expires: vecTime(), User: "bob"}},
		{"minted by synapse", vecSynapseUser, vecSynapsePass, Claims{Expires: vecTime(), User: "@alice:example.org"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := k.Verify(tt.username, tt.password)
			if err != nil {
				t.Fatalf("Verify(%q): %v", tt.username, err)
			}
			if !sameClaims(got, tt.want) {
				t.Errorf("Verify(%q)\n got %+v\nwant %+v", tt.username, got, tt.want)
			}
			claims, pass, err := k.Lookup(tt.username)
			if err != nil {
				t.Fatalf("Lookup(%q): %v", tt.username, err)
			}
			if pass != tt.password || !sameClaims(claims, tt.want) {
				t.Errorf("Lookup(%q) = %+v, %q; want %+v, %q", tt.username, claims, pass, tt.want, tt.password)
			}
		})
	}
}

func TestSynapseCredentialNotPerCall(t *testing.T) {
	k := mustKeyring(t, newClock(vecTime().Add(-time.Hour)).now, k2(false), k1(true))
	claims, pass, err := k.Lookup(vecSynapseUser)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", vecSynapseUser, err)
	}
	if claims.CallID != "" || claims.User != "@alice:example.org" || claims.KID != "" {
		t.Errorf("Lookup(%q) = %+v, want CallID \"\", KID \"\", User \"@alice:example.org\"", vecSynapseUser, claims)
	}
	if pass != vecSynapsePass {
		t.Errorf("Lookup(%q) password = %q, want %q", vecSynapseUser, pass, vecSynapsePass)
	}
	if _, err := k.Verify(vecSynapseUser, vecSynapsePass); err != nil {
		t.Errorf("Verify(%q): %v", vecSynapseUser, err)
	}
}

func TestVerifyErrors(t *testing.T) {
	clk := newClock(vecTime().Add(-time.Hour))
	tests := []struct {
		name               string
		secrets            []Secret
		username, password string
		wantErr            error
		want               string
	}{
		{"malformed", []Secret{k1(true)}, "1732500000.K1:bob", vecCompatPass, ErrMalformed,
			"credentials: malformed username: key id must match [a-z0-9]{1,16}"},
		{"unknown kid", []Secret{k2(true)}, vecCallUser, vecCallPass, ErrUnknownKID,
			`credentials: unknown key id "k1"`},
		{"no compat secret", []Secret{k1(false)}, vecCompatUser, vecCompatPass, ErrUnknownKID,
			"credentials: unknown key id: username has none and the keyring has no compat secret"},
		{"wrong password", []Secret{k1(true)}, vecCompatUser, vecSynapsePass, ErrBadPassword,
			"credentials: bad password"},
		{"empty password", []Secret{k1(true)}, vecCompatUser, "", ErrBadPassword,
			"credentials: bad password"},
		{"password truncated", []Secret{k1(true)}, vecCompatUser, vecCompatPass[:len(vecCompatPass)-1], ErrBadPassword,
			"credentials: bad password"},
		{"kid claims k2, signed with k1", []Secret{k2(false), k1(true)}, vecK2User, vecK2PassByK1, ErrBadPassword,
			"credentials: bad password"},
		{"compat secret is not tried for a kid", []Secret{k2(false), k1(true)}, "1732500000.k2:bob", vecCompatPass, ErrBadPassword,
			"credentials: bad password"},
		{"username changed after signing", []Secret{k1(true)}, "1732500001:bob", vecCompatPass, ErrBadPassword,
			"credentials: bad password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKeyring(t, clk.now, tt.secrets...)
			got, err := k.Verify(tt.username, tt.password)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Verify(%q) error = %v, want %v", tt.username, err, tt.wantErr)
			}
			if err.Error() != tt.want {
				t.Errorf("Verify(%q) error\n got %q\nwant %q", tt.username, err, tt.want)
			}
			if got != (Claims{}) {
				t.Errorf("Verify(%q) = %+v with %v, want zero claims", tt.username, got, err)
			}
			checkNoSecrets(t, err)
		})
	}
}

func TestRotation(t *testing.T) {
	clk := newClock(vecTime().Add(-24 * time.Hour))
	rotated := mustKeyring(t, clk.now, k2(false), k1(false))

	// New credentials are signed by the new, active secret.
	cred, err := rotated.Mint(Subject{User: "bob"}, 24*time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	if cred.Username != vecK2User || cred.Password != vecK2Pass {
		t.Errorf("Mint = %q / %q, want %q / %q", cred.Username, cred.Password, vecK2User, vecK2Pass)
	}
	if _, err := rotated.Verify(cred.Username, cred.Password); err != nil {
		t.Errorf("Verify(minted by k2): %v", err)
	}

	// A credential handed out before the rotation still works.
	if c, err := rotated.Verify(vecCallUser, vecCallPass); err != nil || c.KID != "k1" {
		t.Errorf("Verify(minted by k1) = %+v, %v; want kid k1, no error", c, err)
	}

	// Once k1 is retired, its credentials are refused by kid.
	retired := mustKeyring(t, clk.now, k2(false))
	_, err = retired.Verify(vecCallUser, vecCallPass)
	if !errors.Is(err, ErrUnknownKID) || err.Error() != `credentials: unknown key id "k1"` {
		t.Errorf(`Verify(k1 username) on [k2] error = %v, want credentials: unknown key id "k1"`, err)
	}
	if _, _, err := retired.Lookup(vecCallUser); !errors.Is(err, ErrUnknownKID) {
		t.Errorf("Lookup(k1 username) on [k2] error = %v, want ErrUnknownKID", err)
	}
	// And k2's still verify.
	if _, err := retired.Verify(cred.Username, cred.Password); err != nil {
		t.Errorf("Verify(minted by k2) on [k2]: %v", err)
	}
}

func TestExpiryBoundaries(t *testing.T) {
	exp := vecTime()
	tests := []struct {
		name    string
		now     time.Time
		expired bool
	}{
		{"a day before", exp.Add(-24 * time.Hour), false},
		{"one second before", exp.Add(-time.Second), false},
		{"one nanosecond before", exp.Add(-time.Nanosecond), false},
		{"exactly at expiry", exp, true},
		{"exactly at expiry, other zone", exp.In(time.FixedZone("PST", -8*3600)), true},
		{"one nanosecond after", exp.Add(time.Nanosecond), true},
		{"a year after", exp.AddDate(1, 0, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKeyring(t, newClock(tt.now).now, k1(true))
			want := Claims{Expires: exp, KID: "k1", CallID: vecCallID, User: "@alice:example.org"}

			got, err := k.Verify(vecCallUser, vecCallPass)
			if tt.expired {
				const wantText = "credentials: expired at 2024-11-25T02:00:00Z"
				if !errors.Is(err, ErrExpired) || err.Error() != wantText {
					t.Errorf("Verify error = %v, want %q", err, wantText)
				}
			} else if err != nil {
				t.Errorf("Verify: unexpected error %v", err)
			}
			// Expired or not, the claims come back.
			if !sameClaims(got, want) {
				t.Errorf("Verify claims\n got %+v\nwant %+v", got, want)
			}
			if e := k.Expired(want); e != tt.expired {
				t.Errorf("Expired() = %t, want %t", e, tt.expired)
			}
			// Lookup does not care about expiry.
			if _, pass, err := k.Lookup(vecCallUser); err != nil || pass != vecCallPass {
				t.Errorf("Lookup = %q, %v; want %q, nil", pass, err, vecCallPass)
			}
		})
	}
}

func TestExpiredWrongPasswordIsBadPassword(t *testing.T) {
	k := mustKeyring(t, newClock(vecTime().Add(time.Hour)).now, k1(true))
	if _, err := k.Verify(vecCompatUser, vecSynapsePass); !errors.Is(err, ErrBadPassword) {
		t.Errorf("Verify(expired, wrong password) error = %v, want ErrBadPassword", err)
	}
}

func TestMint(t *testing.T) {
	tests := []struct {
		name    string
		now     time.Time
		secrets []Secret
		sub     Subject
		ttl     time.Duration
		want    Credential
	}{
		{
			name:    "per-call, fixed vector",
			now:     vecTime().Add(-24 * time.Hour),
			secrets: []Secret{k1(true)},
			sub:     Subject{User: "@alice:example.org", CallID: vecCallID},
			ttl:     24 * time.Hour,
			want:    Credential{Username: vecCallUser, Password: vecCallPass, Expires: vecTime(), TTL: 24 * time.Hour},
		},
		{
			name:    "active is compat, kid still written",
			now:     vecTime().Add(-time.Hour),
			secrets: []Secret{k2(true), k1(false)},
			sub:     Subject{User: "bob"},
			ttl:     time.Hour,
			want:    Credential{Username: vecK2User, Password: vecK2Pass, Expires: vecTime(), TTL: time.Hour},
		},
		{
			name:    "sub-second clock and ttl are truncated",
			now:     vecTime().Add(-time.Hour - 999*time.Millisecond),
			secrets: []Secret{k2(false)},
			sub:     Subject{User: "bob"},
			ttl:     time.Hour + 1500*time.Millisecond,
			want:    Credential{Username: vecK2User, Password: vecK2Pass, Expires: vecTime(), TTL: time.Hour + 1500*time.Millisecond},
		},
		{
			name:    "non-UTC clock",
			now:     vecTime().Add(-time.Hour).In(time.FixedZone("CET", 3600)),
			secrets: []Secret{k2(false)},
			sub:     Subject{User: "bob"},
			ttl:     time.Hour,
			want:    Credential{Username: vecK2User, Password: vecK2Pass, Expires: vecTime(), TTL: time.Hour},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKeyring(t, newClock(tt.now).now, tt.secrets...)
			got, err := k.Mint(tt.sub, tt.ttl)
			if err != nil {
				t.Fatalf("Mint(%+v, %v): %v", tt.sub, tt.ttl, err)
			}
			if got.Username != tt.want.Username || got.Password != tt.want.Password ||
				!got.Expires.Equal(tt.want.Expires) || got.Expires.Location() != time.UTC || got.TTL != tt.want.TTL {
				t.Errorf("Mint(%+v, %v)\n got %+v\nwant %+v", tt.sub, tt.ttl, got, tt.want)
			}
			if _, err := k.Verify(got.Username, got.Password); err != nil {
				t.Errorf("Verify(minted): %v", err)
			}
		})
	}
}

func TestMintShortestTTLIsNotExpired(t *testing.T) {
	for _, ms := range []time.Duration{0, 1, 500, 999} {
		clk := newClock(vecTime().Add(ms * time.Millisecond))
		k := mustKeyring(t, clk.now, k1(false))
		cred, err := k.Mint(Subject{User: "bob"}, time.Second)
		if err != nil {
			t.Fatalf("Mint: %v", err)
		}
		c, err := k.Verify(cred.Username, cred.Password)
		if err != nil {
			t.Errorf("clock +%dms: Verify(minted with ttl 1s): %v", ms, err)
		}
		clk.t = c.Expires
		if !k.Expired(c) {
			t.Errorf("clock +%dms: not expired at its expiry %v", ms, c.Expires)
		}
	}
}

func TestMintErrors(t *testing.T) {
	tests := []struct {
		name string
		now  time.Time
		sub  Subject
		ttl  time.Duration
		want string
	}{
		{"zero ttl", vecTime(), Subject{User: "bob"}, 0, "credentials: mint: ttl 0s is shorter than 1s"},
		{"sub-second ttl", vecTime(), Subject{User: "bob"}, 999 * time.Millisecond, "credentials: mint: ttl 999ms is shorter than 1s"},
		{"negative ttl", vecTime(), Subject{User: "bob"}, -time.Hour, "credentials: mint: ttl -1h0m0s is shorter than 1s"},
		{"empty user", vecTime(), Subject{}, time.Hour, "credentials: mint: user is empty"},
		{"long user", vecTime(), Subject{User: strings.Repeat("u", 257)}, time.Hour, "credentials: mint: user is longer than 256 bytes"},
		{"control in user", vecTime(), Subject{User: "bob\r\n"}, time.Hour, "credentials: mint: user contains a control character"},
		{"invalid UTF-8", vecTime(), Subject{User: "\xc3"}, time.Hour, "credentials: mint: user is not valid UTF-8"},
		{"user reads as a call", vecTime(), Subject{User: "call-x:bob"}, time.Hour,
			`credentials: mint: user without a call id must not begin with "call-": it would read as a call`},
		{"bad call id", vecTime(), Subject{User: "bob", CallID: "a:b"}, time.Hour, "credentials: mint: call id must match [A-Za-z0-9_-]{1,64}"},
		{"clock before 1970", time.Unix(-7200, 0), Subject{User: "bob"}, time.Hour,
			"credentials: mint: expiry 1969-12-31T23:00:00Z is outside what a username can hold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKeyring(t, newClock(tt.now).now, k1(true))
			got, err := k.Mint(tt.sub, tt.ttl)
			if err == nil {
				t.Fatalf("Mint(%+v, %v) = %+v, want error %q", tt.sub, tt.ttl, got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("Mint(%+v, %v) error\n got %q\nwant %q", tt.sub, tt.ttl, err, tt.want)
			}
			if got != (Credential{}) {
				t.Errorf("Mint(%+v, %v) = %+v with an error, want zero", tt.sub, tt.ttl, got)
			}
		})
	}
}

func TestMintPerCallUserMayLookPerCall(t *testing.T) {
	k := mustKeyring(t, newClock(vecTime()).now, k1(false))
	cred, err := k.Mint(Subject{User: "call-x:bob", CallID: "c1"}, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	c, err := k.Verify(cred.Username, cred.Password)
	if err != nil || c.CallID != "c1" || c.User != "call-x:bob" {
		t.Errorf("Verify(%q) = %+v, %v; want CallID c1, User call-x:bob", cred.Username, c, err)
	}
}

func TestNilClockIsTimeNow(t *testing.T) {
	k := mustKeyring(t, nil, k1(false))
	before := time.Now()
	cred, err := k.Mint(Subject{User: "bob"}, time.Hour)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	lo, hi := before.Add(time.Hour).Truncate(time.Second), time.Now().Add(time.Hour)
	if cred.Expires.Before(lo) || cred.Expires.After(hi) {
		t.Errorf("Mint with nil clock: Expires %v, want within [%v, %v]", cred.Expires, lo, hi)
	}
}

func TestSecretStringRedactsKey(t *testing.T) {
	s := k1(true)
	want := `credentials.Secret{KID:"k1", Key:<29 bytes redacted>, Compat:true}`
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		got := fmt.Sprintf(format, s)
		if got != want {
			t.Errorf("Sprintf(%q, secret) = %q, want %q", format, got, want)
		}
	}
	if got := fmt.Sprintf("%v", []Secret{s}); strings.Contains(got, secret1) || strings.Contains(got, "105 99 101") {
		t.Errorf("Sprintf(%%v, []Secret) = %q leaks the key", got)
	}
}

func TestKeyringConcurrentUse(t *testing.T) {
	k := mustKeyring(t, nil, k2(false), k1(true))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				cred, err := k.Mint(Subject{User: "@alice:example.org", CallID: "c1"}, time.Hour)
				if err == nil {
					_, err = k.Verify(cred.Username, cred.Password)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Mint/Verify: %v", err)
	}
}

func BenchmarkVerify(b *testing.B) {
	k := mustKeyring(b, newClock(vecTime().Add(-time.Hour)).now, k2(false), k1(true))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Verify(vecCallUser, vecCallPass); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMint(b *testing.B) {
	k := mustKeyring(b, newClock(vecTime()).now, k2(false), k1(true))
	sub := Subject{User: "@alice:example.org", CallID: vecCallID}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Mint(sub, 24*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}
