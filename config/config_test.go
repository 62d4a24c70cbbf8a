package config

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// testFiles creates the files that test inputs name as $DIR/…, and returns $DIR.
func testFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to umask
			t.Fatal(err)
		}
	}
	write("secret", "0123456789abcdef0123456789abcdef\n", 0o600)
	write("secret-world", "0123456789abcdef0123456789abcdef\n", 0o644)
	write("secret-group", "0123456789abcdef0123456789abcdef\n", 0o640)
	write("secret-short", "  short\n", 0o600)
	write("secret-placeholder", "CHANGE-ME-CHANGE-ME-CHANGE-ME\n", 0o600)
	write("secret-unreadable", "0123456789abcdef0123456789abcdef\n", 0o000)
	write("cert.pem", "cert\n", 0o644)
	write("key.pem", "key\n", 0o600)
	write("secret-20", "0123456789abcdef0123\n", 0o600)
	write("token", "  syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c\n", 0o600)
	write("token-world", "syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c\n", 0o644)
	write("token-empty", " \n", 0o600)
	write("token-placeholder", "syt_...\n", 0o600)
	write("token-space", "syt_aWNlYm94 abcdefghijklmnopqrst\n", 0o600)
	write("password", "  "+testPassword+"\n", 0o600)
	write("password-world", testPassword+"\n", 0o644)
	write("password-empty", "\n\t \n", 0o600)
	write("password-placeholder", "CHANGE-ME\n", 0o600)
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// testPassword is the service user's password in tests: spaces and dots
// inside are allowed, and no error may show any part of it.
const testPassword = "Tr0ub4dor &3 s3cr3t...pw"

