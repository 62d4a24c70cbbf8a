package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testSecret = "e2e-secret-0123456789abcdef" // inline secrets must be >= 16 bytes

// TestServeRelaysWithPionClient allocates through `icebox serve` with pion's
// TURN client over UDP, TCP and TLS, using credentials from `icebox creds`,
// and relays a datagram each way to a plain UDP peer.
func TestServeRelaysWithPionClient(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)
	in := startIcebox(t, testConfig(filepath.Join(dir, "state"), cfgOpts{
		secret: testSecret, tlsCert: certFile, tlsKey: keyFile,
	}))
	cred := mintCreds(t, in.cfgPath, "alice")
	if !strings.HasSuffix(cred.Username, ":alice") {
		t.Errorf("creds username %q, want it to end in :alice", cred.Username)
	}
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}

	// README: icebox_turn_allocations_total's transport is udp or tcp; TLS counts as tcp.
	for _, tc := range []struct{ transport, addr, label string }{
		{"udp", in.turnAddr(), "udp"},
		{"tcp", in.turnTCPAddr(), "tcp"},
		{"tls", in.tlsAddr(), "tcp"},
	} {
		t.Run(tc.transport, func(t *testing.T) {
			before := in.metrics(t)
			a, err := allocate(t, tc.transport, tc.addr, tlsConf, cred.Username, cred.Password)
			if err != nil {
				t.Fatal(err)
			}
			relayRoundTrip(t, a, listenPeer(t))

			allocs := mAllocations + `{transport="` + tc.label + `"}`
			after := in.waitMetrics(t, func(m map[string]float64) bool {
				return m[mToPeer] > before[mToPeer] && m[mFromPeer] > before[mFromPeer] && m[allocs] > before[allocs]
			})
			for _, m := range []string{mToPeer, mFromPeer, allocs} {
				if after[m] <= before[m] {
					t.Errorf("%s: %v before, %v after relaying over %s; want it to grow", m, before[m], after[m], tc.transport)
				}
			}
		})
	}
}

// TestServeRejectsBadConfig checks that a bad configuration stops
// `icebox serve` with exit code 2 and a message naming the key, before it
// listens on anything; and that `icebox config check` agrees.
func TestServeRejectsBadConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  func(t *testing.T, dir string, httpPort int) string
		want []string // substrings of stderr
	}{{
		name: "bad port",
		cfg: func(_ *testing.T, dir string, httpPort int) string {
			return fmt.Sprintf("state_dir: %q\nturn:\n  listen:\n    udp: [\"127.0.0.1:99999\"]\nhttp:\n  listen: \"127.0.0.1:%d\"\n",
				filepath.Join(dir, "state"), httpPort)
		},
		want: []string{"turn.listen.udp[0]", "99999"},
	}, {
		name: "unknown key",
		cfg: func(_ *testing.T, dir string, httpPort int) string {
			return fmt.Sprintf("state_dir: %q\nturn:\n  lissten: {}\nhttp:\n  listen: \"127.0.0.1:%d\"\n",
				filepath.Join(dir, "state"), httpPort)
		},
		want: []string{"turn.lissten"},
	}, {
		name: "world-readable secret file",
		cfg: func(t *testing.T, dir string, httpPort int) string {
			secret := filepath.Join(dir, "secret")
			if err := os.WriteFile(secret, []byte(testSecret+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(secret, 0o644); err != nil { // in spite of the umask
				t.Fatal(err)
			}
			return fmt.Sprintf("state_dir: %q\ncredentials:\n  secrets:\n    - kid: k1\n      secret_file: %q\n      compat: true\nhttp:\n  listen: \"127.0.0.1:%d\"\n",
				filepath.Join(dir, "state"), secret, httpPort)
		},
		want: []string{"credentials.secrets[0].secret_file", "readable by others"},
	}, {
		name: "inverted relay range",
		cfg: func(_ *testing.T, dir string, httpPort int) string {
			return fmt.Sprintf("state_dir: %q\nturn:\n  relay:\n    min_port: 41000\n    max_port: 40000\nhttp:\n  listen: \"127.0.0.1:%d\"\n",
				filepath.Join(dir, "state"), httpPort)
		},
		want: []string{"turn.relay.min_port", "max_port"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			httpPort := freePort(t)
			path := filepath.Join(dir, "icebox.yaml")
			if err := os.WriteFile(path, []byte(tc.cfg(t, dir, httpPort)), 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"serve", "--config", path},
				{"config", "check", "--config", path},
			} {
				cmd := strings.Join(args[:len(args)-2], " ")
				_, stderr, code := runIcebox(t, exitTimeout, args...)
				if code != 2 {
					t.Errorf("icebox %s: exit code %d, want 2; stderr:\n%s", cmd, code, stderr)
				}
				for _, w := range tc.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("icebox %s: stderr does not name %q:\n%s", cmd, w, stderr)
					}
				}
				if c, err := net.DialTimeout("tcp", loopback(httpPort), time.Second); err == nil {
					c.Close()
					t.Errorf("icebox %s: something listens on the configured HTTP port %d", cmd, httpPort)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
				t.Errorf("icebox serve created state_dir although the configuration was refused")
			}
		})
	}

	t.Run("valid", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := strings.NewReplacer(phTURNPort, "3478", phHTTPPort, "8080").
			Replace(testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret}))
		path := filepath.Join(dir, "icebox.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := runIcebox(t, exitTimeout, "config", "check", "--config", path)
		if code != 0 || !strings.Contains(stdout, ": ok") {
			t.Errorf("icebox config check on a valid file: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
		}
	})
}

