package probe

import (
	"strings"
	"testing"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in                      string
		scheme, host, transport string
		port                    int
		wantErr                 string
	}{
		{in: "stun:stun.example.org", scheme: "stun", host: "stun.example.org", port: 3478, transport: UDP},
		{in: "stun:198.51.100.7:19302", scheme: "stun", host: "198.51.100.7", port: 19302, transport: UDP},
		{in: "stuns:stun.example.org", scheme: "stuns", host: "stun.example.org", port: 5349, transport: TLS},
		{in: "turn:turn.example.org", scheme: "turn", host: "turn.example.org", port: 3478, transport: UDP},
		{in: "turn:turn.example.org:3479?transport=udp", scheme: "turn", host: "turn.example.org", port: 3479, transport: UDP},
		{in: "turn:turn.example.org?transport=tcp", scheme: "turn", host: "turn.example.org", port: 3478, transport: TCP},
		{in: "TURN:turn.example.org?transport=TCP", scheme: "turn", host: "turn.example.org", port: 3478, transport: TCP},
		{in: "turns:turn.example.org", scheme: "turns", host: "turn.example.org", port: 5349, transport: TLS},
		{in: "turns:turn.example.org:443?transport=tcp", scheme: "turns", host: "turn.example.org", port: 443, transport: TLS},
		{in: "turn:[2001:db8::1]:3478?transport=tcp", scheme: "turn", host: "2001:db8::1", port: 3478, transport: TCP},
		{in: "turn:[::1]", scheme: "turn", host: "::1", port: 3478, transport: UDP},

		{in: "turn.example.org:3478", wantErr: `scheme "turn.example.org" is not`},
		{in: "example.org", wantErr: "not a stun:, stuns:, turn: or turns: URL"},
		{in: "http://example.org", wantErr: `scheme "http"`},
		{in: "turn://example.org", wantErr: `no "//" after the scheme`},
		{in: "turns:example.org?transport=udp", wantErr: "DTLS"},
		{in: "turn:example.org?transport=sctp", wantErr: `transport "sctp"`},
		{in: "turn:example.org?foo=bar", wantErr: `unknown parameter "foo"`},
		{in: "stun:example.org?transport=tcp", wantErr: "takes no query"},
		{in: "turn:example.org:0", wantErr: "port \"0\" is not 1-65535"},
		{in: "turn:example.org:70000", wantErr: "is not 1-65535"},
		{in: "turn:example.org:x", wantErr: "is not 1-65535"},
		{in: "turn:2001:db8::1", wantErr: "must be in brackets"},
		{in: "turn:[example.org]:3478", wantErr: "is not an IPv6 address"},
		{in: "turn:[::1", wantErr: "unclosed '['"},
		{in: "turn:", wantErr: "no host"},
		{in: "turn::3478", wantErr: "no host"},
		{in: "turn:user@example.org", wantErr: "is not a host name"},
	} {
		got, err := ParseURL(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseURL(%q) error = %v, want one containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.in, err)
			continue
		}
		if got.Scheme != tc.scheme || got.Host != tc.host || got.Port != tc.port || got.Transport != tc.transport || got.URL != tc.in {
			t.Errorf("ParseURL(%q) = %+v, want scheme %s host %s port %d transport %s", tc.in, got, tc.scheme, tc.host, tc.port, tc.transport)
		}
		if got.TURN() != strings.HasPrefix(tc.scheme, "turn") {
			t.Errorf("ParseURL(%q).TURN() = %v", tc.in, got.TURN())
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"turn:a", "turns:[::1]:5349?transport=tcp", "stun:1.2.3.4:3478", "turn:x?transport=udp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseURL(s)
		if err != nil {
			return
		}
		if got.Host == "" || got.Port < 1 || got.Port > 65535 {
			t.Fatalf("ParseURL(%q) = %+v without error", s, got)
		}
		if got.Transport != UDP && got.Transport != TCP && got.Transport != TLS {
			t.Fatalf("ParseURL(%q): transport %q", s, got.Transport)
		}
	})
}
