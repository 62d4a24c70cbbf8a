package acmecert

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/internal/acmecert/acmetest"
)

// listen binds a loopback TCP port for the test.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func port(l net.Listener) int { return l.Addr().(*net.TCPAddr).Port }

// serveEcho serves l over TLS with cfg, echoing lines back, until the
// test ends.
func serveEcho(t *testing.T, l net.Listener, cfg *tls.Config) {
	t.Helper()
	tl := tls.NewListener(l, cfg)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// dial opens a TLS connection that verifies the server against roots.
func dial(t *testing.T, addr, name string, roots *x509.CertPool) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second},
		Config: &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12}}
	c, err := d.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		t.Fatalf("write on the connection: %v", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != msg+"\n" {
		t.Fatalf("echo on the connection: %q, %v", got, err)
	}
}

func rootPool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no root in", file)
	}
	return pool
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run starts m until the test ends.
func run(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
		m.Close()
	})
}

// TestObtainRenewHTTP01: icebox's manager gets a certificate from pebble
// through a real http-01 validation on its own challenge listener; a TLS
// client verifies it against pebble's root. Renewals (pebble issues 12 s
// certificates) swap the certificate for new handshakes while a
// connection opened before keeps working. With pebble gone, a renewal
// fails: counted, in Status, logged, and the old certificate serves on.
func TestObtainRenewHTTP01(t *testing.T) {
	httpLn, tlsLn := listen(t), listen(t)
	p := acmetest.New(t)
	p.Start(t, acmetest.Options{HTTPPort: port(httpLn), TLSPort: port(tlsLn), Validity: 12 * time.Second})
	reg := prometheus.NewRegistry()
	logs := &syncBuffer{}
	storage := filepath.Join(t.TempDir(), "acme")
	const domain = "api.renew.icebox.test"
	m, err := New(Config{
		Domains: []string{domain}, Email: "ops@icebox.test", CA: p.DirectoryURL(), CARoots: rootPool(t, p.RootFile()),
		AgreeTOS: true, Challenge: HTTP01, HTTPListener: httpLn, StorageDir: storage,
		RenewCheckInterval: 200 * time.Millisecond, RenewalWindowRatio: 0.75,
		Logger: zerolog.New(logs).Level(zerolog.InfoLevel), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "no certificate yet") {
		t.Errorf("Ready before any certificate: %v, want no certificate yet", err)
	}
	serveEcho(t, tlsLn, m.TLSConfig())
	start := time.Now()
	run(t, m)
	waitFor(t, 30*time.Second, "first certificate", func() bool { return m.Ready() == nil })
	t.Logf("time to first certificate (http-01, pebble on loopback): %s", time.Since(start).Round(time.Millisecond))

	roots := p.IssuerRoots(t)
	kept, err := dial(t, tlsLn.Addr().String(), domain, roots)
	if err != nil {
		t.Fatalf("TLS with the obtained certificate, verified against pebble's root: %v", err)
	}
	defer kept.Close()
	first := kept.ConnectionState().PeerCertificates[0]
	echo(t, kept, "before")

	// A renewal swaps the certificate for new handshakes.
	var renewed *x509.Certificate
	swapStart := time.Now()
	waitFor(t, 30*time.Second, "a renewed certificate served", func() bool {
		c, err := dial(t, tlsLn.Addr().String(), domain, roots)
		if err != nil {
			return false
		}
		defer c.Close()
		leaf := c.ConnectionState().PeerCertificates[0]
		if leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			renewed = leaf
			return true
		}
		return false
	})
	t.Logf("renewed certificate served %s after the first handshake (first not_after %s, renewed %s)",
		time.Since(swapStart).Round(time.Millisecond), first.NotAfter.Format(time.TimeOnly), renewed.NotAfter.Format(time.TimeOnly))
	if n := testutil.ToFloat64(m.metrics.renewed); n < 1 {
		t.Errorf("icebox_acme_renewals_total = %v, want ≥ 1", n)
	}
	if n := testutil.ToFloat64(m.metrics.obtained); n != 1 {
		t.Errorf("icebox_acme_obtained_total = %v, want 1", n)
	}
	echo(t, kept, "after the swap")

	// Certificates, keys and the account are private.
	err = filepath.WalkDir(storage, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		}
		if strings.HasSuffix(path, ".lock") || strings.Contains(path, "/locks") {
			return nil
		}
		if info.Mode().Perm()&^want != 0 {
			t.Errorf("%s: mode %v, want %v or stricter", path, info.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The CA goes away: the next renewal fails and the old certificate
	// serves on.
	p.Stop()
	failuresBefore := testutil.ToFloat64(m.metrics.failures.WithLabelValues("renew"))
	waitFor(t, 30*time.Second, "a failed renewal", func() bool {
		return testutil.ToFloat64(m.metrics.failures.WithLabelValues("renew")) > failuresBefore
	})
	serving, err := dial(t, tlsLn.Addr().String(), domain, roots)
	if err != nil {
		t.Fatalf("TLS after the failed renewal: %v", err)
	}
	leaf := serving.ConnectionState().PeerCertificates[0]
	serving.Close()
	if time.Now().After(leaf.NotAfter) {
		t.Errorf("after the failed renewal an expired certificate serves (not_after %s)", leaf.NotAfter)
	}
	if err := m.Ready(); err != nil {
		t.Errorf("Ready with a valid certificate and a failed renewal: %v, want nil", err)
	}
	st := m.Status()
	if len(st) != 1 || st[0].LastError == "" || !st[0].Renewal || st[0].NotAfter == nil || st[0].LastErrorAt == nil {
		t.Errorf("Status after the failed renewal: %+v, want last_error, renewal and not_after", st)
	}
	if !strings.Contains(logs.String(), "certificate renewal failed; the current certificate keeps serving") {
		t.Errorf("the failed renewal was not logged:\n%s", logs.String())
	}
	for _, secret := range []string{"PRIVATE KEY", "BEGIN"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	echo(t, kept, "after the failure")
}

// TestObtainTLSALPN01: the tls-alpn-01 challenge is answered on the TLS
// listener itself (pebble validates on its port), and ordinary clients,
// with or without ALPN, see no ALPN protocol negotiated.
func TestObtainTLSALPN01(t *testing.T) {
	tlsLn := listen(t)
	p := acmetest.New(t)
	p.Start(t, acmetest.Options{HTTPPort: 1, TLSPort: port(tlsLn)})
	const domain = "turn.alpn.icebox.test"
	m, err := New(Config{
		Domains: []string{domain}, CA: p.DirectoryURL(), CARoots: rootPool(t, p.RootFile()),
		AgreeTOS: true, Challenge: TLSALPN01, TLSALPNAddr: tlsLn.Addr().String(),
		StorageDir: filepath.Join(t.TempDir(), "acme"), Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, tlsLn, m.TLSConfig())
	start := time.Now()
	run(t, m)
	waitFor(t, 30*time.Second, "first certificate", func() bool { return m.Ready() == nil })
	t.Logf("time to first certificate (tls-alpn-01): %s", time.Since(start).Round(time.Millisecond))
	roots := p.IssuerRoots(t)
	for _, protos := range [][]string{nil, {"stun.turn"}, {"h2", "http/1.1"}} {
		d := &tls.Dialer{Config: &tls.Config{ServerName: domain, RootCAs: roots, NextProtos: protos}}
		c, err := d.DialContext(context.Background(), "tcp", tlsLn.Addr().String())
		if err != nil {
			t.Fatalf("TLS offering ALPN %q: %v", protos, err)
		}
		if got := c.(*tls.Conn).ConnectionState().NegotiatedProtocol; got != "" {
			t.Errorf("ALPN %q: negotiated %q, want none", protos, got)
		}
		echo(t, c, "hello")
		c.Close()
	}
	// No SNI (a TURN client given an IP address): the first domain's
	// certificate, which a client verifying an empty name refuses.
	c, err := dial(t, tlsLn.Addr().String(), "", roots)
	if err == nil {
		c.Close()
		t.Error("a client verifying an empty name accepted the certificate")
	}
	// Another name: the same certificate (which that client refuses).
	for _, sni := range []string{"", "other.icebox.test"} {
		raw, err := tls.Dial("tcp", tlsLn.Addr().String(), &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("TLS with SNI %q: %v", sni, err)
		}
		if got := raw.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != domain {
			t.Errorf("with SNI %q the certificate names %q, want %s", sni, got, domain)
		}
		raw.Close()
	}
}

// TestNewErrors: what New refuses, with a message naming it.
func TestNewErrors(t *testing.T) {
	ln := listen(t)
	ok := Config{Domains: []string{"a.icebox.test"}, AgreeTOS: true, Challenge: HTTP01, HTTPListener: ln,
		StorageDir: filepath.Join(t.TempDir(), "acme")}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no domains", func(c *Config) { c.Domains = nil }, "no domains"},
		{"terms not agreed", func(c *Config) { c.AgreeTOS = false }, "terms of service"},
		{"unknown challenge", func(c *Config) { c.Challenge = "dns-01" }, `challenge "dns-01"`},
		{"http-01 without listener", func(c *Config) { c.HTTPListener = nil }, "HTTPListener"},
		{"tls-alpn-01 without address", func(c *Config) { c.Challenge = TLSALPN01 }, "TLSALPNAddr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.mutate(&c)
			m, err := New(c)
			if err == nil {
				m.Close()
				t.Fatalf("New: no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want %q", err, tc.want)
			}
		})
	}
	m, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.cfg.CA != LetsEncrypt {
		t.Errorf("default CA %q, want %q", m.cfg.CA, LetsEncrypt)
	}
	if fi, err := os.Stat(ok.StorageDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("storage dir: %v %v, want mode 0700", fi, err)
	}
}

// TestStoredCertificateAfterRestart: a certificate in the storage
// directory serves after a restart without the CA: nothing is ordered, and
// with the CA down nothing fails.
func TestStoredCertificateAfterRestart(t *testing.T) {
	httpLn := listen(t)
	p := acmetest.New(t)
	p.Start(t, acmetest.Options{HTTPPort: port(httpLn), TLSPort: 1})
	const domain = "stored.icebox.test"
	storage := filepath.Join(t.TempDir(), "acme")
	cfg := Config{Domains: []string{domain}, CA: p.DirectoryURL(), CARoots: rootPool(t, p.RootFile()),
		AgreeTOS: true, Challenge: HTTP01, HTTPListener: httpLn, StorageDir: storage, Logger: zerolog.Nop()}
	m1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m1.Watch(ctx) }()
	waitFor(t, 30*time.Second, "first certificate", func() bool { return m1.Ready() == nil })
	firstNotAfter := m1.NotAfter()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	m1.Close()
	p.Stop()

	cfg.HTTPListener = listen(t)
	cfg.Registerer = prometheus.NewRegistry()
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	run(t, m2)
	waitFor(t, 10*time.Second, "the stored certificate", func() bool { return m2.Ready() == nil })
	t.Logf("stored certificate serving %s after the restart", time.Since(start).Round(time.Millisecond))
	if !m2.NotAfter().Equal(firstNotAfter) {
		t.Errorf("after the restart serves a certificate until %s, want the stored one (%s)", m2.NotAfter(), firstNotAfter)
	}
	if n := testutil.ToFloat64(m2.metrics.obtained) + testutil.ToFloat64(m2.metrics.failures.WithLabelValues("obtain")); n != 0 {
		t.Errorf("the restart ordered or failed %v times, want 0", n)
	}
}