// TestServeGeneratesSecretOnce checks that with no secret configured, serve
// generates <state_dir>/secrets/k1 (mode 0600), keeps it across a restart,
// and so still accepts a credential minted before the restart.
func TestServeGeneratesSecretOnce(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stateDir := filepath.Join(dir, "state")
	cfg := testConfig(stateDir, cfgOpts{})
	secretPath := filepath.Join(stateDir, "secrets", "k1")

	first := startIcebox(t, cfg)
	fi, err := os.Stat(secretPath)
	if err != nil {
		t.Fatalf("serve did not generate the secret: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", secretPath, perm)
	}
	secret1, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(bytes.TrimSpace(secret1)) < 16 {
		t.Errorf("generated secret is %d bytes, want >= 16", len(bytes.TrimSpace(secret1)))
	}
	cred := mintCreds(t, first.cfgPath, "alice")
	if _, err := allocate(t, "udp", first.turnAddr(), nil, cred.Username, cred.Password); err != nil {
		t.Fatalf("before restart: %v", err)
	}
	first.stop(t)

	second := startIcebox(t, cfg)
	secret2, err := os.ReadFile(secretPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret1, secret2) {
		t.Errorf("the secret changed across a restart")
	}
	if _, err := allocate(t, "udp", second.turnAddr(), nil, cred.Username, cred.Password); err != nil {
		t.Fatalf("a credential minted before the restart: %v", err)
	}
}

// TestServeRefusesLockedStateDir checks that a second serve on the same
// state_dir exits 1 saying the state is locked, without ever opening a socket
// (SO_REUSEPORT would let it share the first one's UDP port).
func TestServeRefusesLockedStateDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := startIceboxProcess(t, testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret}))

	if len(openSockets(in.Process.Pid)) == 0 {
		t.Fatalf("no sockets of the running instance (pid %d) in /proc; the check below would see nothing", in.Process.Pid)
	}

	second := startProcess(t, iceboxBin, "serve", "--config", in.cfgPath) // same ports, same state_dir
	sockets := map[string]bool{}
	exited := waitFor(exitTimeout, func() bool {
		for _, s := range openSockets(second.Process.Pid) {
			sockets[s] = true
		}
		return second.exited()
	})
	if !exited {
		t.Fatalf("second icebox serve still runs after %s; stderr:\n%s", exitTimeout, second.out.String())
	}
	if code := second.ProcessState.ExitCode(); code != 1 {
		t.Errorf("second icebox serve: exit code %d, want 1; stderr:\n%s", code, second.out.String())
	}
	if !strings.Contains(second.out.String(), "locked") {
		t.Errorf("second icebox serve does not say the state is locked:\n%s", second.out.String())
	}
	if len(sockets) > 0 {
		t.Errorf("second icebox serve opened sockets %v before failing on the lock", slices.Sorted(maps.Keys(sockets)))
	}

	// The first one still serves on its ports.
	if code := httpStatus(in.httpURL("/readyz")); code != http.StatusOK {
		t.Errorf("first instance /readyz: %d, want 200", code)
	}
	cred := mintCreds(t, in.cfgPath, "alice")
	if _, err := allocate(t, "udp", in.turnAddr(), nil, cred.Username, cred.Password); err != nil {
		t.Errorf("first instance after the second failed: %v", err)
	}
}

