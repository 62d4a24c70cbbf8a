// Package acmetest runs pebble, Let's Encrypt's ACME test server, on
// loopback for tests: with its own HTTPS certificate (the root is written
// to a file, as an operator's ca_root_file), a DNS server that resolves
// every name to 127.0.0.1, and real http-01 / tls-alpn-01 validation
// against the ports a test gives it.
//
// pebble is a binary installed by scripts/install-pebble.sh; without it a
// test is skipped, and fails under CI=true.
package acmetest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"go/build"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/syncbuf"
	"github.com/miekg/dns"
)

// Version is the pebble release the tests run; it must match
// PEBBLE_VERSION in scripts/install-pebble.sh (TestInstallScriptPinsSameVersion).
const Version = "v2.10.3"

const module = "github.com/letsencrypt/pebble/v2"

const installHint = "run scripts/install-pebble.sh (make test-deps; needs the Go module proxy)"

// Options shape the CA.
type Options struct {
	// HTTPPort and TLSPort are where pebble validates http-01 and
	// tls-alpn-01 challenges, on 127.0.0.1 (the ports of icebox's
	// challenge listener and TLS listener).
	HTTPPort, TLSPort int
	// Validity is the lifetime of issued certificates. Default: 90 days.
	Validity time.Duration
}

// Pebble is one running pebble.
type Pebble struct {
	dir       string
	listen    string // ACME directory host:port
	mgmt      string // management interface host:port
	rootFile  string // root of pebble's HTTPS certificate
	tlsRoots  *x509.CertPool
	dnsAddr   string
	dnsServer *dns.Server
	opts      Options

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	out  *lockedBuffer
}

// Binary returns pebble's path, or ends the test: skipped without it,
// failed under CI=true.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := find()
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v; CI must run scripts/install-pebble.sh first (make test-deps)", err)
	}
	t.Skipf("%v; %s", err, installHint)
	return ""
}

// find looks in $PEBBLE_BIN, $PATH, $GOBIN and $(go env GOPATH)/bin, and
// checks the module version the binary was built from.
func find() (string, error) {
	var dirs []string
	if d := os.Getenv("PEBBLE_BIN"); d != "" {
		dirs = append(dirs, d)
	} else {
		if p, err := exec.LookPath("pebble"); err == nil {
			dirs = append(dirs, filepath.Dir(p))
		}
		if gobin := os.Getenv("GOBIN"); gobin != "" {
			dirs = append(dirs, gobin)
		}
		for _, gp := range filepath.SplitList(build.Default.GOPATH) {
			dirs = append(dirs, filepath.Join(gp, "bin"))
		}
	}
	for _, d := range dirs {
		path := filepath.Join(d, "pebble")
		info, err := buildinfo.ReadFile(path)
		if err != nil {
			continue
		}
		if info.Main.Path != module || info.Main.Version != Version {
			return "", fmt.Errorf("acmetest: %s is %s %s, want %s %s", path, info.Main.Path, info.Main.Version, module, Version)
		}
		return path, nil
	}
	return "", fmt.Errorf("acmetest: pebble not found in %s", strings.Join(dirs, ", "))
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// New prepares a pebble (its HTTPS certificate, ports, DNS server) without
// starting it, so that a test can configure icebox with DirectoryURL and
// RootFile before it knows its own ports. Start runs it; the test's
// cleanup stops everything.
func New(t testing.TB) *Pebble {
	t.Helper()
	p := &Pebble{dir: t.TempDir(),
		listen: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t))),
		mgmt:   net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	p.writeTLS(t)
	p.startDNS(t)
	t.Cleanup(p.Stop)
	return p
}

// DirectoryURL is the ACME directory.
func (p *Pebble) DirectoryURL() string { return "https://" + p.listen + "/dir" }

// RootFile is the PEM root that pebble's HTTPS certificate chains to.
func (p *Pebble) RootFile() string { return p.rootFile }

// writeTLS makes a root and a certificate for 127.0.0.1 and localhost.
func (p *Pebble) writeTLS(t testing.TB) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "acmetest pebble HTTPS root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p.rootFile = filepath.Join(p.dir, "https-root.pem")
	for _, f := range []struct {
		name, typ string
		der       []byte
	}{{"https-root.pem", "CERTIFICATE", rootDER}, {"cert.pem", "CERTIFICATE", der}, {"key.pem", "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(filepath.Join(p.dir, f.name), pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.tlsRoots = x509.NewCertPool()
	p.tlsRoots.AddCert(root)
}

// startDNS answers A queries for every name with 127.0.0.1, and every
// other query with no records: pebble's validation then reaches icebox on
// loopback whatever the name. Over TCP only: pebble asks a custom resolver
// over TCP.
func (p *Pebble) startDNS(t testing.TB) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.dnsAddr = l.Addr().String()
	started := make(chan struct{})
	p.dnsServer = &dns.Server{Listener: l, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			for _, q := range r.Question {
				if q.Qtype == dns.TypeA {
					m.Answer = append(m.Answer, &dns.A{
						Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
						A:   net.IPv4(127, 0, 0, 1)})
				}
			}
			_ = w.WriteMsg(m)
		})}
	go func() { _ = p.dnsServer.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = p.dnsServer.Shutdown() })
}

// Start runs pebble, validating on opts' ports, and waits until its
// directory answers.
func (p *Pebble) Start(t testing.TB, opts Options) {
	t.Helper()
	bin := Binary(t)
	if opts.Validity <= 0 {
		opts.Validity = 90 * 24 * time.Hour
	}
	p.opts = opts
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  p.listen,
		"managementListenAddress":        p.mgmt,
		"certificate":                    filepath.Join(p.dir, "cert.pem"),
		"privateKey":                     filepath.Join(p.dir, "key.pem"),
		"httpPort":                       opts.HTTPPort,
		"tlsPort":                        opts.TLSPort,
		"externalAccountBindingRequired": false,
		"keyAlgorithm":                   "ecdsa",
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "acmetest", "validityPeriod": int(opts.Validity / time.Second)}},
	}}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(p.dir, "pebble.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", p.dnsAddr, "-strict=false")
	// No random 0–15 s sleep before each validation.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("acmetest: start pebble: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done, p.out = cmd, done, out
	p.mu.Unlock()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble's output:\n%s", out.String())
		}
	})
	client := p.httpClient()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(p.DirectoryURL())
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-done:
			t.Fatalf("acmetest: pebble exited:\n%s", out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("acmetest: pebble's directory did not answer within 20s (%v):\n%s", err, out.String())
		}
	}
}

// Stop kills pebble (by its PID) and waits for it; the CA is gone, as
// when a real CA is down. Idempotent.
func (p *Pebble) Stop() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Output is what pebble has printed so far.
func (p *Pebble) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

func (p *Pebble) httpClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.tlsRoots}, DisableKeepAlives: true}}
}

// IssuerRoots returns the roots of the certificates this pebble issues
// (made afresh each start), from its management interface.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.mgmt+"/roots/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.httpClient().Do(req)
	if err != nil {
		t.Fatalf("acmetest: pebble's root: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("acmetest: pebble's root: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("acmetest: pebble's root is not PEM: %q", b)
	}
	return pool
}

// lockedBuffer collects pebble's output.
type lockedBuffer = syncbuf.Buffer
