package main

// `icebox check` against icebox and Debian's coturn on loopback: passing
// servers over UDP, TCP and TLS, and the misconfigurations it must name.

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/probe"
)

// checkTimeout bounds one `icebox check` run: a few steps of at most
// --timeout each and a half-second burst per URL.
const checkTimeout = 60 * time.Second

// runCheck runs `icebox check --json args...`, parses the report and
// returns it with the exit code. The report must never contain secret.
func runCheck(t *testing.T, secret string, args ...string) (*probe.Report, int, string) {
	t.Helper()
	stdout, stderr, code := runIcebox(t, checkTimeout, append([]string{"check", "--json", "--timeout", "3s"}, args...)...)
	if secret != "" && (strings.Contains(stdout, secret) || strings.Contains(stderr, secret)) {
		t.Errorf("icebox check printed a secret; stdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	var rep probe.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("icebox check %s: exit %d, stdout is not a JSON report (%v):\n%s\nstderr:\n%s", strings.Join(args, " "), code, err, stdout, stderr)
	}
	return &rep, code, stderr
}

// requirePass requires every result to pass with every packet back.
func requirePass(t *testing.T, rep *probe.Report, code int, wantResults int) {
	t.Helper()
	if code != 0 || !rep.OK {
		t.Errorf("exit %d, ok %v; want 0 and true", code, rep.OK)
	}
	if len(rep.Results) != wantResults {
		t.Errorf("%d results, want %d", len(rep.Results), wantResults)
	}
	for _, r := range rep.Results {
		if !r.OK() {
			t.Errorf("%s: verdict %s: %s (hint: %s)", r.URL, r.Verdict, r.Message, r.Hint)
			continue
		}
		if strings.HasPrefix(r.URL, "turn") && (r.Stats == nil || r.Stats.Received != r.Stats.Sent || r.Relay == "" || r.PeerRelay == "") {
			t.Errorf("%s: relay %q peer %q stats %+v; want both relays and every packet back", r.URL, r.Relay, r.PeerRelay, r.Stats)
		}
		if r.Mapped == "" {
			t.Errorf("%s: no mapped address", r.URL)
		}
	}
}

// onlyResult returns the report's single result.
func onlyResult(t *testing.T, rep *probe.Report) *probe.Result {
	t.Helper()
	if len(rep.Results) != 1 {
		t.Fatalf("%d results, want 1", len(rep.Results))
	}
	return rep.Results[0]
}

// restCredential is a TURN REST username and password for secret, expiring
// at exp.
func restCredential(secret, user string, exp time.Time) (string, string) {
	u := strconv.FormatInt(exp.Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(u))
	return u, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func turnURLs(host string, udpPort, tcpPort, tlsPort int) []string {
	urls := []string{
		"turn:" + net.JoinHostPort(host, strconv.Itoa(udpPort)) + "?transport=udp",
		"turn:" + net.JoinHostPort(host, strconv.Itoa(tcpPort)) + "?transport=tcp",
	}
	if tlsPort != 0 {
		urls = append(urls, "turns:"+net.JoinHostPort(host, strconv.Itoa(tlsPort))+"?transport=tcp")
	}
	return urls
}

// TestCheckIcebox: icebox passes over UDP, TCP and TLS (its certificate
// verified with --ca), and as a STUN server; the human table says PASS.
func TestCheckIcebox(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeCert(t, filepath.Join(dir, "tls"), []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	in := startIcebox(t, testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret, tlsCert: cert, tlsKey: key}))

	args := append([]string{"--secret", testSecret, "--ca", cert, "--packets", "30"}, turnURLs("127.0.0.1", in.turnPort, in.turnTCPPort, in.tlsPort)...)
	args = append(args, "stun:"+in.turnAddr())
	rep, code, _ := runCheck(t, testSecret, args...)
	requirePass(t, rep, code, 4)
	for _, r := range rep.Results {
		if r.Transport == probe.TLS && (r.TLS == nil || !r.TLS.Verified) {
			t.Errorf("%s: TLS %+v, want a verified certificate", r.URL, r.TLS)
		}
		if r.BehindNAT == nil || *r.BehindNAT {
			t.Errorf("%s: behind NAT %v on loopback", r.URL, r.BehindNAT)
		}
	}

	// The human table, from a name that the certificate holds too.
	stdout, stderr, code := runIcebox(t, checkTimeout, "check", "--secret", testSecret, "--ca", cert,
		"turns:localhost:"+strconv.Itoa(in.tlsPort), "turn:"+in.turnAddr())
	if code != 0 || !strings.Contains(stdout, "PASS: 2 of 2 passed") || !strings.Contains(stdout, "verdict: ok") ||
		!strings.Contains(stdout, "relay ") || strings.Contains(stdout+stderr, testSecret) {
		t.Errorf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestCheckTLSCertificate: a certificate for another name is reported with
// the names it holds; --insecure goes on and passes with a warning.
func TestCheckTLSCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writeCert(t, filepath.Join(dir, "tls"), []string{"turn.example.org"}, nil, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	in := startIcebox(t, testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret, tlsCert: cert, tlsKey: key}))
	url := "turns:" + in.tlsAddr()

	rep, code, _ := runCheck(t, testSecret, "--secret", testSecret, "--ca", cert, url)
	r := onlyResult(t, rep)
	if code != 1 || r.Verdict != probe.VerdictTLSName || !strings.Contains(r.Message, "turn.example.org") || !strings.Contains(r.Message, "127.0.0.1") {
		t.Errorf("name mismatch: exit %d, verdict %s: %q; want 1, %s naming turn.example.org and 127.0.0.1", code, r.Verdict, r.Message, probe.VerdictTLSName)
	}
	if r.TLS == nil || r.TLS.Verified || r.TLS.NotAfter.IsZero() {
		t.Errorf("TLS info %+v, want the certificate's names and expiry, not verified", r.TLS)
	}

	rep, code, _ = runCheck(t, testSecret, "--secret", testSecret, url) // the system's roots
	if r := onlyResult(t, rep); code != 1 || r.Verdict != probe.VerdictTLSName || !strings.Contains(r.Message, "unknown authority") {
		t.Errorf("without --ca: exit %d, verdict %s: %q; want 1, %s that also says unknown authority", code, r.Verdict, r.Message, probe.VerdictTLSName)
	}

	rep, code, _ = runCheck(t, testSecret, "--secret", testSecret, "--insecure", url)
	requirePass(t, rep, code, 1)
	if r := onlyResult(t, rep); len(r.Warnings) == 0 || !strings.Contains(r.Warnings[0], "turn.example.org") {
		t.Errorf("--insecure: warnings %q, want the certificate problem", r.Warnings)
	}
}

// TestCheckFailures: expired credentials, a wrong secret and a closed port
// each get their own verdict, a message that says what happened, and exit 1.
func TestCheckFailures(t *testing.T) {
	t.Parallel()
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}))
	closed := freePort(t)

	expUser, expPass := restCredential(testSecret, "alice", time.Now().Add(-10*time.Minute))
	for _, tc := range []struct {
		name   string
		args   []string
		secret string
		want   probe.Verdict
		msg    []string
	}{
		{"expired credentials", []string{"--username", expUser, "--password", expPass, "turn:" + in.turnAddr()}, expPass,
			probe.VerdictExpired, []string{"401", "expired at", "ago"}},
		{"wrong secret", []string{"--secret", "not-the-secret-at-all", "turn:" + in.turnAddr()}, "not-the-secret-at-all",
			probe.VerdictAuth, []string{"secret is wrong"}},
		{"closed udp port", []string{"--secret", testSecret, "turn:" + loopback(closed)}, testSecret,
			probe.VerdictRefused, []string{"connection refused", loopback(closed), "nothing listens"}},
		{"closed tcp port", []string{"--secret", testSecret, "turn:" + loopback(closed) + "?transport=tcp"}, testSecret,
			probe.VerdictRefused, []string{"connection refused", "tcp"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, code, stderr := runCheck(t, tc.secret, tc.args...)
			r := onlyResult(t, rep)
			if code != 1 || rep.OK || r.Verdict != tc.want {
				t.Fatalf("exit %d, verdict %s: %q; want 1 and %s; stderr:\n%s", code, r.Verdict, r.Message, tc.want, stderr)
			}
			for _, m := range tc.msg {
				if !strings.Contains(r.Message, m) {
					t.Errorf("message %q does not say %q", r.Message, m)
				}
			}
			if r.Hint == "" {
				t.Errorf("verdict %s without a hint", r.Verdict)
			}
		})
	}

	// The human form names the verdict and the fix.
	stdout, _, code := runIcebox(t, checkTimeout, "check", "--username", expUser, "--password", expPass, "turn:"+in.turnAddr())
	if code != 1 || !strings.Contains(stdout, "verdict: credentials_expired") || !strings.Contains(stdout, "fix: ") ||
		!strings.Contains(stdout, "FAIL: 0 of 1 passed") || strings.Contains(stdout, expPass) {
		t.Errorf("exit %d, stdout:\n%s", code, stdout)
	}
}