// TestConfigDefaultsAndVersion checks that `icebox config defaults` prints a
// file `icebox config check` accepts, and `icebox version`.
func TestConfigDefaultsAndVersion(t *testing.T) {
	t.Parallel()
	defaults, stderr, code := runIcebox(t, exitTimeout, "config", "defaults")
	if code != 0 || defaults == "" {
		t.Fatalf("icebox config defaults: exit %d, %d bytes; stderr:\n%s", code, len(defaults), stderr)
	}
	// Only checked, never served: it listens on 0.0.0.0.
	path := filepath.Join(t.TempDir(), "defaults.yaml")
	if err := os.WriteFile(path, []byte(defaults), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runIcebox(t, exitTimeout, "config", "check", "--config", path)
	if code != 0 || !strings.Contains(stdout, ": ok") {
		t.Errorf("icebox config check on `config defaults`: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}

	stdout, stderr, code = runIcebox(t, exitTimeout, "version")
	if code != 0 || !strings.HasPrefix(stdout, "icebox ") {
		t.Errorf("icebox version: exit %d, stdout %q, want it to start with \"icebox \"; stderr:\n%s", code, stdout, stderr)
	}
}

// TestICEServersAPI checks GET /calls/ice_servers: URIs with the bound ports
// and a credential for the user that allocates; a request that names no
// user is refused.
//
// It speaks both generations of the API: the committed one names the user in
// ?user= (400 missing_user without it); the bearer-token one (auth section,
// in progress) takes the user from the token (401 without one). The token is
// configured through ICEBOX_AUTH_STATIC_TOKENS, which an icebox without the
// auth section ignores (unknown ICEBOX_* names are not config keys).
func TestICEServersAPI(t *testing.T) {
	t.Parallel()
	token := "e2e-token-" + rand.Text()
	hash := sha256.Sum256([]byte(token))
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}),
		"ICEBOX_AUTH_STATIC_TOKENS="+hex.EncodeToString(hash[:])+":alice")

	code, body := httpGet(t, in.httpURL("/calls/ice_servers"), token)
	if code != http.StatusOK {
		t.Fatalf("GET /calls/ice_servers as alice: %d %s", code, body)
	}
	var resp struct {
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username"`
			Credential string   `json:"credential"`
		} `json:"ice_servers"`
		TTL int64 `json:"ttl"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("ice_servers body %s: %v", body, err)
	}
	port, tcpPort := strconv.Itoa(in.turnPort), strconv.Itoa(in.turnTCPPort)
	wantTURN := map[string]bool{
		"turn:127.0.0.1:" + port + "?transport=udp":    false,
		"turn:127.0.0.1:" + tcpPort + "?transport=tcp": false,
	}
	var user, pass string
	for _, s := range resp.ICEServers {
		for _, u := range s.URLs {
			if !strings.HasPrefix(u, "turn:") {
				continue
			}
			if _, ok := wantTURN[u]; !ok {
				t.Errorf("unexpected TURN URI %q (bound ports %s/udp, %s/tcp)", u, port, tcpPort)
			}
			wantTURN[u] = true
			user, pass = s.Username, s.Credential
		}
	}
	for u, seen := range wantTURN {
		if !seen {
			t.Errorf("ice_servers lacks %q; got %s", u, body)
		}
	}
	if !strings.HasSuffix(user, ":alice") || pass == "" {
		t.Errorf("TURN credential username %q, credential %q; want a username ending in :alice and a password", user, pass)
	}
	if resp.TTL <= 0 {
		t.Errorf("ttl %d, want > 0", resp.TTL)
	}
	if _, err := allocate(t, "udp", in.turnAddr(), nil, user, pass); err != nil {
		t.Errorf("the ice_servers credential does not allocate: %v", err)
	}

	// The user comes from the bearer token: without one the request is refused.
	wantStatus, wantCode := http.StatusUnauthorized, "unauthorized"
	code, body = httpGet(t, in.httpURL("/calls/ice_servers"), "")
	var apiErr struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &apiErr); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if code != wantStatus || apiErr.Error.Code != wantCode || apiErr.Error.Message == "" {
		t.Errorf("GET /calls/ice_servers without a token: %d %s; want %d with error code %s",
			code, body, wantStatus, wantCode)
	}
}