// TestLoad runs the loader over (file, environment) pairs. A case either
// wants the configuration that want makes of Default(), or wants an error
// containing every string in wantErr. "$DIR" in any string is the test's
// directory of files (see testFiles).
func TestLoad(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string // the file's content; ignored if noFile
		noFile  bool
		env     []string
		nonRoot bool // the case needs file permissions that root ignores
		want    func(c *Config)
		wantErr []string
		notWant []string // strings the error must not contain (secrets, tokens)
	}{
		// Defaults and decoding.
		{name: "empty file", yaml: "", want: func(c *Config) {}},
		{name: "only comments", yaml: "# nothing here\n\n# at all\n", want: func(c *Config) {}},
		{name: "no file", noFile: true, want: func(c *Config) {}},
		{
			name: "every kind of value",
			yaml: `
state_dir: /var/lib/icebox
log: {level: debug, format: json}
turn:
  realm: voip.test
  listen:
    udp: ["127.0.0.1:3478", "[::1]:3478"]
    tcp: []
    tls: [":5349"]
  udp_sockets: 4
  socket_buffer: 0
  recv_batch: 16
  kernel_path: auto
  kernel_path_mode: xdp
  tls: {cert_file: $DIR/cert.pem, key_file: $DIR/key.pem}
  relay: {bind_ip: 10.1.2.3, public_ip: 198.18.0.1, min_port: 40000, max_port: 40100}
  allowed_peers: [10.0.0.0/8, 192.168.1.7]
  denied_peers: ["2001:db9::/32"]
  allow_loopback_peers: true
  max_allocation_duration: 1h30m
  quotas: {per_user: 3, per_call: 2, total: 50}
credentials:
  ttl: 1h
  secrets:
    - {kid: k2, secret_file: $DIR/secret}
    - {kid: k1, secret: "0123456789abcdef", compat: true}
http: {listen: "localhost:9090"}
ice_servers:
  hostname: turn.voip.test
  external:
    - urls: ["stun:stun.voip.test:3478"]
    - urls: ["turns:relay.voip.test:443?transport=tcp"]
      username: u
      credential: p
`,
			want: func(c *Config) {
				c.StateDir = "/var/lib/icebox"
				c.Log = Log{Level: "debug", Format: "json"}
				c.TURN = TURN{
					Realm:                 "voip.test",
					Listen:                Listen{UDP: []string{"127.0.0.1:3478", "[::1]:3478"}, TCP: []string{}, TLS: []string{":5349"}},
					UDPSockets:            4,
					SocketBuffer:          0,
					RecvBatch:             16,
					TLS:                   TLSFiles{CertFile: "$DIR/cert.pem", KeyFile: "$DIR/key.pem"},
					Relay:                 Relay{BindIP: "10.1.2.3", PublicIP: "198.18.0.1", MinPort: 40000, MaxPort: 40100},
					AllowedPeers:          []string{"10.0.0.0/8", "192.168.1.7"},
					DeniedPeers:           []string{"2001:db9::/32"},
					AllowLoopbackPeers:    true,
					MaxAllocationDuration: 90 * time.Minute,
					ErrorRate:             5,
					ErrorBurst:            20,
					BindingRate:           50,
					BindingBurst:          200,
					Quotas:                Quotas{PerUser: 3, PerCall: 2, Total: 50, BandwidthBurst: 500 * time.Millisecond},
					Mux:                   defaultMux(),
					ProxyProtocol:         ProxyProtocol{Trusted: []string{}},
					KernelPath:            "auto",
					KernelPathMode:        "xdp",
					UDPGRO:                "off",
				}
				c.Credentials = Credentials{TTL: time.Hour, Secrets: []Secret{
					{KID: "k2", SecretFile: "$DIR/secret"},
					{KID: "k1", Secret: "0123456789abcdef", Compat: true},
				}}
				c.HTTP.Listen = "localhost:9090"
				c.ICEServers = ICEServers{Hostname: "turn.voip.test", External: []ExternalServer{
					{URLs: []string{"stun:stun.voip.test:3478"}},
					{URLs: []string{"turns:relay.voip.test:443?transport=tcp"}, Username: "u", Credential: "p"},
				}}
			},
		},
		{
			name: "partial section keeps the other defaults",
			yaml: "turn:\n  relay:\n    public_ip: 198.18.0.1\n",
			want: func(c *Config) { c.TURN.Relay.PublicIP = "198.18.0.1" },
		},
		{
			name:    "unknown key holding an anchor",
			yaml:    "base: &q {per_user: 1, per_call: 1, total: 1}\n",
			wantErr: []string{"icebox.yaml: line 1: field base not found"},
		},
		{
			name: "merge key within a section",
			yaml: "turn:\n  quotas:\n    <<: {per_user: 1, per_call: 1}\n    total: 5\n",
			want: func(c *Config) {
				c.TURN.Quotas = Quotas{PerUser: 1, PerCall: 1, Total: 5, BandwidthBurst: 500 * time.Millisecond}
			},
		},
		{
			name:    "unknown key inside a merged list of anchors",
			yaml:    "turn:\n  quotas:\n    <<: [{per_user: 1}, {per_cal: 1}]\n",
			wantErr: []string{"line 3: field turn.quotas.per_cal not found"},
		},
		{name: "unknown top-level key", yaml: "state_dir: x\nstat_dir: y\n", wantErr: []string{"icebox.yaml: line 2: field stat_dir not found"}},
		{name: "unknown nested key", yaml: "turn:\n  lissten: {}\n", wantErr: []string{"config: $DIR/icebox.yaml: line 2: field turn.lissten not found"}},
		{name: "unknown deep key", yaml: "turn:\n  listen:\n    udpp: []\n", wantErr: []string{"line 3: field turn.listen.udpp not found"}},
		{
			name:    "unknown key in a list item, and all unknown keys at once",
			yaml:    "credentials:\n  secrets:\n    - kid: k1\n      sekret: x\nhttp:\n  port: 1\n",
			wantErr: []string{"line 4: field credentials.secrets[0].sekret not found", "line 6: field http.port not found"},
		},
		{name: "wrong type", yaml: "turn:\n  udp_sockets: abc\n", wantErr: []string{"line 2: turn.udp_sockets: cannot unmarshal !!str `abc` into int"}},
		{name: "bad duration", yaml: "credentials:\n  ttl: 24x\n", wantErr: []string{"line 2: credentials.ttl: cannot unmarshal !!str `24x` into time.Duration"}},
		{name: "integer duration", yaml: "credentials:\n  ttl: 86400\n", wantErr: []string{"credentials.ttl: cannot unmarshal"}},
		{name: "scalar for a list", yaml: "turn:\n  listen:\n    udp: 0.0.0.0:3478\n", wantErr: []string{"line 3: turn.listen.udp: cannot unmarshal"}},
		{name: "scalar for a section", yaml: "turn: 5\n", wantErr: []string{"line 1: turn: must be a mapping of keys, not !!int"}},
		{name: "document not a mapping", yaml: "- a\n- b\n", wantErr: []string{"line 1: the document: must be a mapping of keys, not !!seq"}},
		{name: "syntax error", yaml: "turn:\n  realm: a\n realm: b\n", wantErr: []string{"config: $DIR/icebox.yaml: line 2: did not find expected key"}},
		{name: "duplicate key", yaml: "state_dir: a\nstate_dir: b\n", wantErr: []string{`"state_dir" already defined at line 1`}},
		{name: "two documents", yaml: "state_dir: a\n---\nstate_dir: b\n", wantErr: []string{"line 2: a second YAML document; icebox reads one"}},

		// Validate: general.
		{name: "empty state_dir", yaml: `state_dir: ""`, wantErr: []string{"state_dir: must not be empty"}},
		{name: "bad log level", yaml: "log: {level: verbose}", wantErr: []string{`log.level: "verbose" is not one of debug, info, warn, error`}},
		{name: "bad log format", yaml: "log: {format: text}", wantErr: []string{`log.format: "text" is not one of auto, json, console`}},

		// Validate: TURN listeners.
		{name: "empty realm", yaml: `turn: {realm: ""}`, wantErr: []string{"turn.realm: must not be empty"}},
		{name: "bad port", yaml: `turn: {listen: {udp: ["0.0.0.0:99999"]}}`, wantErr: []string{`turn.listen.udp[0]: bad port "99999"`}},
		{name: "port zero", yaml: `turn: {listen: {tcp: ["0.0.0.0:3478", "0.0.0.0:0"]}}`, wantErr: []string{`turn.listen.tcp[1]: bad port "0"`}},
		{name: "named port", yaml: `turn: {listen: {tcp: ["0.0.0.0:stun"]}}`, wantErr: []string{`turn.listen.tcp[0]: bad port "stun"`}},
		{name: "no port", yaml: `turn: {listen: {udp: ["0.0.0.0"]}}`, wantErr: []string{`turn.listen.udp[0]: "0.0.0.0" is not host:port`}},
		{name: "bare IPv6", yaml: `turn: {listen: {udp: ["::1:3478"]}}`, wantErr: []string{`turn.listen.udp[0]: "::1:3478" is not host:port (write IPv6 as [::1]:3478)`}},
		{name: "hostname listener", yaml: `turn: {listen: {udp: ["localhost:3478"]}}`, wantErr: []string{`turn.listen.udp[0]: host "localhost" is not an IP address`}},
		{name: "empty listen address", yaml: `turn: {listen: {udp: [""]}}`, wantErr: []string{`turn.listen.udp[0]: must not be empty`}},
		{name: "no listener", yaml: "turn: {listen: {udp: [], tcp: []}}", wantErr: []string{"turn.listen: no TURN listener"}},
		{name: "null lists are empty", yaml: "turn:\n  listen:\n    udp:\n    tcp:\n", wantErr: []string{"turn.listen: no TURN listener"}},
		{name: "tls only", yaml: "turn: {listen: {udp: [], tcp: [], tls: [\"0.0.0.0:5349\"]}, tls: {cert_file: $DIR/cert.pem, key_file: $DIR/key.pem}}",
			want: func(c *Config) {
				c.TURN.Listen = Listen{UDP: []string{}, TCP: []string{}, TLS: []string{"0.0.0.0:5349"}}
				c.TURN.TLS = TLSFiles{CertFile: "$DIR/cert.pem", KeyFile: "$DIR/key.pem"}
			}},
		{
			name:    "tls listener without files",
			yaml:    `turn: {listen: {tls: ["0.0.0.0:5349"]}}`,
			wantErr: []string{"turn.tls.cert_file: required when turn.listen.tls is set", "turn.tls.key_file: required when turn.listen.tls is set"},
		},
		{
			name:    "tls files missing or not files",
			yaml:    `turn: {listen: {tls: ["0.0.0.0:5349"]}, tls: {cert_file: $DIR/nope.pem, key_file: $DIR/subdir}}`,
			wantErr: []string{"turn.tls.cert_file: $DIR/nope.pem does not exist", "turn.tls.key_file: $DIR/subdir is not a regular file"},
		},
		{name: "udp_sockets too many", yaml: "turn: {udp_sockets: 65}", wantErr: []string{"turn.udp_sockets: must be 0..64 (got 65)"}},
		{name: "udp_sockets negative", yaml: "turn: {udp_sockets: -1}", wantErr: []string{"turn.udp_sockets: must be 0..64 (got -1)"}},
		{name: "socket_buffer negative", yaml: "turn: {socket_buffer: -1}", wantErr: []string{"turn.socket_buffer: must be >= 0 (got -1)"}},
		{name: "recv_batch zero", yaml: "turn: {recv_batch: 0}", wantErr: []string{"turn.recv_batch: must be 1..256 (got 0)"}},
		{name: "recv_batch too big", yaml: "turn: {recv_batch: 5000}", wantErr: []string{"turn.recv_batch: must be 1..256 (got 5000)"}},
		{name: "kernel_path unknown", yaml: "turn: {kernel_path: xdp}", wantErr: []string{`turn.kernel_path: must be off, auto or required (got "xdp")`}},
		{name: "kernel_path_mode unknown", yaml: "turn: {kernel_path_mode: generic}", wantErr: []string{`turn.kernel_path_mode: must be auto, xdp or tc (got "generic")`}},
		{name: "udp_gro unknown", yaml: "turn: {udp_gro: yes}", wantErr: []string{`turn.udp_gro: must be off, on or auto (got "yes")`}},
		{name: "binding_rate negative", yaml: "turn: {binding_rate: -1}", wantErr: []string{"turn.binding_rate: must be a finite number >= 0"}},
		{name: "binding_burst zero", yaml: "turn: {binding_rate: 10, binding_burst: 0}", wantErr: []string{"turn.binding_burst: must be >= 1 when turn.binding_rate is set"}},

		// Validate: relay.
		{name: "bad bind_ip", yaml: "turn: {relay: {bind_ip: eth0}}", wantErr: []string{`turn.relay.bind_ip: invalid IP "eth0"`}},
		{name: "empty bind_ip", yaml: `turn: {relay: {bind_ip: ""}}`, wantErr: []string{`turn.relay.bind_ip: must not be empty`}},
		{name: "bad public_ip", yaml: "turn: {relay: {public_ip: 1.2.3}}", wantErr: []string{`turn.relay.public_ip: invalid IP "1.2.3"`}},
		{name: "unspecified public_ip", yaml: `turn: {relay: {public_ip: "::"}}`, wantErr: []string{`turn.relay.public_ip: :: is unspecified`}},
		{name: "placeholder public_ip", yaml: `turn: {relay: {public_ip: 203.0.113.10}}`, wantErr: []string{`turn.relay.public_ip: 203.0.113.10 is a documentation address`}},
		{name: "public_ip family", yaml: `turn: {relay: {public_ip: "2600::1"}}`, wantErr: []string{`turn.relay.public_ip: IPv6 address 2600::1, but turn.relay.bind_ip 0.0.0.0 is IPv4`}},
		{name: "public_ip family v6 bind", yaml: `turn: {relay: {bind_ip: "2600::2", public_ip: "198.18.0.1"}}`, wantErr: []string{`turn.relay.public_ip: IPv4 address 198.18.0.1, but turn.relay.bind_ip 2600::2 is IPv6`}},
		{name: "dual-stack bind", yaml: `turn: {relay: {bind_ip: "::", public_ip: "198.18.0.1"}}`, want: func(c *Config) {
			c.TURN.Relay.BindIP, c.TURN.Relay.PublicIP = "::", "198.18.0.1"
		}},
		{name: "min_port too low", yaml: "turn: {relay: {min_port: 80}}", wantErr: []string{"turn.relay.min_port: 80 is outside 1024..65535"}},
		{name: "max_port too high", yaml: "turn: {relay: {max_port: 70000}}", wantErr: []string{"turn.relay.max_port: 70000 is outside 1024..65535"}},
		{name: "inverted range", yaml: "turn: {relay: {min_port: 50000, max_port: 40000}}", wantErr: []string{"turn.relay.min_port: must be <= turn.relay.max_port (50000 > 40000)"}},
		{name: "single-port range", yaml: "turn: {relay: {min_port: 50000, max_port: 50000}}", want: func(c *Config) {
			c.TURN.Relay.MinPort, c.TURN.Relay.MaxPort = 50000, 50000
		}},
		{
			name:    "range overlaps a listener",
			yaml:    `turn: {listen: {udp: ["0.0.0.0:3478", "0.0.0.0:50000"]}}`,
			wantErr: []string{"turn.relay.min_port..max_port: range 49152-65535 contains port 50000 of turn.listen.udp[1]"},
		},
		{
			name:    "range overlaps http",
			yaml:    "turn: {relay: {min_port: 8000, max_port: 9000}}\nhttp: {listen: \"127.0.0.1:8080\"}",
			wantErr: []string{"turn.relay.min_port..max_port: range 8000-9000 contains port 8080 of http.listen"},
		},

		// Validate: peers, lifetimes, quotas.
		{name: "bad CIDR", yaml: `turn: {allowed_peers: [10.0.0.0/8, 10.0.0.0/33]}`, wantErr: []string{`turn.allowed_peers[1]: invalid CIDR "10.0.0.0/33"`}},
		{name: "bad peer IP", yaml: `turn: {denied_peers: [10.0.0.256]}`, wantErr: []string{`turn.denied_peers[0]: invalid IP or CIDR "10.0.0.256"`}},
		{name: "CIDR host bits", yaml: `turn: {denied_peers: [10.0.0.1/8]}`, wantErr: []string{`turn.denied_peers[0]: CIDR "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)`}},
		{name: "short max_allocation_duration", yaml: "turn: {max_allocation_duration: 30s}", wantErr: []string{"turn.max_allocation_duration: must be at least 1m (got 30s)"}},
		{
			name:    "zero quotas",
			yaml:    "turn: {quotas: {per_user: 0, per_call: -1, total: 0}}",
			wantErr: []string{"turn.quotas.per_user: must be > 0 (got 0)", "turn.quotas.per_call: must be > 0 (got -1)", "turn.quotas.total: must be > 0 (got 0)"},
		},

		// Validate: credentials.
		{name: "short ttl", yaml: "credentials: {ttl: 30s}", wantErr: []string{"credentials.ttl: must be between 1m and 720h (got 30s)"}},
		{name: "long ttl", yaml: "credentials: {ttl: 721h}", wantErr: []string{"credentials.ttl: must be between 1m and 720h (got 721h0m0s)"}},
		{name: "no secrets", yaml: "credentials: {secrets: []}", wantErr: []string{"credentials.secrets: at least one secret is required"}},
		{name: "bad kid", yaml: "credentials: {secrets: [{kid: K1}]}", wantErr: []string{`credentials.secrets[0].kid: "K1" must be 1-16 characters of a-z and 0-9`}},
		{name: "long kid", yaml: "credentials: {secrets: [{kid: abcdefghijklmnopq}]}", wantErr: []string{`credentials.secrets[0].kid: "abcdefghijklmnopq" must be`}},
		{name: "empty kid", yaml: "credentials: {secrets: [{compat: true}]}", wantErr: []string{`credentials.secrets[0].kid: must not be empty`}},
		{name: "duplicate kid", yaml: "credentials: {secrets: [{kid: a}, {kid: b}, {kid: a}]}", wantErr: []string{`credentials.secrets[2].kid: duplicate "a" (also credentials.secrets[0].kid)`}},
		{name: "two compat", yaml: "credentials: {secrets: [{kid: a, compat: true}, {kid: b, compat: true}]}", wantErr: []string{`credentials.secrets[1].compat: only one secret may be compat (credentials.secrets[0] already is)`}},
		{name: "no compat is fine", yaml: "credentials: {secrets: [{kid: a}]}", want: func(c *Config) { c.Credentials.Secrets = []Secret{{KID: "a"}} }},
		{
			name:    "secret and secret_file",
			yaml:    "credentials: {secrets: [{kid: a, secret: 0123456789abcdef, secret_file: $DIR/secret}]}",
			wantErr: []string{"credentials.secrets[0]: secret and secret_file are both set; keep one"},
		},
		{name: "short inline secret", yaml: "credentials: {secrets: [{kid: a, secret: tooshort}]}", wantErr: []string{"credentials.secrets[0].secret: is 8 bytes; use at least 16 random bytes"}},
		{name: "placeholder secret", yaml: "credentials: {secrets: [{kid: a, secret: CHANGE-ME-to-a-long-random-string}]}", wantErr: []string{"credentials.secrets[0].secret: is the example's placeholder"}},
		{name: "missing secret file", yaml: "credentials: {secrets: [{kid: a, secret_file: $DIR/nope}]}", wantErr: []string{"credentials.secrets[0].secret_file: $DIR/nope does not exist"}},
		{
			name:    "world-readable secret file",
			yaml:    "credentials: {secrets: [{kid: a, secret_file: $DIR/secret-world}]}",
			wantErr: []string{"credentials.secrets[0].secret_file: $DIR/secret-world is readable by others (mode 0644); chmod 600 it"},
		},
		{
			name:    "group-readable secret file",
			yaml:    "credentials: {secrets: [{kid: a}, {kid: b, secret_file: $DIR/secret-group}]}",
			wantErr: []string{"credentials.secrets[1].secret_file: $DIR/secret-group is readable by others (mode 0640); chmod 600 it"},
		},
		{name: "secret file is a directory", yaml: "credentials: {secrets: [{kid: a, secret_file: $DIR/subdir}]}", wantErr: []string{"credentials.secrets[0].secret_file: $DIR/subdir is not a regular file"}},
		{
			name:    "secret file path through a file",
			yaml:    "credentials: {secrets: [{kid: a, secret_file: $DIR/secret/x}]}",
			wantErr: []string{"credentials.secrets[0].secret_file: cannot read: stat $DIR/secret/x: not a directory"},
		},
		{
			name:    "unreadable secret file",
			yaml:    "credentials: {secrets: [{kid: a, secret_file: $DIR/secret-unreadable}]}",
			nonRoot: true,
			wantErr: []string{"credentials.secrets[0].secret_file: cannot read: open $DIR/secret-unreadable: permission denied"},
		},
		{name: "short secret file", yaml: "credentials: {secrets: [{kid: a, secret_file: $DIR/secret-short}]}", wantErr: []string{"credentials.secrets[0].secret_file: $DIR/secret-short holds 5 bytes; use at least 16 random bytes"}},
		{name: "placeholder in secret file", yaml: "credentials: {secrets: [{kid: a, secret_file: $DIR/secret-placeholder}]}", wantErr: []string{"credentials.secrets[0].secret_file: $DIR/secret-placeholder holds the example's placeholder"}},

		// Validate: HTTP and ICE servers.
		{name: "bad http.listen", yaml: "http: {listen: 8080}", wantErr: []string{`http.listen: "8080" is not host:port`}},
		{name: "bad http host", yaml: `http: {listen: "bad_host:8080"}`, wantErr: []string{`http.listen: host "bad_host" is not an IP address or hostname`}},
		{name: "empty http.listen", yaml: `http: {listen: ""}`, wantErr: []string{`http.listen: must not be empty`}},
		{name: "hostname with scheme", yaml: `ice_servers: {hostname: "turn:relay.voip.test"}`, wantErr: []string{`ice_servers.hostname: "turn:relay.voip.test" must be a bare hostname or IP, without scheme or port`}},
		{name: "hostname with port", yaml: `ice_servers: {hostname: "relay.voip.test:3478"}`, wantErr: []string{`ice_servers.hostname: "relay.voip.test:3478" must be a bare hostname`}},
		{name: "placeholder hostname", yaml: `ice_servers: {hostname: turn.example.com}`, wantErr: []string{`ice_servers.hostname: "turn.example.com" is the example's placeholder`}},
		{name: "unspecified hostname", yaml: `ice_servers: {hostname: 0.0.0.0}`, wantErr: []string{`ice_servers.hostname: 0.0.0.0 is unspecified`}},
		{name: "IP hostname", yaml: `ice_servers: {hostname: "2600::1"}`, want: func(c *Config) { c.ICEServers.Hostname = "2600::1" }},
		{name: "external without urls", yaml: `ice_servers: {external: [{username: u}]}`, wantErr: []string{`ice_servers.external[0].urls: at least one URL is required`}},
		{
			name:    "external bad scheme",
			yaml:    `ice_servers: {external: [{urls: ["stun:a.test", "https://a.test"]}]}`,
			wantErr: []string{`ice_servers.external[0].urls[1]: "https://a.test" must start with stun:, stuns:, turn: or turns:`},
		},
		{name: "external no host", yaml: `ice_servers: {external: [{urls: ["stun://a.test"]}]}`, wantErr: []string{`ice_servers.external[0].urls[0]: "stun://a.test" has no host (write stun:host:port, without //)`}},
		{name: "external turn without credentials", yaml: `ice_servers: {external: [{urls: ["turn:a.test:3478"]}]}`, wantErr: []string{`ice_servers.external[0]: turn: and turns: URLs need a username and a credential`}},
		{
			name:    "external placeholders",
			yaml:    `ice_servers: {external: [{urls: ["turn:turn.example.com:3478?transport=udp"], username: CHANGE-ME, credential: CHANGE-ME}]}`,
			wantErr: []string{`ice_servers.external[0].urls[0]: "turn:turn.example.com:3478?transport=udp" is the example's placeholder`, `ice_servers.external[0].username: is the example's placeholder`, `ice_servers.external[0].credential: is the example's placeholder`},
		},
		{
			name:    "every problem is reported",
			yaml:    "state_dir: \"\"\nturn: {realm: \"\", udp_sockets: 99}\nhttp: {listen: x}\n",
			wantErr: []string{"state_dir: must not be empty\nturn.realm: must not be empty\nturn.udp_sockets: must be 0..64", `http.listen: "x" is not host:port`},
		},

		// Auth, calls and HTTP limits.
		{
			name: "auth, calls and http limits from the file",
			yaml: `
http: {max_body_bytes: 65536}
auth:
  static_tokens:
    - {sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, user: "@alice:voip.test", admin: true}
    - {sha256: 1111111111111111111111111111111111111111111111111111111111111111, user: bob}
  jwt:
    hs256_secret_file: $DIR/secret
    issuer: https://app.voip.test
    audience: icebox
    admin_claim: icebox_admin
    max_ttl: 0s
calls: {invite_lifetime: 30s, max_invite_lifetime: 10m, initiate_rate: 2, initiate_burst: 1, retention: 24h}
`,
			want: func(c *Config) {
				c.HTTP.MaxBodyBytes = 65536
				c.Auth = Auth{
					StaticTokens: []StaticToken{
						{SHA256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", User: "@alice:voip.test", Admin: true},
						{SHA256: "1111111111111111111111111111111111111111111111111111111111111111", User: "bob"},
					},
					JWT:          JWT{HS256SecretFile: "$DIR/secret", Issuer: "https://app.voip.test", Audience: "icebox", AdminClaim: "icebox_admin"},
					MatrixTokens: Default().Auth.MatrixTokens,
				}
				c.Calls = Calls{InviteLifetime: 30 * time.Second, MaxInviteLifetime: 10 * time.Minute, InitiateRate: 2, InitiateBurst: 1, Retention: 24 * time.Hour}
			},
		},
		{name: "inline jwt secret", yaml: "auth: {jwt: {hs256_secret: 0123456789abcdef0123456789abcdef}}", want: func(c *Config) { c.Auth.JWT.HS256Secret = "0123456789abcdef0123456789abcdef" }},
		{name: "max_body_bytes too small", yaml: "http: {max_body_bytes: 1023}", wantErr: []string{"http.max_body_bytes: must be between 1024 (1 KiB) and 67108864 (64 MiB) (got 1023)"}},
		{name: "max_body_bytes too large", yaml: "http: {max_body_bytes: 67108865}", wantErr: []string{"http.max_body_bytes: must be between 1024 (1 KiB) and 67108864 (64 MiB) (got 67108865)"}},
		{
			name:    "token hash too short, and not echoed",
			yaml:    "auth: {static_tokens: [{sha256: my-raw-token, user: alice}]}",
			wantErr: []string{"auth.static_tokens[0].sha256: must be 64 hex characters (sha256sum of the token)"},
			notWant: []string{"my-raw-token"},
		},
		{
			name:    "token hash not hex",
			yaml:    "auth: {static_tokens: [{sha256: g123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, user: alice}]}",
			wantErr: []string{"auth.static_tokens[0].sha256: must be 64 hex characters (sha256sum of the token)"},
		},
		{
			name:    "token hash with sha256sum's suffix",
			yaml:    `auth: {static_tokens: [{sha256: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef  -", user: alice}]}`,
			wantErr: []string{"auth.static_tokens[0].sha256: must be 64 hex characters"},
		},
		{
			name:    "token hash missing",
			yaml:    "auth: {static_tokens: [{user: alice}]}",
			wantErr: []string{"auth.static_tokens[0].sha256: must be 64 hex characters"},
		},
		{
			name:    "hash of the empty token",
			yaml:    "auth: {static_tokens: [{sha256: E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855, user: alice}]}",
			wantErr: []string{`auth.static_tokens[0].sha256: is the SHA-256 of the empty string; hash the token itself (printf %s "$TOKEN" | sha256sum)`},
		},
		{
			name:    "example token hash",
			yaml:    "auth: {static_tokens: [{sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, user: alice}]}",
			wantErr: []string{`auth.static_tokens[0].sha256: is the example's placeholder (the SHA-256 of "test"); hash a random token`},
		},
		{
			name:    "duplicate token hash, whatever the case",
			yaml:    "auth: {static_tokens: [{sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, user: a}, {sha256: 1111111111111111111111111111111111111111111111111111111111111111, user: b}, {sha256: 0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF, user: c}]}",
			wantErr: []string{"auth.static_tokens[2].sha256: duplicate of auth.static_tokens[0].sha256"},
		},
		{name: "token without user", yaml: "auth: {static_tokens: [{sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}]}", wantErr: []string{"auth.static_tokens[0].user: must not be empty"}},
		{
			name:    "token user with a control character",
			yaml:    `auth: {static_tokens: [{sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef, user: "alice\n"}]}`,
			wantErr: []string{`auth.static_tokens[0].user: "alice\n" contains a control character`},
		},
		{
			name:    "jwt secret and secret file",
			yaml:    "auth: {jwt: {hs256_secret: 0123456789abcdef0123456789abcdef, hs256_secret_file: $DIR/secret}}",
			wantErr: []string{"auth.jwt: hs256_secret and hs256_secret_file are both set; keep one"},
		},
		{
			name:    "short inline jwt secret, not echoed",
			yaml:    "auth: {jwt: {hs256_secret: 0123456789abcdefXYZW}}",
			wantErr: []string{"auth.jwt.hs256_secret: is 20 bytes; use at least 32 random bytes"},
			notWant: []string{"0123456789abcdefXYZW"},
		},
		{name: "placeholder jwt secret", yaml: "auth: {jwt: {hs256_secret: CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME}}", wantErr: []string{"auth.jwt.hs256_secret: is the example's placeholder"}},
		{name: "short jwt secret file", yaml: "auth: {jwt: {hs256_secret_file: $DIR/secret-20}}", wantErr: []string{"auth.jwt.hs256_secret_file: $DIR/secret-20 holds 20 bytes; use at least 32 random bytes"}},
		{name: "missing jwt secret file", yaml: "auth: {jwt: {hs256_secret_file: $DIR/nope}}", wantErr: []string{"auth.jwt.hs256_secret_file: $DIR/nope does not exist"}},
		{
			name:    "world-readable jwt secret file",
			yaml:    "auth: {jwt: {hs256_secret_file: $DIR/secret-world}}",
			wantErr: []string{"auth.jwt.hs256_secret_file: $DIR/secret-world is readable by others (mode 0644); chmod 600 it"},
		},
		{name: "jwt secret file is a directory", yaml: "auth: {jwt: {hs256_secret_file: $DIR/subdir}}", wantErr: []string{"auth.jwt.hs256_secret_file: $DIR/subdir is not a regular file"}},
		{name: "negative jwt max_ttl", yaml: "auth: {jwt: {max_ttl: -1h}}", wantErr: []string{"auth.jwt.max_ttl: must be >= 0 (got -1h0m0s); 0 means no limit"}},
		{name: "invite_lifetime too short", yaml: "calls: {invite_lifetime: 4s}", wantErr: []string{"calls.invite_lifetime: must be between 5s and 10m (got 4s)"}},
		{name: "invite_lifetime too long", yaml: "calls: {invite_lifetime: 11m, max_invite_lifetime: 10m}", wantErr: []string{"calls.invite_lifetime: must be between 5s and 10m (got 11m0s)"}},
		{name: "max_invite_lifetime too long", yaml: "calls: {max_invite_lifetime: 1h}", wantErr: []string{"calls.max_invite_lifetime: must be between 5s and 10m (got 1h0m0s)"}},
		{
			name:    "invite_lifetime above max_invite_lifetime",
			yaml:    "calls: {invite_lifetime: 2m, max_invite_lifetime: 1m}",
			wantErr: []string{"calls.invite_lifetime: must be <= calls.max_invite_lifetime (2m0s > 1m0s)"},
		},
		{name: "zero initiate_rate", yaml: "calls: {initiate_rate: 0}", wantErr: []string{"calls.initiate_rate: must be a finite number > 0 (got 0)"}},
		{name: "negative initiate_rate", yaml: "calls: {initiate_rate: -1.5}", wantErr: []string{"calls.initiate_rate: must be a finite number > 0 (got -1.5)"}},
		{name: "NaN initiate_rate", yaml: "calls: {initiate_rate: .nan}", wantErr: []string{"calls.initiate_rate: must be a finite number > 0 (got NaN)"}},
		{name: "infinite initiate_rate", yaml: "calls: {initiate_rate: .inf}", wantErr: []string{"calls.initiate_rate: must be a finite number > 0 (got +Inf)"}},
		{name: "zero initiate_burst", yaml: "calls: {initiate_burst: 0}", wantErr: []string{"calls.initiate_burst: must be >= 1 (got 0)"}},
		{name: "retention too short", yaml: "calls: {retention: 30s}", wantErr: []string{"calls.retention: must be between 1m and 8760h (got 30s)"}},
		{name: "retention too long", yaml: "calls: {retention: 8761h}", wantErr: []string{"calls.retention: must be between 1m and 8760h (got 8761h0m0s)"}},

		// Environment.
		{
			name: "env overrides defaults and the file",
			yaml: "turn: {realm: file.test, udp_sockets: 2}\n",
			env:  []string{"ICEBOX_TURN_REALM=env.test", "ICEBOX_STATE_DIR=/srv/icebox", "ICEBOX_TURN_RELAY_PUBLIC_IP=198.18.0.9", "PATH=/bin", "ICEBOX_CONFIG=/etc/icebox/x.yaml"},
			want: func(c *Config) {
				c.TURN.Realm, c.TURN.UDPSockets, c.StateDir, c.TURN.Relay.PublicIP = "env.test", 2, "/srv/icebox", "198.18.0.9"
			},
		},
		{
			name:   "env of every kind",
			noFile: true,
			env: []string{
				"ICEBOX_TURN_UDP_SOCKETS=8", "ICEBOX_TURN_ALLOW_LOOPBACK_PEERS=true", "ICEBOX_TURN_MAX_ALLOCATION_DURATION=2h",
				"ICEBOX_TURN_LISTEN_UDP=127.0.0.1:3478, [::1]:3478,", "ICEBOX_TURN_LISTEN_TCP=", "ICEBOX_CREDENTIALS_TTL=12h",
				"ICEBOX_HTTP_LISTEN=127.0.0.1:9999", "ICEBOX_LOG_LEVEL=warn", "ICEBOX_TURN_QUOTAS_TOTAL=7",
				"ICEBOX_TURN_TLS_CERT_FILE=/c.pem", "ICEBOX_ICE_SERVERS_HOSTNAME=relay.voip.test",
			},
			want: func(c *Config) {
				c.TURN.UDPSockets, c.TURN.AllowLoopbackPeers, c.TURN.MaxAllocationDuration = 8, true, 2*time.Hour
				c.TURN.Listen.UDP, c.TURN.Listen.TCP = []string{"127.0.0.1:3478", "[::1]:3478"}, []string{}
				c.Credentials.TTL, c.HTTP.Listen, c.Log.Level, c.TURN.Quotas.Total = 12*time.Hour, "127.0.0.1:9999", "warn", 7
				c.TURN.TLS.CertFile, c.ICEServers.Hostname = "/c.pem", "relay.voip.test"
			},
		},
		{name: "env first duplicate wins", noFile: true, env: []string{"ICEBOX_TURN_REALM=first", "ICEBOX_TURN_REALM=second"}, want: func(c *Config) { c.TURN.Realm = "first" }},
		{name: "env bad integer", noFile: true, env: []string{"ICEBOX_TURN_UDP_SOCKETS=abc"}, wantErr: []string{`config: environment: ICEBOX_TURN_UDP_SOCKETS: "abc" is not an integer`}},
		{name: "env empty integer", noFile: true, env: []string{"ICEBOX_TURN_RELAY_MIN_PORT="}, wantErr: []string{`ICEBOX_TURN_RELAY_MIN_PORT: "" is not an integer`}},
		{name: "env bad bool", noFile: true, env: []string{"ICEBOX_TURN_ALLOW_LOOPBACK_PEERS=yes"}, wantErr: []string{`ICEBOX_TURN_ALLOW_LOOPBACK_PEERS: "yes" is not a boolean`}},
		{
			name:    "env bad duration, every bad variable",
			noFile:  true,
			env:     []string{"ICEBOX_CREDENTIALS_TTL=1 day", "ICEBOX_TURN_QUOTAS_PER_USER=x"},
			wantErr: []string{`ICEBOX_TURN_QUOTAS_PER_USER: "x" is not an integer`, `ICEBOX_CREDENTIALS_TTL: "1 day" is not a duration`},
		},
		{name: "env value is validated", noFile: true, env: []string{"ICEBOX_TURN_LISTEN_UDP=0.0.0.0:99999"}, wantErr: []string{`turn.listen.udp[0]: bad port "99999"`}},
		{
			name: "env secret replaces the list",
			yaml: "credentials: {secrets: [{kid: a}, {kid: b, compat: true}]}",
			env:  []string{"ICEBOX_CREDENTIALS_SECRET=0123456789abcdef0123"},
			want: func(c *Config) {
				c.Credentials.Secrets = []Secret{{KID: "k1", Secret: "0123456789abcdef0123", Compat: true}}
			},
		},
		{
			name:   "env secret file with kid",
			noFile: true,
			env:    []string{"ICEBOX_CREDENTIALS_SECRET_FILE=$DIR/secret", "ICEBOX_CREDENTIALS_KID=k7"},
			want: func(c *Config) {
				c.Credentials.Secrets = []Secret{{KID: "k7", SecretFile: "$DIR/secret", Compat: true}}
			},
		},
		{name: "env empty secret is unset", noFile: true, env: []string{"ICEBOX_CREDENTIALS_SECRET="}, want: func(c *Config) {}},
		{name: "env world-readable secret file", noFile: true, env: []string{"ICEBOX_CREDENTIALS_SECRET_FILE=$DIR/secret-world"}, wantErr: []string{"credentials.secrets[0].secret_file: $DIR/secret-world is readable by others (mode 0644)"}},
		{name: "env kid alone", noFile: true, env: []string{"ICEBOX_CREDENTIALS_KID=k2"}, wantErr: []string{"ICEBOX_CREDENTIALS_KID is set without ICEBOX_CREDENTIALS_SECRET or ICEBOX_CREDENTIALS_SECRET_FILE"}},
		{
			name:    "env secret and secret file",
			noFile:  true,
			env:     []string{"ICEBOX_CREDENTIALS_SECRET=0123456789abcdef", "ICEBOX_CREDENTIALS_SECRET_FILE=$DIR/secret"},
			wantErr: []string{"credentials.secrets[0]: secret and secret_file are both set"},
		},
		{
			name: "seed aliases append external servers",
			yaml: `ice_servers: {external: [{urls: ["stun:first.test"]}]}`,
			env:  []string{"TURN_SERVER_URL=turn:relay.test:3478", "TURN_USERNAME=alice", "TURN_PASSWORD=pw", "STUN_SERVER_URL=stun:stun.test:3478"},
			want: func(c *Config) {
				c.ICEServers.External = []ExternalServer{
					{URLs: []string{"stun:first.test"}},
					{URLs: []string{"turn:relay.test:3478"}, Username: "alice", Credential: "pw"},
					{URLs: []string{"stun:stun.test:3478"}},
				}
			},
		},
		{name: "empty aliases are unset", noFile: true, env: []string{"TURN_SERVER_URL=", "TURN_USERNAME=", "STUN_SERVER_URL="}, want: func(c *Config) {}},
		{name: "alias username without url", noFile: true, env: []string{"TURN_USERNAME=alice"}, wantErr: []string{"TURN_USERNAME or TURN_PASSWORD is set without TURN_SERVER_URL"}},
		{name: "alias turn url without credentials", noFile: true, env: []string{"TURN_SERVER_URL=turn:relay.test"}, wantErr: []string{"ice_servers.external[0]: turn: and turns: URLs need a username and a credential"}},
		{
			name: "env static tokens replace the list",
			yaml: "auth: {static_tokens: [{sha256: 1111111111111111111111111111111111111111111111111111111111111111, user: file}]}",
			env:  []string{"ICEBOX_AUTH_STATIC_TOKENS=0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF:@alice:voip.test:8448:admin, 2222222222222222222222222222222222222222222222222222222222222222:bob,"},
			want: func(c *Config) {
				c.Auth.StaticTokens = []StaticToken{
					{SHA256: "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF", User: "@alice:voip.test:8448", Admin: true},
					{SHA256: "2222222222222222222222222222222222222222222222222222222222222222", User: "bob"},
				}
			},
		},
		{
			name: "env empty static tokens empty the list",
			yaml: "auth: {static_tokens: [{sha256: 1111111111111111111111111111111111111111111111111111111111111111, user: file}]}",
			env:  []string{"ICEBOX_AUTH_STATIC_TOKENS="},
			want: func(c *Config) {},
		},
		{
			name:    "env static token without user, not echoed",
			noFile:  true,
			env:     []string{"ICEBOX_AUTH_STATIC_TOKENS=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef:alice,my-raw-token"},
			wantErr: []string{"config: environment: ICEBOX_AUTH_STATIC_TOKENS[1]: want sha256:user or sha256:user:admin"},
			notWant: []string{"my-raw-token"},
		},
		{
			name:    "env static token hash is validated",
			noFile:  true,
			env:     []string{"ICEBOX_AUTH_STATIC_TOKENS=abc:alice,0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef::admin"},
			wantErr: []string{"auth.static_tokens[0].sha256: must be 64 hex characters", "auth.static_tokens[1].user: must not be empty"},
		},
		{
			name:   "env auth, calls and http limits",
			noFile: true,
			env: []string{
				"ICEBOX_AUTH_JWT_HS256_SECRET_FILE=$DIR/secret", "ICEBOX_AUTH_JWT_ISSUER=app", "ICEBOX_AUTH_JWT_AUDIENCE=icebox",
				"ICEBOX_AUTH_JWT_ADMIN_CLAIM=adm", "ICEBOX_AUTH_JWT_MAX_TTL=1h", "ICEBOX_HTTP_MAX_BODY_BYTES=2048",
				"ICEBOX_CALLS_INVITE_LIFETIME=30s", "ICEBOX_CALLS_MAX_INVITE_LIFETIME=2m", "ICEBOX_CALLS_INITIATE_RATE=2.5", "ICEBOX_CALLS_INITIATE_BURST=10", "ICEBOX_CALLS_RETENTION=96h",
			},
			want: func(c *Config) {
				c.Auth.JWT = JWT{HS256SecretFile: "$DIR/secret", Issuer: "app", Audience: "icebox", AdminClaim: "adm", MaxTTL: time.Hour}
				c.HTTP.MaxBodyBytes = 2048
				c.Calls = Calls{InviteLifetime: 30 * time.Second, MaxInviteLifetime: 2 * time.Minute, InitiateRate: 2.5, InitiateBurst: 10, Retention: 96 * time.Hour}
			},
		},
		{name: "env bad float", noFile: true, env: []string{"ICEBOX_CALLS_INITIATE_RATE=fast"}, wantErr: []string{`config: environment: ICEBOX_CALLS_INITIATE_RATE: "fast" is not a number`}},
		{name: "env bad int64", noFile: true, env: []string{"ICEBOX_HTTP_MAX_BODY_BYTES=1MiB"}, wantErr: []string{`config: environment: ICEBOX_HTTP_MAX_BODY_BYTES: "1MiB" is not an integer`}},
		{
			name:    "env jwt secret is validated, not echoed",
			noFile:  true,
			env:     []string{"ICEBOX_AUTH_JWT_HS256_SECRET=short-secret"},
			wantErr: []string{"auth.jwt.hs256_secret: is 12 bytes; use at least 32 random bytes"},
			notWant: []string{"short-secret"},
		},
		{
			name: "matrix tokens from the file",
			yaml: "auth:\n  matrix_tokens:\n    enabled: false\n    cache: 5m\n    negative_cache: 0s\n",
			want: func(c *Config) {
				c.Auth.MatrixTokens = MatrixTokens{Enabled: false, Cache: 5 * time.Minute, NegativeCache: 0}
			},
		},
		{
			name:   "matrix tokens from the environment",
			noFile: true,
			env:    []string{"ICEBOX_AUTH_MATRIX_TOKENS_CACHE=1s", "ICEBOX_AUTH_MATRIX_TOKENS_NEGATIVE_CACHE=2s"},
			want: func(c *Config) {
				c.Auth.MatrixTokens.Cache = time.Second
				c.Auth.MatrixTokens.NegativeCache = 2 * time.Second
			},
		},
		{
			name: "matrix token caches out of range",
			yaml: "auth:\n  matrix_tokens:\n    cache: 11m\n    negative_cache: -1s\n",
			wantErr: []string{
				"auth.matrix_tokens.cache: must be in 0..10m0s (got 11m0s)",
				"auth.matrix_tokens.negative_cache: must be in 0..1m0s (got -1s)",
			},
		},
		{name: "alias bad url", noFile: true, env: []string{"STUN_SERVER_URL=stun.test:3478"}, wantErr: []string{`ice_servers.external[0].urls[0]: "stun.test:3478" must start with stun:`}},

		// Matrix.
		{
			name: "matrix from the file",
			yaml: `
matrix:
  enabled: true
  homeserver_url: https://matrix.voip.test:8448/
  service_user: "@icebox:voip.test"
  access_token_file: $DIR/token
  device_id: ICEBOXDEV
  voip: {enabled: false, version: 1}
  require_encryption: false
  invite_wait: 0s
`,
			want: func(c *Config) {
				c.Matrix = Matrix{
					Enabled: true, HomeserverURL: "https://matrix.voip.test:8448/", ServiceUser: "@icebox:voip.test",
					AccessTokenFile: "$DIR/token", DeviceID: "ICEBOXDEV", VoIP: VoIP{Enabled: false, Version: "1"}, CallProtocol: CallProtocolLegacy,
				}
			},
		},
		{
			name: "matrix inline token",
			yaml: matrixYAML("-access_token_file", "access_token: syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c"),
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.AccessToken = "", "syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c"
			},
		},
		{
			name: "matrix disabled requires nothing and ignores bad values",
			yaml: `matrix: {enabled: false, homeserver_url: "not a url", service_user: alice, access_token: x, access_token_file: "$DIR/nope"}`,
			want: func(c *Config) {
				c.Matrix.HomeserverURL, c.Matrix.ServiceUser, c.Matrix.AccessToken, c.Matrix.AccessTokenFile = "not a url", "alice", "x", "$DIR/nope"
			},
		},
		{
			name:    "matrix disabled still checks its defaulted values",
			yaml:    `matrix: {voip: {version: "2"}, invite_wait: 11s}`,
			wantErr: []string{`matrix.voip.version: "2" is not supported; icebox speaks Matrix VoIP version "1"`, "matrix.invite_wait: must be between 0s and 10s (got 11s)"},
		},
		{
			name: "matrix call_protocol matrixrtc",
			yaml: `matrix: {call_protocol: matrixrtc}`,
			want: func(c *Config) { c.Matrix.CallProtocol = CallProtocolMatrixRTC },
		},
		{
			name:    "matrix call_protocol unknown",
			yaml:    `matrix: {call_protocol: MatrixRTC}`,
			wantErr: []string{`matrix.call_protocol: "MatrixRTC" is not one of legacy, matrixrtc, auto`},
		},
		{
			name: "matrix enabled with nothing",
			yaml: "matrix: {enabled: true}",
			wantErr: []string{
				"matrix.homeserver_url: required when matrix.enabled is true",
				"matrix.service_user: required when matrix.enabled is true",
				"matrix.access_token: required when matrix.enabled is true (or matrix.access_token_file, matrix.password, matrix.password_file): log the service user in as its own device",
			},
		},
		{name: "matrix url IPv6 and http", yaml: matrixYAML(`homeserver_url: "http://[::1]:8008"`), want: func(c *Config) {
			c.Matrix = matrixWant()
			c.Matrix.HomeserverURL = "http://[::1]:8008"
		}},
		{name: "matrix url not a URL", yaml: matrixYAML(`homeserver_url: "http://[::1"`), wantErr: []string{`matrix.homeserver_url: "http://[::1" is not a URL`}},
		{
			name:    "matrix url not a URL, with credentials, not echoed",
			yaml:    matrixYAML(`homeserver_url: "https://bot:hunter2 x@matrix.voip.test"`),
			wantErr: []string{"matrix.homeserver_url: is not a URL (not shown: it may hold credentials)"},
			notWant: []string{"hunter2"},
		},
		{name: "matrix url without scheme", yaml: matrixYAML("homeserver_url: matrix.voip.test"), wantErr: []string{`matrix.homeserver_url: "matrix.voip.test" must start with http:// or https://`}},
		{name: "matrix url host:port", yaml: matrixYAML("homeserver_url: localhost:8008"), wantErr: []string{`matrix.homeserver_url: "localhost:8008" must start with http:// or https://`}},
		{name: "matrix url other scheme", yaml: matrixYAML("homeserver_url: ftp://matrix.voip.test"), wantErr: []string{`matrix.homeserver_url: "ftp://matrix.voip.test" must start with http:// or https://`}},
		{name: "matrix url without host", yaml: matrixYAML("homeserver_url: https:///_matrix"), wantErr: []string{`matrix.homeserver_url: "https:///_matrix" has no host`}},
		{
			name:    "matrix url with a path",
			yaml:    matrixYAML("homeserver_url: https://matrix.voip.test/_matrix/client"),
			wantErr: []string{`matrix.homeserver_url: "https://matrix.voip.test/_matrix/client" must be the base URL alone, without a path, query or fragment`},
		},
		{name: "matrix url with a query", yaml: matrixYAML(`homeserver_url: "https://matrix.voip.test?x=1"`), wantErr: []string{`must be the base URL alone`}},
		{
			name:    "matrix url with credentials, not echoed",
			yaml:    matrixYAML("homeserver_url: https://bot:hunter2@matrix.voip.test"),
			wantErr: []string{"matrix.homeserver_url: must not hold credentials"},
			notWant: []string{"hunter2"},
		},
		{
			name:    "matrix url with a password and a bad scheme, not echoed",
			yaml:    matrixYAML("homeserver_url: ftp://bot:hunter2@matrix.voip.test"),
			wantErr: []string{`matrix.homeserver_url: "ftp://bot:xxxxx@matrix.voip.test" must start with http:// or https://`},
			notWant: []string{"hunter2"},
		},
		{name: "matrix url bad port", yaml: matrixYAML("homeserver_url: https://matrix.voip.test:99999"), wantErr: []string{`matrix.homeserver_url: "https://matrix.voip.test:99999" has a bad port "99999"`}},
		{name: "matrix url placeholder", yaml: matrixYAML("homeserver_url: https://matrix.example.org"), wantErr: []string{`matrix.homeserver_url: "https://matrix.example.org" is the example's placeholder`}},
		{name: "matrix url mautrix placeholder", yaml: matrixYAML("homeserver_url: http://example.localhost:8008"), wantErr: []string{`matrix.homeserver_url: "http://example.localhost:8008" is the example's placeholder`}},
		{name: "matrix user, lenient localpart", yaml: matrixYAML(`service_user: "@Ice_Box=bot/1+x:[::1]:8448"`), want: func(c *Config) {
			c.Matrix = matrixWant()
			c.Matrix.ServiceUser = "@Ice_Box=bot/1+x:[::1]:8448"
		}},
		{name: "matrix user with port", yaml: matrixYAML(`service_user: "@nova-service:staging.nova.internal:8448"`), want: func(c *Config) {
			c.Matrix = matrixWant()
			c.Matrix.ServiceUser = "@nova-service:staging.nova.internal:8448"
		}},
		{name: "matrix user on an IPv4 server", yaml: matrixYAML(`service_user: "@icebox:127.0.0.1:8448"`), want: func(c *Config) {
			c.Matrix = matrixWant()
			c.Matrix.ServiceUser = "@icebox:127.0.0.1:8448"
		}},
		{name: "matrix user, IPv4 in brackets", yaml: matrixYAML(`service_user: "@icebox:[127.0.0.1]"`), wantErr: []string{`matrix.service_user: "@icebox:[127.0.0.1]" is not a Matrix user ID`}},
		{name: "matrix user, bad IPv6", yaml: matrixYAML(`service_user: "@icebox:[::g]:8448"`), wantErr: []string{`matrix.service_user: "@icebox:[::g]:8448" is not a Matrix user ID`}},
		{name: "matrix user without @", yaml: matrixYAML("service_user: icebox:voip.test"), wantErr: []string{`matrix.service_user: "icebox:voip.test" is not a Matrix user ID (@localpart:server_name`}},
		{name: "matrix user without server", yaml: matrixYAML(`service_user: "@icebox"`), wantErr: []string{`matrix.service_user: "@icebox" is not a Matrix user ID`}},
		{name: "matrix user empty localpart", yaml: matrixYAML(`service_user: "@:voip.test"`), wantErr: []string{`matrix.service_user: "@:voip.test" is not a Matrix user ID`}},
		{name: "matrix user with a space", yaml: matrixYAML(`service_user: "@ice box:voip.test"`), wantErr: []string{`matrix.service_user: "@ice box:voip.test" is not a Matrix user ID`}},
		{name: "matrix user bad server", yaml: matrixYAML(`service_user: "@icebox:bad_host"`), wantErr: []string{`matrix.service_user: "@icebox:bad_host" is not a Matrix user ID`}},
		{name: "matrix user bad server label", yaml: matrixYAML(`service_user: "@icebox:-voip.test"`), wantErr: []string{`matrix.service_user: "@icebox:-voip.test" is not a Matrix user ID`}},
		{name: "matrix user long port", yaml: matrixYAML(`service_user: "@icebox:voip.test:123456"`), wantErr: []string{`matrix.service_user: "@icebox:voip.test:123456" is not a Matrix user ID`}},
		{name: "matrix user too long", yaml: matrixYAML(`service_user: "@` + strings.Repeat("a", 250) + `:voip.test"`), wantErr: []string{"matrix.service_user: is 261 bytes; a Matrix user ID has at most 255"}},
		{name: "matrix user placeholder", yaml: matrixYAML(`service_user: "@icebox:example.org"`), wantErr: []string{`matrix.service_user: "@icebox:example.org" is the example's placeholder`}},
		{
			name:    "matrix token and token file",
			yaml:    matrixYAML("access_token: syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c"),
			wantErr: []string{"matrix: access_token and access_token_file are both set; keep one"},
			notWant: []string{"syt_aWNlYm94"},
		},
		{name: "matrix token placeholder", yaml: matrixYAML("-access_token_file", "access_token: CHANGE-ME"), wantErr: []string{"matrix.access_token: is the example's placeholder"}},
		{name: "matrix token elided", yaml: matrixYAML("-access_token_file", "access_token: syt_..."), wantErr: []string{"matrix.access_token: is the example's placeholder"}, notWant: []string{"syt_"}},
		{
			name:    "matrix token with a space, not echoed",
			yaml:    matrixYAML("-access_token_file", `access_token: "syt_secretpart other"`),
			wantErr: []string{"matrix.access_token: is a token with a space or control character in it"},
			notWant: []string{"secretpart"},
		},
		{name: "matrix token file missing", yaml: matrixYAML(`access_token_file: "$DIR/nope"`), wantErr: []string{"matrix.access_token_file: $DIR/nope does not exist"}},
		{name: "matrix token file is a directory", yaml: matrixYAML(`access_token_file: "$DIR/subdir"`), wantErr: []string{"matrix.access_token_file: $DIR/subdir is not a regular file"}},
		{
			name:    "matrix token file world-readable",
			yaml:    matrixYAML(`access_token_file: "$DIR/token-world"`),
			wantErr: []string{"matrix.access_token_file: $DIR/token-world is readable by others (mode 0644); chmod 600 it"},
			notWant: []string{"syt_aWNlYm94"},
		},
		{name: "matrix token file group-readable", yaml: matrixYAML(`access_token_file: "$DIR/secret-group"`), wantErr: []string{"matrix.access_token_file: $DIR/secret-group is readable by others (mode 0640)"}},
		{
			name:    "matrix token file unreadable",
			yaml:    matrixYAML(`access_token_file: "$DIR/secret-unreadable"`),
			nonRoot: true,
			wantErr: []string{"matrix.access_token_file: cannot read: open $DIR/secret-unreadable: permission denied"},
		},
		{name: "matrix token file empty", yaml: matrixYAML(`access_token_file: "$DIR/token-empty"`), wantErr: []string{"matrix.access_token_file: $DIR/token-empty holds an empty token"}},
		{name: "matrix token file placeholder", yaml: matrixYAML(`access_token_file: "$DIR/token-placeholder"`), wantErr: []string{"matrix.access_token_file: $DIR/token-placeholder holds the example's placeholder"}},
		{
			name:    "matrix token file with a space, not echoed",
			yaml:    matrixYAML(`access_token_file: "$DIR/token-space"`),
			wantErr: []string{"matrix.access_token_file: $DIR/token-space holds a token with a space or control character in it"},
			notWant: []string{"syt_aWNlYm94"},
		},
		{
			name: "matrix password file",
			yaml: matrixYAML("-access_token_file", `password_file: "$DIR/password"`),
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.PasswordFile = "", "$DIR/password"
			},
		},
		{
			name: "matrix inline password, kept as is",
			yaml: matrixYAML("-access_token_file", `password: "`+testPassword+`"`),
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.Password = "", testPassword
			},
		},
		{
			name: "matrix disabled ignores a bad password file",
			yaml: `matrix: {enabled: false, password: x, password_file: "$DIR/nope", access_token: y}`,
			want: func(c *Config) {
				c.Matrix.Password, c.Matrix.PasswordFile, c.Matrix.AccessToken = "x", "$DIR/nope", "y"
			},
		},
		{
			name:    "matrix token file and password",
			yaml:    matrixYAML(`password: "` + testPassword + `"`),
			wantErr: []string{"matrix: access_token_file and password are both set; log in with an access token or a password, not both"},
			notWant: []string{"s3cr3t"},
		},
		{
			name:    "matrix token and password file",
			yaml:    matrixYAML("-access_token_file", "access_token: syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c", `password_file: "$DIR/password"`),
			wantErr: []string{"matrix: access_token and password_file are both set; log in with an access token or a password, not both"},
			notWant: []string{"syt_aWNlYm94", "s3cr3t"},
		},
		{
			name:    "matrix password and password file",
			yaml:    matrixYAML("-access_token_file", `password: "`+testPassword+`"`, `password_file: "$DIR/password"`),
			wantErr: []string{"matrix: password and password_file are both set; keep one"},
			notWant: []string{"s3cr3t"},
		},
		{
			name:    "matrix password placeholder, not echoed",
			yaml:    matrixYAML("-access_token_file", `password: "CHANGE-ME-s3cr3t"`),
			wantErr: []string{"matrix.password: is the example's placeholder; set the service user's password"},
			notWant: []string{"s3cr3t"},
		},
		{name: "matrix password elided", yaml: matrixYAML("-access_token_file", `password: "..."`), wantErr: []string{"matrix.password: is the example's placeholder"}},
		{name: "matrix password file missing", yaml: matrixYAML("-access_token_file", `password_file: "$DIR/nope"`), wantErr: []string{"matrix.password_file: $DIR/nope does not exist"}},
		{name: "matrix password file is a directory", yaml: matrixYAML("-access_token_file", `password_file: "$DIR/subdir"`), wantErr: []string{"matrix.password_file: $DIR/subdir is not a regular file"}},
		{
			name:    "matrix password file world-readable",
			yaml:    matrixYAML("-access_token_file", `password_file: "$DIR/password-world"`),
			wantErr: []string{"matrix.password_file: $DIR/password-world is readable by others (mode 0644); chmod 600 it"},
			notWant: []string{"s3cr3t"},
		},
		{name: "matrix password file group-readable", yaml: matrixYAML("-access_token_file", `password_file: "$DIR/secret-group"`), wantErr: []string{"matrix.password_file: $DIR/secret-group is readable by others (mode 0640); chmod 600 it"}},
		{
			name:    "matrix password file unreadable",
			yaml:    matrixYAML("-access_token_file", `password_file: "$DIR/secret-unreadable"`),
			nonRoot: true,
			wantErr: []string{"matrix.password_file: cannot read: open $DIR/secret-unreadable: permission denied"},
		},
		{name: "matrix password file empty", yaml: matrixYAML("-access_token_file", `password_file: "$DIR/password-empty"`), wantErr: []string{"matrix.password_file: $DIR/password-empty holds an empty password"}},
		{name: "matrix password file placeholder", yaml: matrixYAML("-access_token_file", `password_file: "$DIR/password-placeholder"`), wantErr: []string{"matrix.password_file: $DIR/password-placeholder holds the example's placeholder; set the service user's password"}},
		{name: "matrix device id with a space", yaml: matrixYAML(`device_id: "ICE BOX"`), wantErr: []string{`matrix.device_id: "ICE BOX" contains a space or a control character`}},
		{name: "matrix voip version", yaml: matrixYAML(`voip: {version: "1.0"}`), wantErr: []string{`matrix.voip.version: "1.0" is not supported`}},
		{name: "matrix empty voip version", yaml: matrixYAML(`voip: {version: ""}`), wantErr: []string{`matrix.voip.version: "" is not supported`}},
		{name: "matrix negative invite_wait", yaml: matrixYAML("invite_wait: -1s"), wantErr: []string{"matrix.invite_wait: must be between 0s and 10s (got -1s)"}},
		{name: "matrix long invite_wait", yaml: matrixYAML("invite_wait: 10001ms"), wantErr: []string{"matrix.invite_wait: must be between 0s and 10s (got 10.001s)"}},
		{name: "matrix invite_wait at its bound", yaml: matrixYAML("invite_wait: 10s"), want: func(c *Config) {
			c.Matrix = matrixWant()
			c.Matrix.InviteWait = 10 * time.Second
		}},
		{name: "matrix unknown key", yaml: "matrix: {voip: {versoin: 1}}", wantErr: []string{"line 1: field matrix.voip.versoin not found"}},

		// Matrix environment.
		{
			name:   "env matrix, generic names",
			noFile: true,
			env: []string{
				"ICEBOX_MATRIX_ENABLED=true", "ICEBOX_MATRIX_HOMESERVER_URL=http://localhost:8008", "ICEBOX_MATRIX_SERVICE_USER=@icebox:localhost",
				"ICEBOX_MATRIX_ACCESS_TOKEN_FILE=$DIR/token", "ICEBOX_MATRIX_DEVICE_ID=DEV", "ICEBOX_MATRIX_VOIP_ENABLED=false",
				"ICEBOX_MATRIX_VOIP_VERSION=1", "ICEBOX_MATRIX_REQUIRE_ENCRYPTION=false", "ICEBOX_MATRIX_INVITE_WAIT=500ms",
				"ICEBOX_MATRIX_CALL_PROTOCOL=auto",
			},
			want: func(c *Config) {
				c.Matrix = Matrix{
					Enabled: true, HomeserverURL: "http://localhost:8008", ServiceUser: "@icebox:localhost", AccessTokenFile: "$DIR/token",
					DeviceID: "DEV", VoIP: VoIP{Enabled: false, Version: "1"}, InviteWait: 500 * time.Millisecond,
					CallProtocol: CallProtocolAuto,
				}
			},
		},
		{
			name:   "env matrix, the seed's names",
			noFile: true,
			env: []string{
				"MATRIX_ENABLED=true", "MATRIX_HOMESERVER_URL=http://matrix-synapse:8008", "MATRIX_SERVICE_USER=@nova-service:staging.nova.internal",
				"MATRIX_ACCESS_TOKEN=syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c", "MATRIX_VOIP_ENABLED=false", "MATRIX_VOIP_VERSION=1",
			},
			want: func(c *Config) {
				c.Matrix.Enabled, c.Matrix.HomeserverURL, c.Matrix.ServiceUser = true, "http://matrix-synapse:8008", "@nova-service:staging.nova.internal"
				c.Matrix.AccessToken, c.Matrix.VoIP.Enabled = "syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c", false
			},
		},
		{
			name: "env matrix, ICEBOX_ names win over the seed's",
			yaml: matrixYAML(),
			env: []string{
				"MATRIX_HOMESERVER_URL=http://seed.test:8008", "ICEBOX_MATRIX_HOMESERVER_URL=https://explicit.test",
				"MATRIX_VOIP_ENABLED=true", "ICEBOX_MATRIX_VOIP_ENABLED=false",
				"MATRIX_ENABLED=false", "ICEBOX_MATRIX_ENABLED=true",
				"MATRIX_VOIP_VERSION=2", "ICEBOX_MATRIX_VOIP_VERSION=1",
				"MATRIX_SERVICE_USER=@seed:seed.test", "ICEBOX_MATRIX_SERVICE_USER=@explicit:explicit.test",
			},
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.HomeserverURL, c.Matrix.ServiceUser, c.Matrix.VoIP.Enabled = "https://explicit.test", "@explicit:explicit.test", false
			},
		},
		{
			name:    "env matrix, a set but empty ICEBOX_ name still wins",
			yaml:    matrixYAML(),
			env:     []string{"ICEBOX_MATRIX_SERVICE_USER=", "MATRIX_SERVICE_USER=@seed:seed.test"},
			wantErr: []string{"matrix.service_user: required when matrix.enabled is true"},
		},
		{
			name: "env matrix, empty seed names are unset",
			yaml: matrixYAML(),
			env:  []string{"MATRIX_ENABLED=", "MATRIX_HOMESERVER_URL=", "MATRIX_SERVICE_USER=", "MATRIX_ACCESS_TOKEN=", "MATRIX_VOIP_ENABLED=", "MATRIX_VOIP_VERSION="},
			want: func(c *Config) { c.Matrix = matrixWant() },
		},
		{name: "env matrix, bad MATRIX_ENABLED", noFile: true, env: []string{"MATRIX_ENABLED=yes"}, wantErr: []string{`config: environment: MATRIX_ENABLED: "yes" is not a boolean (true or false)`}},
		{
			name:    "env matrix, bad booleans, every variable",
			noFile:  true,
			env:     []string{"MATRIX_VOIP_ENABLED=on", "ICEBOX_MATRIX_REQUIRE_ENCRYPTION=maybe"},
			wantErr: []string{`config: environment: MATRIX_VOIP_ENABLED: "on" is not a boolean`, `config: environment: ICEBOX_MATRIX_REQUIRE_ENCRYPTION: "maybe" is not a boolean`},
		},
		{name: "env matrix, bad ICEBOX_MATRIX_INVITE_WAIT", noFile: true, env: []string{"ICEBOX_MATRIX_INVITE_WAIT=2"}, wantErr: []string{`config: environment: ICEBOX_MATRIX_INVITE_WAIT: "2" is not a duration`}},
		{name: "env matrix, seed version is validated", noFile: true, env: []string{"MATRIX_VOIP_VERSION=2"}, wantErr: []string{`matrix.voip.version: "2" is not supported`}},
		{name: "env matrix, seed url is validated", noFile: true, env: []string{"MATRIX_ENABLED=1", "MATRIX_HOMESERVER_URL=http://example.localhost:8008"}, wantErr: []string{`matrix.homeserver_url: "http://example.localhost:8008" is the example's placeholder`}},
		{
			name: "env matrix token replaces the file's token file",
			yaml: matrixYAML(),
			env:  []string{"MATRIX_ACCESS_TOKEN=syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c"},
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.AccessToken = "", "syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c"
			},
		},
		{
			name: "env matrix token file replaces the file's token",
			yaml: matrixYAML("-access_token_file", "access_token: syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c"),
			env:  []string{"ICEBOX_MATRIX_ACCESS_TOKEN_FILE=$DIR/token"},
			want: func(c *Config) { c.Matrix = matrixWant() },
		},
		{
			name:    "env matrix token and token file",
			yaml:    matrixYAML("-access_token_file"),
			env:     []string{"ICEBOX_MATRIX_ACCESS_TOKEN=syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c", "ICEBOX_MATRIX_ACCESS_TOKEN_FILE=$DIR/token"},
			wantErr: []string{"matrix: access_token and access_token_file are both set; keep one"},
			notWant: []string{"syt_bm92YQ"},
		},
		{
			name:    "env matrix seed token placeholder, not echoed",
			yaml:    matrixYAML(),
			env:     []string{"MATRIX_ACCESS_TOKEN=syt_..."},
			wantErr: []string{"matrix.access_token: is the example's placeholder"},
			notWant: []string{"syt_"},
		},
		{
			name:   "env matrix password, generic names",
			noFile: true,
			env: []string{
				"ICEBOX_MATRIX_ENABLED=true", "ICEBOX_MATRIX_HOMESERVER_URL=http://localhost:8008", "ICEBOX_MATRIX_SERVICE_USER=@icebox:localhost",
				"ICEBOX_MATRIX_PASSWORD_FILE=$DIR/password",
			},
			want: func(c *Config) {
				c.Matrix.Enabled, c.Matrix.HomeserverURL, c.Matrix.ServiceUser = true, "http://localhost:8008", "@icebox:localhost"
				c.Matrix.PasswordFile = "$DIR/password"
			},
		},
		{
			name: "env matrix password replaces the file's token file",
			yaml: matrixYAML(),
			env:  []string{"ICEBOX_MATRIX_PASSWORD=" + testPassword},
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.Password = "", testPassword
			},
		},
		{
			name: "env matrix password file replaces the file's token and password",
			yaml: matrixYAML("-access_token_file", "access_token: syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c", `password: "`+testPassword+`"`),
			env:  []string{"ICEBOX_MATRIX_PASSWORD_FILE=$DIR/password"},
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.PasswordFile = "", "$DIR/password"
			},
		},
		{
			name: "env matrix seed token replaces the file's password file",
			yaml: matrixYAML("-access_token_file", `password_file: "$DIR/password"`),
			env:  []string{"MATRIX_ACCESS_TOKEN=syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c"},
			want: func(c *Config) {
				c.Matrix = matrixWant()
				c.Matrix.AccessTokenFile, c.Matrix.AccessToken = "", "syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c"
			},
		},
		{
			name: "env matrix, an empty password variable replaces nothing",
			yaml: matrixYAML(),
			env:  []string{"ICEBOX_MATRIX_PASSWORD_FILE="},
			want: func(c *Config) { c.Matrix = matrixWant() },
		},
		{
			name:    "env matrix token and password",
			yaml:    matrixYAML(),
			env:     []string{"MATRIX_ACCESS_TOKEN=syt_bm92YQ_abcdefghijklmnopqrst_0a1b2c", "ICEBOX_MATRIX_PASSWORD=" + testPassword},
			wantErr: []string{"matrix: access_token and password are both set; log in with an access token or a password, not both"},
			notWant: []string{"syt_bm92YQ", "s3cr3t"},
		},
		{
			name:    "env matrix password and password file",
			yaml:    matrixYAML(),
			env:     []string{"ICEBOX_MATRIX_PASSWORD=" + testPassword, "ICEBOX_MATRIX_PASSWORD_FILE=$DIR/password"},
			wantErr: []string{"matrix: password and password_file are both set; keep one"},
			notWant: []string{"s3cr3t"},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.nonRoot && os.Geteuid() == 0 {
				t.Skip("root reads files whatever their mode; the error path is covered by \"secret file path through a file\"")
			}
			dir := testFiles(t)
			expand := func(s string) string { return strings.ReplaceAll(s, "$DIR", dir) }
			path := ""
			if !tt.noFile {
				path = filepath.Join(dir, "icebox.yaml")
				if err := os.WriteFile(path, []byte(expand(tt.yaml)), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			env := make([]string, len(tt.env))
			for i, kv := range tt.env {
				env[i] = expand(kv)
			}

			got, err := Load(path, env)

			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("Load() = nil error, want one containing %q", tt.wantErr)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("Load() error %q does not match ErrInvalid", err)
				}
				for _, w := range tt.wantErr {
					if w = expand(w); !strings.Contains(err.Error(), w) {
						t.Errorf("Load() error:\n%v\nwant it to contain:\n%s", err, w)
					}
				}
				for _, w := range tt.notWant {
					if strings.Contains(err.Error(), w) {
						t.Errorf("Load() error:\n%v\nwant it not to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load() error:\n%v", err)
			}
			want := Default()
			tt.want(&want)
			expandConfig(&want, expand)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load() =\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

// expandConfig replaces $DIR in the string fields that tests set to paths.
func expandConfig(c *Config, expand func(string) string) {
	c.TURN.TLS.CertFile = expand(c.TURN.TLS.CertFile)
	c.TURN.TLS.KeyFile = expand(c.TURN.TLS.KeyFile)
	for i := range c.Credentials.Secrets {
		c.Credentials.Secrets[i].SecretFile = expand(c.Credentials.Secrets[i].SecretFile)
	}
	c.Auth.JWT.HS256SecretFile = expand(c.Auth.JWT.HS256SecretFile)
	c.Matrix.AccessTokenFile = expand(c.Matrix.AccessTokenFile)
	c.Matrix.PasswordFile = expand(c.Matrix.PasswordFile)
}

// matrixYAML is a valid, enabled matrix section, as one flow mapping, with
// keys replaced or added ("key: value") or dropped ("-key").
func matrixYAML(changes ...string) string {
	entries := []string{"enabled: true", "homeserver_url: https://matrix.voip.test", `service_user: "@icebox:voip.test"`, `access_token_file: "$DIR/token"`}
	for _, ch := range changes {
		key, _, _ := strings.Cut(strings.TrimPrefix(ch, "-"), ":")
		entries = slices.DeleteFunc(entries, func(e string) bool { return strings.HasPrefix(e, key+":") })
		if !strings.HasPrefix(ch, "-") {
			entries = append(entries, ch)
		}
	}
	return "matrix: {" + strings.Join(entries, ", ") + "}"
}

// matrixWant is the section matrixYAML() loads to.
func matrixWant() Matrix {
	m := Default().Matrix
	m.Enabled, m.HomeserverURL, m.ServiceUser, m.AccessTokenFile = true, "https://matrix.voip.test", "@icebox:voip.test", "$DIR/token"
	return m
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "icebox.yaml")
	_, err := Load(path, nil)
	if err == nil {
		t.Fatal("Load(missing file) = nil error")
	}
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("Load(missing file) error %v: want fs.ErrNotExist and not ErrInvalid", err)
	}
	if want := "config: open " + path + ": no such file or directory"; err.Error() != want {
		t.Errorf("Load(missing file) error = %q, want %q", err, want)
	}
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestValidateDoesNotMutate(t *testing.T) {
	c := Default()
	c.TURN.Relay.MinPort, c.TURN.Relay.MaxPort = 60000, 50000
	c.Credentials.Secrets = []Secret{{KID: "A"}}
	before := c
	before.Credentials.Secrets = append([]Secret(nil), c.Credentials.Secrets...)
	if err := c.Validate(); err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	if !reflect.DeepEqual(c, before) {
		t.Errorf("Validate() changed the config:\n%+v\nwas\n%+v", c, before)
	}
}

func TestValidateJoinsErrors(t *testing.T) {
	c := Default()
	c.StateDir, c.TURN.Realm = "", ""
	err := c.Validate()
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 2 {
		t.Fatalf("Validate() = %v, want 2 joined errors", err)
	}
	for _, e := range joined.Unwrap() {
		if !errors.Is(e, ErrInvalid) {
			t.Errorf("%v does not match ErrInvalid", e)
		}
	}
}

func TestDefaultYAML(t *testing.T) {
	path := filepath.Join(t.TempDir(), "icebox.yaml")
	if err := os.WriteFile(path, DefaultYAML(), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path, nil)
	if err != nil {
		t.Fatalf("Load(DefaultYAML()) error: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Load(DefaultYAML()) =\n%+v\nwant Default() =\n%+v", got, want)
	}

	// Every key is spelled out with a comment, so the file documents itself.
	var doc yaml.Node
	if err := yaml.Unmarshal(DefaultYAML(), &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, typ reflect.Type, path string)
	walk = func(n *yaml.Node, typ reflect.Type, path string) {
		keys := map[string]*yaml.Node{}
		comments := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			keys[k.Value] = n.Content[i+1]
			comments[k.Value] = k.HeadComment != "" || k.LineComment != ""
		}
		for _, f := range yamlFields(typ) {
			p := joinPath(path, f.key)
			v, ok := keys[f.key]
			if !ok {
				t.Errorf("DefaultYAML() lacks %s", p)
				continue
			}
			if !comments[f.key] && !isSection(f.typ) && !(path == "credentials.secrets[0]" && f.key == "kid") {
				t.Errorf("DefaultYAML(): %s has no comment", p)
			}
			switch {
			case isSection(f.typ):
				walk(v, f.typ, p)
			case f.typ.Kind() == reflect.Slice && isSection(f.typ.Elem()) && len(v.Content) > 0:
				walk(v.Content[0], f.typ.Elem(), p+"[0]")
			}
		}
	}
	walk(doc.Content[0], reflect.TypeFor[Config](), "")

	// A copy, not the embedded bytes.
	b := DefaultYAML()
	b[0] = 'X'
	if bytes.Equal(b, DefaultYAML()) {
		t.Error("DefaultYAML() returns a shared slice")
	}
}

// TestEnvVars pins the generic variable names (they are documented) and
// checks that every one can be set.
func TestEnvVars(t *testing.T) {
	want := []string{
		"ICEBOX_STATE_DIR",
		"ICEBOX_DRAIN_TIMEOUT",
		"ICEBOX_LOG_LEVEL", "ICEBOX_LOG_FORMAT",
		"ICEBOX_TURN_REALM",
		"ICEBOX_TURN_LISTEN_UDP", "ICEBOX_TURN_LISTEN_TCP", "ICEBOX_TURN_LISTEN_TLS",
		"ICEBOX_TURN_UDP_SOCKETS", "ICEBOX_TURN_SOCKET_BUFFER", "ICEBOX_TURN_RECV_BATCH",
		"ICEBOX_TURN_TLS_CERT_FILE", "ICEBOX_TURN_TLS_KEY_FILE", "ICEBOX_TURN_TLS_ACME",
		"ICEBOX_TURN_RELAY_BIND_IP", "ICEBOX_TURN_RELAY_PUBLIC_IP", "ICEBOX_TURN_RELAY_MIN_PORT", "ICEBOX_TURN_RELAY_MAX_PORT",
		"ICEBOX_TURN_ALLOWED_PEERS", "ICEBOX_TURN_DENIED_PEERS", "ICEBOX_TURN_ALLOW_LOOPBACK_PEERS",
		"ICEBOX_TURN_MAX_ALLOCATION_DURATION",
		"ICEBOX_TURN_ERROR_RATE",
		"ICEBOX_TURN_ERROR_BURST",
		"ICEBOX_TURN_BINDING_RATE",
		"ICEBOX_TURN_BINDING_BURST",
		"ICEBOX_TURN_QUOTAS_PER_USER", "ICEBOX_TURN_QUOTAS_PER_CALL", "ICEBOX_TURN_QUOTAS_TOTAL",
		"ICEBOX_TURN_QUOTAS_MAX_BPS_PER_ALLOCATION", "ICEBOX_TURN_QUOTAS_MAX_BPS_PER_USER",
		"ICEBOX_TURN_QUOTAS_MAX_BPS_TOTAL", "ICEBOX_TURN_QUOTAS_BANDWIDTH_BURST",
		"ICEBOX_TURN_MUX_LISTEN", "ICEBOX_TURN_MUX_UDP", "ICEBOX_TURN_MUX_HANDSHAKE_TIMEOUT", "ICEBOX_TURN_MUX_PROXY_PROTOCOL_TRUSTED", "ICEBOX_TURN_PROXY_PROTOCOL_TRUSTED",
		"ICEBOX_TURN_KERNEL_PATH", "ICEBOX_TURN_KERNEL_PATH_MODE",
		"ICEBOX_TURN_UDP_GRO",
		"ICEBOX_CREDENTIALS_TTL",
		"ICEBOX_HTTP_LISTEN", "ICEBOX_HTTP_MAX_BODY_BYTES", "ICEBOX_HTTP_TLS_CERT_FILE", "ICEBOX_HTTP_TLS_KEY_FILE", "ICEBOX_HTTP_TLS_ACME",
		"ICEBOX_HTTP_UI",
		"ICEBOX_HTTP_CORS_ALLOWED_ORIGINS", "ICEBOX_HTTP_PROXY_PROTOCOL_TRUSTED",
		"ICEBOX_ICE_SERVERS_HOSTNAME",
		"ICEBOX_AUTH_JWT_HS256_SECRET", "ICEBOX_AUTH_JWT_HS256_SECRET_FILE", "ICEBOX_AUTH_JWT_ISSUER",
		"ICEBOX_AUTH_JWT_AUDIENCE", "ICEBOX_AUTH_JWT_ADMIN_CLAIM", "ICEBOX_AUTH_JWT_MAX_TTL",
		"ICEBOX_AUTH_MATRIX_TOKENS_ENABLED", "ICEBOX_AUTH_MATRIX_TOKENS_CACHE", "ICEBOX_AUTH_MATRIX_TOKENS_NEGATIVE_CACHE",
		"ICEBOX_CALLS_INVITE_LIFETIME", "ICEBOX_CALLS_MAX_INVITE_LIFETIME",
		"ICEBOX_CALLS_INITIATE_RATE", "ICEBOX_CALLS_INITIATE_BURST", "ICEBOX_CALLS_RETENTION",
		"ICEBOX_MATRIX_ENABLED", "ICEBOX_MATRIX_HOMESERVER_URL", "ICEBOX_MATRIX_SERVICE_USER",
		"ICEBOX_MATRIX_ACCESS_TOKEN", "ICEBOX_MATRIX_ACCESS_TOKEN_FILE",
		"ICEBOX_MATRIX_PASSWORD", "ICEBOX_MATRIX_PASSWORD_FILE", "ICEBOX_MATRIX_DEVICE_ID",
		"ICEBOX_MATRIX_VOIP_ENABLED", "ICEBOX_MATRIX_VOIP_VERSION",
		"ICEBOX_MATRIX_REQUIRE_ENCRYPTION", "ICEBOX_MATRIX_INVITE_WAIT", "ICEBOX_MATRIX_CALL_PROTOCOL",
		"ICEBOX_MATRIXRTC_ENABLED", "ICEBOX_MATRIXRTC_BASE_PATH", "ICEBOX_MATRIXRTC_FULL_ACCESS_HOMESERVERS",
		"ICEBOX_MATRIXRTC_LIVEKIT_URL", "ICEBOX_MATRIXRTC_LIVEKIT_API_KEY",
		"ICEBOX_MATRIXRTC_LIVEKIT_API_SECRET", "ICEBOX_MATRIXRTC_LIVEKIT_API_SECRET_FILE",
		"ICEBOX_MATRIXRTC_LIVEKIT_TURN_ENABLED", "ICEBOX_MATRIXRTC_LIVEKIT_TURN_PEERS", "ICEBOX_MATRIXRTC_LIVEKIT_TURN_TTL",
		"ICEBOX_MATRIXRTC_LIVEKIT_MODE", "ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_BINARY", "ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_BIND",
		"ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_PORT", "ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_NODE_IP",
		"ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_RTC_TCP_PORT", "ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_RTC_UDP_PORTS",
		"ICEBOX_MATRIXRTC_LIVEKIT_MANAGED_LOG_LEVEL",
		"ICEBOX_MATRIXRTC_JWT_LIFETIME", "ICEBOX_MATRIXRTC_VERIFY_TIMEOUT",
		"ICEBOX_MATRIXRTC_PUBLIC_URL", "ICEBOX_MATRIXRTC_REQUIRE_JOINED", "ICEBOX_MATRIXRTC_VERIFY_CACHE_TTL",
		"ICEBOX_MATRIXRTC_GATEWAY_MODE", "ICEBOX_MATRIXRTC_GATEWAY_UDP_PORT_MIN", "ICEBOX_MATRIXRTC_GATEWAY_UDP_PORT_MAX",
		"ICEBOX_MATRIXRTC_GATEWAY_MEMBERSHIP_EXPIRES",
		"ICEBOX_ACME_DOMAINS", "ICEBOX_ACME_EMAIL", "ICEBOX_ACME_CA_URL", "ICEBOX_ACME_CA_ROOT_FILE",
		"ICEBOX_ACME_CHALLENGE", "ICEBOX_ACME_HTTP_LISTEN", "ICEBOX_ACME_AGREE_TOS",
		"ICEBOX_STORE_DRIVER", "ICEBOX_STORE_POSTGRES_DSN", "ICEBOX_STORE_POSTGRES_DSN_FILE", "ICEBOX_STORE_POSTGRES_MAX_CONNS", "ICEBOX_STORE_POSTGRES_STATEMENT_TIMEOUT", "ICEBOX_STORE_POSTGRES_MATRIX_TAKEOVER",
	}
	var got []string
	c := Default()
	root := reflect.ValueOf(&c).Elem()
	for _, ev := range envVars() {
		got = append(got, ev.name)
		sample := map[reflect.Kind]string{reflect.String: "x", reflect.Int: "1", reflect.Int64: "1", reflect.Float64: "0.5", reflect.Bool: "true", reflect.Slice: "a,b"}[ev.typ.Kind()]
		if ev.typ == durationType {
			sample = "1m"
		}
		if err := setFromString(root.FieldByIndex(ev.index), sample); err != nil {
			t.Errorf("%s: setting %q: %v", ev.name, sample, err)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("envVars() =\n%q\nwant\n%q", got, want)
	}
}

// TestMatrixAliases checks that each seed name stands for a generic
// variable of the same type, so applyMatrixAliases can set it.
func TestMatrixAliases(t *testing.T) {
	vars := map[string]envVar{}
	for _, ev := range envVars() {
		vars[ev.name] = ev
	}
	for _, a := range matrixAliases {
		ev, ok := vars[a.name]
		if !ok {
			t.Errorf("%s stands for %s, which is not a config variable", a.alias, a.name)
			continue
		}
		if want := "ICEBOX_" + a.alias; a.name != want {
			t.Errorf("%s stands for %s, want %s", a.alias, a.name, want)
		}
		if ev.typ.Kind() != reflect.String && ev.typ.Kind() != reflect.Bool {
			t.Errorf("%s: unexpected type %s", a.name, ev.typ)
		}
	}
	if len(matrixAliases) != 6 {
		t.Errorf("%d Matrix aliases, want the seed's 6", len(matrixAliases))
	}
	for _, name := range []string{envMatrixToken, envMatrixTokenFile, envMatrixPassword, envMatrixPasswordFile} {
		if _, ok := vars[name]; !ok {
			t.Errorf("%s is not a config variable", name)
		}
	}
}

func TestMatrixToken(t *testing.T) {
	dir := testFiles(t)
	const tok = "syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c"
	tests := []struct {
		name    string
		m       Matrix
		want    string
		wantErr string
		wantIs  error // a sentinel the error must match, if any
	}{
		{name: "inline, kept as is", m: Matrix{AccessToken: tok}, want: tok},
		{name: "file, trimmed", m: Matrix{AccessTokenFile: filepath.Join(dir, "token")}, want: tok},
		{name: "both", m: Matrix{AccessToken: tok, AccessTokenFile: filepath.Join(dir, "token")}, wantErr: "config: matrix: access_token and access_token_file are both set"},
		{name: "nothing set", m: Matrix{}, wantErr: "config: matrix: none of access_token, access_token_file, password and password_file is set"},
		{name: "missing file", m: Matrix{AccessTokenFile: filepath.Join(dir, "nope")}, wantErr: "config: matrix.access_token_file: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{name: "empty file", m: Matrix{AccessTokenFile: filepath.Join(dir, "token-empty")}, wantErr: "config: matrix.access_token_file: " + filepath.Join(dir, "token-empty") + " is empty"},
		{name: "password instead", m: Matrix{Password: testPassword}, wantErr: "config: matrix: a password is set, not an access token", wantIs: ErrMatrixPasswordLogin},
		{name: "password file instead", m: Matrix{PasswordFile: filepath.Join(dir, "nope")}, wantErr: "config: matrix: a password is set, not an access token", wantIs: ErrMatrixPasswordLogin},
		{name: "token and password", m: Matrix{AccessTokenFile: filepath.Join(dir, "token"), Password: testPassword}, wantErr: "config: matrix: an access token and a password are both set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.m.Token()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Token() error = %v, want %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("Token() error %v does not match %v", err, tt.wantIs)
				}
				if tt.wantIs == nil && errors.Is(err, ErrMatrixPasswordLogin) {
					t.Errorf("Token() error %v matches ErrMatrixPasswordLogin", err)
				}
				if got != "" || strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), testPassword) {
					t.Errorf("Token() = %q, %v: leaks the token", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Token() error: %v", err)
			}
			if got != tt.want {
				t.Errorf("Token() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMatrixLoginPassword(t *testing.T) {
	dir := testFiles(t)
	tests := []struct {
		name    string
		m       Matrix
		want    string
		wantErr string
	}{
		{name: "inline, kept as is", m: Matrix{Password: " " + testPassword + " "}, want: " " + testPassword + " "},
		{name: "file, trimmed", m: Matrix{PasswordFile: filepath.Join(dir, "password")}, want: testPassword},
		{name: "both", m: Matrix{Password: testPassword, PasswordFile: filepath.Join(dir, "password")}, wantErr: "config: matrix: password and password_file are both set"},
		{name: "neither", m: Matrix{}, wantErr: "config: matrix: neither password nor password_file is set"},
		{name: "token instead", m: Matrix{AccessToken: "syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c"}, wantErr: "config: matrix: neither password nor password_file is set"},
		{name: "token and password", m: Matrix{AccessToken: "syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c", PasswordFile: filepath.Join(dir, "password")}, wantErr: "config: matrix: an access token and a password are both set"},
		{name: "missing file", m: Matrix{PasswordFile: filepath.Join(dir, "nope")}, wantErr: "config: matrix.password_file: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{name: "empty file", m: Matrix{PasswordFile: filepath.Join(dir, "password-empty")}, wantErr: "config: matrix.password_file: " + filepath.Join(dir, "password-empty") + " is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.m.LoginPassword()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("LoginPassword() error = %v, want %q", err, tt.wantErr)
				}
				if got != "" || strings.Contains(err.Error(), "s3cr3t") {
					t.Errorf("LoginPassword() = %q, %v: leaks the password", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoginPassword() error: %v", err)
			}
			if got != tt.want {
				t.Errorf("LoginPassword() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestMatrixPasswordNotEchoed checks that no error about a bad Matrix login,
// from Validate, Token or LoginPassword, shows the password or any part of
// it that a reader could take for it.
func TestMatrixPasswordNotEchoed(t *testing.T) {
	dir := testFiles(t)
	valid := func() Matrix {
		return Matrix{Enabled: true, HomeserverURL: "https://matrix.voip.test", ServiceUser: "@icebox:voip.test", VoIP: VoIP{Enabled: true, Version: "1"}}
	}
	const placeholder = "CHANGE-ME " + testPassword
	tests := []struct {
		name string
		edit func(m *Matrix)
	}{
		{"token and password", func(m *Matrix) { m.AccessToken, m.Password = "syt_aWNlYm94_abcdefghijklmnopqrst_0a1b2c", testPassword }},
		{"token file and password", func(m *Matrix) { m.AccessTokenFile, m.Password = filepath.Join(dir, "token"), testPassword }},
		{"password and password file", func(m *Matrix) { m.Password, m.PasswordFile = testPassword, filepath.Join(dir, "password") }},
		{"placeholder password", func(m *Matrix) { m.Password = placeholder }},
		{"world-readable password file", func(m *Matrix) { m.PasswordFile = filepath.Join(dir, "password-world") }},
		{"password in an unparsable url", func(m *Matrix) { m.HomeserverURL = "https://bot:" + testPassword + "@matrix.voip.test" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Matrix = valid()
			tt.edit(&c.Matrix)
			verr := c.Validate()
			if verr == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			_, terr := c.Matrix.Token()
			_, perr := c.Matrix.LoginPassword()
			for _, err := range []error{verr, terr, perr} {
				if err == nil {
					continue
				}
				for _, part := range strings.Fields(testPassword) {
					if strings.Contains(err.Error(), part) {
						t.Errorf("error %q shows %q, part of the password", err, part)
					}
				}
			}
		})
	}
}

func TestSecretValue(t *testing.T) {
	dir := testFiles(t)
	tests := []struct {
		name    string
		secret  Secret
		want    string
		wantErr string
	}{
		{name: "inline, kept as is", secret: Secret{KID: "a", Secret: " inline secret \n"}, want: " inline secret \n"},
		{name: "file, trimmed", secret: Secret{KID: "a", SecretFile: filepath.Join(dir, "secret")}, want: "0123456789abcdef0123456789abcdef"},
		{name: "neither: caller generates", secret: Secret{KID: "a"}, want: ""},
		{name: "both", secret: Secret{KID: "a", Secret: "x", SecretFile: "y"}, wantErr: "secret and secret_file are both set"},
		{name: "missing file", secret: Secret{KID: "a", SecretFile: filepath.Join(dir, "nope")}, wantErr: "config: secret a: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.secret.Value()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Value() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Value() error: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Value() = %q, want %q", got, tt.want)
			}
			if tt.want == "" && got != nil {
				t.Errorf("Value() = %q, want nil", got)
			}
		})
	}
}

func TestJWTSecretValue(t *testing.T) {
	dir := testFiles(t)
	tests := []struct {
		name    string
		jwt     JWT
		want    string
		wantErr string
	}{
		{name: "inline, kept as is", jwt: JWT{HS256Secret: " inline \n"}, want: " inline \n"},
		{name: "file, trimmed", jwt: JWT{HS256SecretFile: filepath.Join(dir, "secret")}, want: "0123456789abcdef0123456789abcdef"},
		{name: "neither: JWT off", jwt: JWT{}, want: ""},
		{name: "both", jwt: JWT{HS256Secret: "x", HS256SecretFile: "y"}, wantErr: "config: auth.jwt: hs256_secret and hs256_secret_file are both set"},
		{name: "missing file", jwt: JWT{HS256SecretFile: filepath.Join(dir, "nope")}, wantErr: "config: auth.jwt.hs256_secret_file: open " + filepath.Join(dir, "nope") + ": no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.jwt.SecretValue()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("SecretValue() error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("SecretValue() error: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("SecretValue() = %q, want %q", got, tt.want)
			}
			if tt.want == "" && got != nil {
				t.Errorf("SecretValue() = %q, want nil", got)
			}
		})
	}
}

func TestStaticTokenHash(t *testing.T) {
	want := [32]byte{0x9f, 0x86, 0xd0, 0x81, 0x88, 0x4c, 0x7d, 0x65, 0x9a, 0x2f, 0xea, 0xa0, 0xc5, 0x5a, 0xd0, 0x15,
		0xa3, 0xbf, 0x4f, 0x1b, 0x2b, 0x0b, 0x82, 0x2c, 0xd1, 0x5d, 0x6c, 0x15, 0xb0, 0xf0, 0x0a, 0x08}
	for _, in := range []string{
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
	} {
		got, err := StaticToken{SHA256: in, User: "u"}.Hash()
		if err != nil || got != want {
			t.Errorf("Hash(%s) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "9f86", "zz86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"} {
		_, err := StaticToken{SHA256: in, User: "u"}.Hash()
		if want := `config: static token of user "u": sha256 must be 64 hex characters`; err == nil || err.Error() != want {
			t.Errorf("Hash(%q) error = %v, want %q", in, err, want)
		}
	}
}

func TestParsePeer(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{in: "10.0.0.0/8", want: "10.0.0.0/8"},
		{in: "192.168.1.7", want: "192.168.1.7/32"},
		{in: "2001:db8::1", want: "2001:db8::1/128"},
		{in: "fc00::/7", want: "fc00::/7"},
		{in: "10.0.0.0/33", wantErr: `invalid CIDR "10.0.0.0/33"`},
		{in: "10.0.0.1/8", wantErr: `CIDR "10.0.0.1/8" has host bits set (did you mean "10.0.0.0/8"?)`},
		{in: "fe80::1%eth0", wantErr: `invalid IP or CIDR "fe80::1%eth0"`},
		{in: "", wantErr: `invalid IP or CIDR ""`},
		{in: "example.org", wantErr: `invalid IP or CIDR "example.org"`},
	}
	for _, tt := range tests {
		got, err := ParsePeer(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParsePeer(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("ParsePeer(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}