// TestCheckICEServersURL: --ice-servers-url checks exactly what the API
// hands a client, with the credentials it minted; a bad token is exit 1
// without the token in the message.
func TestCheckICEServersURL(t *testing.T) {
	t.Parallel()
	tok := newAPITokens()
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}), tok.env())
	rep, code, _ := runCheck(t, tok["alice"], "--ice-servers-url", in.httpURL("/calls/ice_servers"), "--token", tok["alice"], "--packets", "20")
	// The API lists stun:, turn: over UDP and TCP for the embedded relay.
	requirePass(t, rep, code, len(rep.Results))
	if len(rep.Results) < 3 || !strings.Contains(rep.Source, "/calls/ice_servers") {
		t.Errorf("%d results from %q, want stun, turn udp and turn tcp", len(rep.Results), rep.Source)
	}

	_, stderr, code := runIcebox(t, checkTimeout, "check", "--ice-servers-url", in.httpURL("/calls/ice_servers"), "--token", "wrong-token-123")
	if code != 1 || !strings.Contains(stderr, "401") || strings.Contains(stderr, "wrong-token-123") {
		t.Errorf("bad token: exit %d, stderr %q; want 1, a 401 and no token", code, stderr)
	}
}

// TestCheckUsage: a bad command line is exit 2, before any network.
func TestCheckUsage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no URL to check"},
		{[]string{"http://example.org"}, "not stun, stuns, turn or turns"},
		{[]string{"--secret", "a", "--username", "u", "--password", "p", "turn:127.0.0.1"}, "give one of"},
		{[]string{"--username", "u", "turn:127.0.0.1"}, "go together"},
		{[]string{"--ice-servers-url", "http://127.0.0.1:1/calls/ice_servers"}, "needs --token"},
		{[]string{"--packets", "0", "turn:127.0.0.1"}, "--packets"},
		{[]string{"--bogus"}, "bogus"},
	} {
		_, stderr, code := runIcebox(t, exitTimeout, append([]string{"check"}, tc.args...)...)
		if code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("icebox check %q: exit %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}
}

// coturnOpts vary startCoturn.
type coturnOpts struct {
	loopbackPeers bool // --allow-loopback-peers
	cert, key     string
}

// startCoturn runs Debian's turnserver on 127.0.0.1 with a REST shared
// secret and waits until it accepts connections; it returns its ports.
func startCoturn(t *testing.T, o coturnOpts) (port, tlsPort int) {
	t.Helper()
	bin := coturnTool(t, "turnserver")
	dir := t.TempDir()
	port = freePort(t)
	args := []string{
		"--use-auth-secret", "--static-auth-secret=" + testSecret, "--realm=check.icebox.test",
		"--no-cli", "--no-dtls", "--no-software-attribute", "--no-multicast-peers",
		"-L", "127.0.0.1", "--relay-ip", "127.0.0.1", "--listening-port", strconv.Itoa(port),
		"--min-port", strconv.Itoa(relayMinPort), "--max-port", strconv.Itoa(relayMaxPort),
		"--log-file=stdout", "--simple-log", "--pidfile", filepath.Join(dir, "turnserver.pid"),
		"--userdb", filepath.Join(dir, "turndb"),
	}
	if o.loopbackPeers {
		args = append(args, "--allow-loopback-peers")
	}
	if o.cert != "" {
		tlsPort = freePort(t)
		args = append(args, "--cert", o.cert, "--pkey", o.key, "--tls-listening-port", strconv.Itoa(tlsPort))
	} else {
		args = append(args, "--no-tls")
	}
	p := startProcess(t, bin, args...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("turnserver output:\n%s", tail(p.out.String(), 40))
		}
	})
	up := waitFor(readyTimeout, func() bool {
		if p.exited() {
			return true
		}
		c, err := net.DialTimeout("tcp", loopback(port), time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	if !up || p.exited() {
		t.Fatalf("turnserver did not come up on %d (exited: %v); output:\n%s", port, p.exited(), tail(p.out.String(), 40))
	}
	return port, tlsPort
}

// TestCheckCoturn: icebox check is a tool for any TURN server: Debian's
// coturn passes over UDP, TCP and TLS; one that refuses loopback peers
// (its default) gets the peer-policy verdict.
func TestCheckCoturn(t *testing.T) {
	t.Parallel()
	cert, key := writeCert(t, filepath.Join(t.TempDir(), "tls"), nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	port, tlsPort := startCoturn(t, coturnOpts{loopbackPeers: true, cert: cert, key: key})
	args := append([]string{"--secret", testSecret, "--ca", cert, "--packets", "30"}, turnURLs("127.0.0.1", port, port, tlsPort)...)
	rep, code, _ := runCheck(t, testSecret, append(args, "stun:"+loopback(port))...)
	requirePass(t, rep, code, 4)

	strict, _ := startCoturn(t, coturnOpts{})
	rep, code, _ = runCheck(t, testSecret, "--secret", testSecret, "turn:"+loopback(strict))
	r := onlyResult(t, rep)
	if code != 1 || r.Verdict != probe.VerdictPeerRefused || !strings.Contains(r.Message, "403") || !strings.Contains(r.Hint, "allow-loopback-peers") {
		t.Errorf("coturn without loopback peers: exit %d, verdict %s: %q (hint %q); want 1 and %s", code, r.Verdict, r.Message, r.Hint, probe.VerdictPeerRefused)
	}
}
