package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket listens like systemd does for sd_notify datagrams.
func notifySocket(t *testing.T) (path string, msgs <-chan string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return path, ch
}

// waitNotify waits for a datagram containing want.
func waitNotify(t *testing.T, msgs <-chan string, want string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("notify socket closed before %q", want)
			}
			if strings.Contains(m, want) {
				return
			}
		case <-deadline:
			t.Fatalf("no %q on the notify socket", want)
		}
	}
}

func TestSystemdNotifyDrainAndSecondSignal(t *testing.T) {
	t.Parallel()
	sock, msgs := notifySocket(t)
	cfg := strings.Replace(testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}),
		"drain_timeout: 2s", "drain_timeout: 60s", 1)
	in := startIceboxProcess(t, cfg, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=200000")
	waitNotify(t, msgs, "READY=1")
	waitNotify(t, msgs, "WATCHDOG=1")

	// An open allocation keeps a draining icebox alive.
	c := mintCreds(t, in.cfgPath, "alice")
	if _, err := allocate(t, "udp", in.turnAddr(), nil, c.Username, c.Password); err != nil {
		t.Fatal(err)
	}
	if err := in.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitNotify(t, msgs, "STOPPING=1")
	if !waitFor(5*time.Second, func() bool { return httpStatus(in.httpURL("/readyz")) == http.StatusServiceUnavailable }) {
		t.Fatal("/readyz did not turn 503 while draining")
	}
	if in.exited() {
		t.Fatalf("icebox exited on the first SIGTERM with an allocation open:\n%s", in.out.String())
	}
	if err := in.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the second SIGTERM did not end the drain")
	}
	if code := in.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after a forced drain = %d, want 0", code)
	}
	if !strings.Contains(in.out.String(), "second signal") {
		t.Errorf("the log does not say the drain was cut short:\n%s", in.out.String())
	}
}

func TestHealthCommand(t *testing.T) {
	t.Parallel()
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}))
	if out, errOut, code := runIcebox(t, 10*time.Second, "health", "--url", in.httpURL("/readyz")); code != 0 || !strings.Contains(out, "ready") {
		t.Fatalf("health on a ready icebox: exit %d, %q %q", code, out, errOut)
	}
	closed := "http://" + loopback(freePort(t)) + "/readyz"
	if _, _, code := runIcebox(t, 10*time.Second, "health", "--url", closed, "--timeout", "2s"); code != 1 {
		t.Fatalf("health on nothing: exit %d, want 1", code)
	}
}

func TestSIGHUPReloadsKeyring(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	token := "reload-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	writeSecret := func(name, value string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	k1 := writeSecret("k1", "first-secret-0123456789abcdef")
	base := testConfig(filepath.Join(dir, "state"), cfgOpts{})
	cfg := base + "credentials:\n  secrets:\n    - {kid: k1, secret_file: " + k1 + ", compat: true}\n"
	in := startIceboxProcess(t, cfg, "ICEBOX_AUTH_STATIC_TOKENS="+hex.EncodeToString(sum[:])+":alice")
	kidOf := func() string {
		code, body := httpGet(t, in.httpURL("/calls/ice_servers"), token)
		if code != http.StatusOK {
			t.Fatalf("ice_servers: %d %s", code, body)
		}
		switch {
		case bytes.Contains(body, []byte(`.k2:alice"`)):
			return "k2"
		case bytes.Contains(body, []byte(`.k1:alice"`)):
			return "k1"
		}
		t.Fatalf("no kid in %s", body)
		return ""
	}
	if got := kidOf(); got != "k1" {
		t.Fatalf("before reload the active kid is %s", got)
	}
	old := mintCreds(t, in.cfgPath, "bob") // signed by k1

	// Rotate: k2 signs, k1 is still accepted.
	k2 := writeSecret("k2", "second-secret-0123456789abcdef")
	rotated := base + "credentials:\n  secrets:\n    - {kid: k2, secret_file: " + k2 + "}\n    - {kid: k1, secret_file: " + k1 + ", compat: true}\n"
	rotated = strings.NewReplacer(phTURNPort, strconv.Itoa(in.turnPort), phTLSPort, strconv.Itoa(in.tlsPort), phHTTPPort, strconv.Itoa(in.httpPort)).Replace(rotated)
	if err := os.WriteFile(in.cfgPath, []byte(rotated), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool { return kidOf() == "k2" }) {
		t.Fatalf("after SIGHUP the active kid is still k1:\n%s", in.out.String())
	}
	if _, err := allocate(t, "udp", in.turnAddr(), nil, old.Username, old.Password); err != nil {
		t.Fatalf("a k1 credential stopped working after the rotation: %v", err)
	}

	// A broken config keeps the current keyring.
	if err := os.WriteFile(in.cfgPath, []byte("credentials: {secrets: [{kid: BAD}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(in.out.String(), "the configuration is invalid; nothing reloaded")
	}) {
		t.Fatal("a bad config on SIGHUP was not reported")
	}
	if got := kidOf(); got != "k2" {
		t.Fatalf("after a failed reload the active kid is %s, want k2", got)
	}
}

func TestTLSCertificateReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)
	in := startIceboxProcess(t, testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret, tlsCert: certFile, tlsKey: keyFile}))
	served := func() []byte {
		conn, err := tls.Dial("tcp", in.tlsAddr(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // comparing raw certificates
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	fileDER := func() []byte {
		b, err := os.ReadFile(certFile)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		return blk.Bytes
	}
	first := fileDER()
	if !bytes.Equal(served(), first) {
		t.Fatal("icebox does not serve the configured certificate")
	}
	// A TURN allocation over TLS made with the first certificate...
	c := mintCreds(t, in.cfgPath, "alice")
	a, err := allocate(t, "tls", in.tlsAddr(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, c.Username, c.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := listenPeer(t)
	relayRoundTrip(t, a, peer)

	// ...survives the replacement of the files (picked up without a signal).
	newDir := t.TempDir()
	newCert, newKey, _ := writeTestCert(t, newDir)
	for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	second := fileDER()
	if !waitFor(15*time.Second, func() bool { return bytes.Equal(served(), second) }) {
		t.Fatalf("the new certificate is not served after the files changed:\n%s", in.out.String())
	}
	relayRoundTrip(t, a, peer)

	// An invalid certificate keeps the current one.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := in.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(15*time.Second, func() bool {
		return strings.Contains(in.out.String(), "keeping the current certificate")
	}) {
		t.Fatal("an invalid certificate was not reported")
	}
	if !bytes.Equal(served(), second) {
		t.Fatal("an invalid certificate replaced the served one")
	}
}

func TestHTTPSCertificateReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile, pool := writeTestCert(t, dir)
	httpPort := freePort(t)
	cfg := strings.NewReplacer(phTURNPort, strconv.Itoa(freePort(t)), phTLSPort, "0", phHTTPPort, strconv.Itoa(httpPort)).
		Replace(testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret}))
	cfg += "  tls: {cert_file: " + certFile + ", key_file: " + keyFile + "}\n"
	cfgPath := filepath.Join(dir, "icebox.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, iceboxBin, "serve", "--config", cfgPath)
	base := "https://" + loopback(httpPort)
	trusted := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if !waitFor(readyTimeout, func() bool {
		resp, err := trusted.Get(base + "/readyz")
		if err != nil {
			return p.exited()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) || p.exited() {
		t.Fatalf("icebox with HTTPS did not become ready:\n%s", p.out.String())
	}
	if _, errOut, code := runIcebox(t, 10*time.Second, "health", "--insecure", "--url", base+"/readyz"); code != 0 {
		t.Fatalf("health over https: exit %d %s", code, errOut)
	}
	served := func() []byte {
		conn, err := tls.Dial("tcp", loopback(httpPort), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // comparing raw certificates
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	// A keep-alive connection opened with the first certificate stays usable.
	resp, err := trusted.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // read to EOF so the connection is reused
	resp.Body.Close()

	newCert, newKey, _ := writeTestCert(t, t.TempDir())
	for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(certFile)
	blk, _ := pem.Decode(b)
	if err := p.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !waitFor(15*time.Second, func() bool { return bytes.Equal(served(), blk.Bytes) }) {
		t.Fatalf("HTTPS still serves the old certificate:\n%s", p.out.String())
	}
	resp, err = trusted.Get(base + "/healthz") // the old connection, reused
	if err != nil {
		t.Fatalf("an HTTPS keep-alive connection broke on reload: %v", err)
	}
	resp.Body.Close()
	if err := p.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		t.Fatal("icebox did not stop")
	}
}
