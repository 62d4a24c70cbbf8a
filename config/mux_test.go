package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMux(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsFiles := "tls: {cert_file: " + cert + ", key_file: " + key + "}"
	file := filepath.Join(dir, "icebox.yaml")
	for _, tc := range []struct {
		name, yaml string
		env        []string
		want       Mux
		wantErr    []string
	}{
		{name: "default: off", want: defaultMux()},
		{
			name: "from the file",
			yaml: "turn: {" + tlsFiles + ", mux: {listen: [\"0.0.0.0:443\"], udp: false, handshake_timeout: 5s, proxy_protocol: {trusted: [10.0.0.5, \"192.0.2.0/24\"]}}}",
			want: Mux{Listen: []string{"0.0.0.0:443"}, HandshakeTimeout: 5 * time.Second,
				ProxyProtocol: ProxyProtocol{Trusted: []string{"10.0.0.5", "192.0.2.0/24"}}},
		},
		{
			name: "from the environment",
			yaml: "turn: {" + tlsFiles + "}",
			env:  []string{"ICEBOX_TURN_MUX_LISTEN=[::]:443", "ICEBOX_TURN_MUX_PROXY_PROTOCOL_TRUSTED=10.1.0.0/16"},
			want: Mux{Listen: []string{"[::]:443"}, UDP: true, HandshakeTimeout: 10 * time.Second,
				ProxyProtocol: ProxyProtocol{Trusted: []string{"10.1.0.0/16"}}},
		},
		{
			name:    "needs a certificate",
			yaml:    "turn: {mux: {listen: [\"0.0.0.0:443\"]}}",
			wantErr: []string{"turn.tls.cert_file", "turn.mux.listen"},
		},
		{
			name: "bad values",
			yaml: "turn: {" + tlsFiles + ", mux: {listen: [\"host.example:443\"], handshake_timeout: 0s, proxy_protocol: {trusted: [\"10.0.0.0/40\", lb]}}}",
			wantErr: []string{
				`turn.mux.listen[0]: host "host.example" is not an IP address`,
				"turn.mux.handshake_timeout: must be 1s..1m (got 0s)",
				`turn.mux.proxy_protocol.trusted[0]: "10.0.0.0/40" is not a CIDR or IP address`,
				`turn.mux.proxy_protocol.trusted[1]: "lb" is not a CIDR or IP address`,
			},
		},
		{
			name: "the same address in another listener",
			yaml: "turn: {" + tlsFiles + ", listen: {udp: [\"0.0.0.0:443\"], tcp: [\"0.0.0.0:3478\"], tls: [\"0.0.0.0:443\"]}, mux: {listen: [\"0.0.0.0:443\"]}}",
			wantErr: []string{
				"turn.mux.listen[0]: 0.0.0.0:443 is also in turn.listen.tls",
				"turn.mux.listen[0]: 0.0.0.0:443 is also in turn.listen.udp",
			},
		},
		{
			name:    "trusted without a shared port",
			yaml:    "turn: {mux: {proxy_protocol: {trusted: [10.0.0.5]}}}",
			wantErr: []string{"turn.mux.proxy_protocol.trusted: set, but turn.mux.listen is empty"},
		},
		{
			name: "PROXY protocol on the TURN and API listeners",
			yaml: "turn: {listen: {tcp: [\"0.0.0.0:3478\"]}, proxy_protocol: {trusted: [10.0.0.5]}}\nhttp: {proxy_protocol: {trusted: [\"10.0.0.0/24\"]}}",
			env:  []string{"ICEBOX_HTTP_PROXY_PROTOCOL_TRUSTED=10.0.0.0/24,10.9.0.1"},
			want: defaultMux(),
		},
		{
			name: "PROXY protocol without a listener, or not an address",
			yaml: "turn: {listen: {tcp: [], tls: []}, proxy_protocol: {trusted: [10.0.0.5]}}\nhttp: {listen: \"\", proxy_protocol: {trusted: [\"lb\"]}}",
			wantErr: []string{
				"turn.proxy_protocol.trusted: set, but turn.listen.tcp and turn.listen.tls are empty",
				`http.proxy_protocol.trusted[0]: "lb" is not a CIDR or IP address`,
				"http.proxy_protocol.trusted: set, but http.listen is empty",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.yaml+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := Load(file, tc.env)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatal("Load succeeded, want an error")
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "PROXY protocol on the TURN and API listeners" &&
				(!slices.Equal(c.TURN.ProxyProtocol.Trusted, []string{"10.0.0.5"}) || !slices.Equal(c.HTTP.ProxyProtocol.Trusted, []string{"10.0.0.0/24", "10.9.0.1"})) {
				t.Fatalf("turn.proxy_protocol %+v, http.proxy_protocol %+v", c.TURN.ProxyProtocol, c.HTTP.ProxyProtocol)
			}
			m := c.TURN.Mux
			if !slices.Equal(m.Listen, tc.want.Listen) || m.UDP != tc.want.UDP || m.HandshakeTimeout != tc.want.HandshakeTimeout ||
				!slices.Equal(m.ProxyProtocol.Trusted, tc.want.ProxyProtocol.Trusted) {
				t.Fatalf("mux = %+v, want %+v", m, tc.want)
			}
		})
	}
}

func TestProxyProtocolPrefixes(t *testing.T) {
	got, err := ProxyProtocol{Trusted: []string{"10.0.0.5", "192.0.2.9/24", "::ffff:10.0.0.6", "2001:db8::1"}}.Prefixes()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("192.0.2.0/24"),
		netip.MustParsePrefix("10.0.0.6/32"), netip.MustParsePrefix("2001:db8::1/128")}
	if !slices.Equal(got, want) {
		t.Errorf("Prefixes() = %v, want %v", got, want)
	}
}
