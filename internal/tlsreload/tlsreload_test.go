package tlsreload

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// writePair writes a self-signed certificate named cn and its key.
func writePair(t *testing.T, dir, cn string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func served(t *testing.T, r *Reloader) string {
	t.Helper()
	c, err := r.TLSConfig().GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

// TestReload: a reload serves the new pair; a broken pair is refused and
// the current certificate stays, with an error logged.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writePair(t, dir, "first")
	var logs bytes.Buffer
	r, err := New(certFile, keyFile, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, r); got != "first" {
		t.Fatalf("serves %q, want first", got)
	}
	writePair(t, dir, "second")
	r.Reload("test")
	if got := served(t, r); got != "second" {
		t.Fatalf("after Reload serves %q, want second", got)
	}
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Reload("test")
	if got := served(t, r); got != "second" {
		t.Errorf("after a failed reload serves %q, want second", got)
	}
	if !bytes.Contains(logs.Bytes(), []byte("keeping the current certificate")) {
		t.Errorf("the failed reload was not logged:\n%s", logs.String())
	}
	if _, err := New(certFile, keyFile, zerolog.Nop()); err == nil {
		t.Error("New with a broken pair: want an error")
	}
}

// TestWatchEndsWithContext: Watch returns nil once its context is done (and
// TestMain checks that nothing of it is left running).
func TestWatchEndsWithContext(t *testing.T) {
	certFile, keyFile := writePair(t, t.TempDir(), "first")
	r, err := New(certFile, keyFile, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch: got %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch did not return after its context ended")
	}
}

// TestExpiry: the gauge follows the served certificate per listener, and
// leaves out a listener without one.
func TestExpiry(t *testing.T) {
	certFile, keyFile := writePair(t, t.TempDir(), "first")
	r, err := New(certFile, keyFile, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	e := NewExpiry(reg)
	e.Track("turn", r.NotAfter)
	e.Track("api", func() time.Time { return time.Time{} })
	want := fmt.Sprintf(`
# HELP icebox_tls_certificate_expiry_timestamp_seconds When the certificate a TLS listener serves expires (Unix seconds); listener is api or turn.
# TYPE icebox_tls_certificate_expiry_timestamp_seconds gauge
icebox_tls_certificate_expiry_timestamp_seconds{listener="turn"} %d
`, r.NotAfter().Unix())
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	if r.NotAfter().IsZero() {
		t.Error("NotAfter of a loaded certificate is zero")
	}
}
