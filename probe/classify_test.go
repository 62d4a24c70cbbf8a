package probe

import (
	"crypto/x509"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestRelayPrivate(t *testing.T) {
	for _, tc := range []struct {
		relay, server string
		want          bool
	}{
		{"10.99.0.10", "198.18.0.10", true}, // the cloud VM mistake
		{"172.31.5.6", "203.0.113.9", true},
		{"192.168.1.2", "8.8.8.8", true},
		{"100.64.1.1", "8.8.8.8", true},
		{"fd00::1", "2001:4860::1", true},
		{"198.18.0.10", "198.18.0.10", false}, // public_ip set
		{"8.8.4.4", "8.8.8.8", false},         // another public address is fine
		{"10.0.0.5", "10.0.0.5", false},       // a LAN deployment reached on the LAN
		{"10.0.0.5", "192.168.1.1", false},    // reached on a private address too
		{"127.0.0.1", "127.0.0.1", false},
		{"::ffff:10.0.0.1", "8.8.8.8", true},
	} {
		got := relayPrivate(netip.MustParseAddr(tc.relay), netip.MustParseAddr(tc.server))
		if got != tc.want {
			t.Errorf("relayPrivate(%s, %s) = %v, want %v", tc.relay, tc.server, got, tc.want)
		}
	}
	msg, hint := relayPrivateMessage("10.99.0.10:40001", "198.18.0.10")
	for _, want := range []string{"10.99.0.10:40001", "198.18.0.10"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not name %s", msg, want)
		}
	}
	for _, want := range []string{"turn.relay.public_ip", "external-ip"} {
		if !strings.Contains(hint, want) {
			t.Errorf("hint %q does not name %s", hint, want)
		}
	}
}

func TestAuthVerdict(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	yes, no := true, false
	for _, tc := range []struct {
		name    string
		expires time.Time
		longOK  *bool
		want    Verdict
		msg     string
	}{
		{"expired", now.Add(-90 * time.Second), nil, VerdictExpired, "expired at 2026-05-01T11:58:30Z, 1m30s ago"},
		{"expired even if minted", now.Add(-time.Second), &yes, VerdictExpired, "1s ago"},
		{"expires now", now, nil, VerdictExpired, "0s ago"},
		{"server clock ahead", now.Add(time.Hour), &yes, VerdictClockSkew, "ahead of this machine's by more than 1h0m0s"},
		{"wrong secret", now.Add(time.Hour), &no, VerdictAuth, "the secret is wrong"},
		{"given credential", now.Add(time.Hour), nil, VerdictAuth, "valid until 2026-05-01T13:00:00Z"},
		{"static credential", time.Time{}, nil, VerdictAuth, "username and password"},
	} {
		v, msg, hint := authVerdict(tc.expires, now, tc.longOK)
		if v != tc.want || !strings.Contains(msg, tc.msg) || hint == "" {
			t.Errorf("%s: authVerdict = %s, %q, %q; want %s with %q and a hint", tc.name, v, msg, hint, tc.want, tc.msg)
		}
	}
}

func TestUsernameExpiry(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1732500000:@alice:example.org", 1732500000},
		{"1732500000.k1:call-abc:bob", 1732500000},
		{"1732500000:", 1732500000}, // coturn's reading, though our grammar wants a user
		{"alice", 0},
		{"alice:1732500000", 0},
		{":x", 0},
	} {
		got := usernameExpiry(tc.in)
		if (tc.want == 0) != got.IsZero() || (tc.want != 0 && got.Unix() != tc.want) {
			t.Errorf("usernameExpiry(%q) = %v, want %d", tc.in, got, tc.want)
		}
	}
}

func TestSecretMinter(t *testing.T) {
	now := func() time.Time { return time.Unix(1732500000, 0) }
	u, p, exp, err := SecretMinter([]byte("north"), "", "alice", now)(time.Hour)
	// coturn's turnutils_uclient -W north -u alice computes the same pair.
	if err != nil || u != "1732503600:alice" || exp.Unix() != 1732503600 || p == "" {
		t.Fatalf("SecretMinter = %q, %q, %v, %v", u, p, exp, err)
	}
	u2, p2, _, _ := SecretMinter([]byte("north"), "k2", "alice", now)(time.Hour)
	if u2 != "1732503600.k2:alice" || p2 == p {
		t.Errorf("with kid: %q %q", u2, p2)
	}
}

func TestTLSVerdict(t *testing.T) {
	now := time.Now()
	info := &TLSInfo{Names: []string{"turn.example.org"}, Issuer: "CN=test", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)}
	cert := &x509.Certificate{DNSNames: []string{"turn.example.org"}}
	for _, tc := range []struct {
		err  error
		want Verdict
		msg  string
	}{
		{x509.HostnameError{Certificate: cert, Host: "198.51.100.7"}, VerdictTLSName, "is for turn.example.org, not 198.51.100.7"},
		{x509.CertificateInvalidError{Cert: cert, Reason: x509.Expired}, VerdictTLSExpired, "expired"},
		{x509.UnknownAuthorityError{Cert: cert}, VerdictTLSUntrusted, "unknown authority"},
	} {
		v, msg, hint := tlsVerdict(tc.err, "198.51.100.7", info, now)
		if v != tc.want || !strings.Contains(msg, tc.msg) || hint == "" {
			t.Errorf("tlsVerdict(%v) = %s, %q, %q; want %s with %q", tc.err, v, msg, hint, tc.want, tc.msg)
		}
	}
}
