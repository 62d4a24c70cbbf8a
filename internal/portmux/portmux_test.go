package portmux

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pires/go-proxyproto"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

func TestSniff(t *testing.T) {
	binding, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string // "" = refused
	}{
		{"stun binding", binding.Raw, ProtoTURN},
		{"tls record", []byte{0x16, 0x03, 0x01, 0x00, 0x10}, "tls"},
		{"http get", []byte("GET / HTTP/1.1\r\n"), ProtoHTTP},
		{"http/2 preface", []byte("PRI * HTTP/2.0\r\n"), ProtoHTTP},
		{"zero bits without the cookie", []byte{0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4}, ""},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, ""},
		{"lower case", []byte("get / HTTP/1.1\r\n"), ""},
		{"short stun", []byte{0x00, 0x01, 0x00}, ""},
		{"empty", nil, ""},
	} {
		got, err := sniff(bufio.NewReader(bytes.NewReader(tc.in)))
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("%s: sniff = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

// testMux serves a mux on loopback with a self-signed certificate for
// "localhost".
func testMux(t testing.TB, trusted ...netip.Prefix) (*Mux, *prometheus.Registry, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := New(Config{
		TLS:            &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		TrustedProxies: trusted,
		Logger:         zerolog.Nop(),
		Registerer:     reg,
	}, ln)
	if err != nil {
		t.Fatal(err)
	}
	m.Serve()
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m, reg, pool
}

// accept returns the next connection of l, or fails after 5s.
func accept(t testing.TB, l net.Listener) net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept: listener closed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("accept: nothing within 5s")
	}
	return nil
}

func readN(t testing.TB, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func TestRouting(t *testing.T) {
	m, reg, pool := testMux(t)
	addr := m.Addrs()[0].String()
	binding, _ := stun.Build(stun.TransactionID, stun.BindingRequest)

	// TURN over TCP: the bytes arrive whole at the TURN listener.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(binding.Raw); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, accept(t, m.TURN()), len(binding.Raw)); !bytes.Equal(got, binding.Raw) {
		t.Errorf("TURN listener read %x, want %x", got, binding.Raw)
	}

	// TURN over TLS with and without ALPN.
	for _, alpn := range [][]string{{"stun.turn"}, nil} {
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: alpn})
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if _, err := tc.Write(binding.Raw); err != nil {
			t.Fatal(err)
		}
		sc := accept(t, m.TURNTLS())
		if _, isTLS := sc.(*tls.Conn); isTLS != (alpn != nil) {
			t.Errorf("ALPN %v: handed a *tls.Conn: %v", alpn, isTLS)
		}
		if got := readN(t, sc, len(binding.Raw)); !bytes.Equal(got, binding.Raw) {
			t.Errorf("ALPN %v: TURN/TLS listener read %x", alpn, got)
		}
	}

	// HTTPS with ALPN h2 and without; plain HTTP.
	for _, alpn := range [][]string{{"h2"}, nil} {
		tc, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: alpn})
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		if _, err := tc.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, accept(t, m.HTTP()), 16); string(got) != "GET / HTTP/1.1\r\n" {
			t.Errorf("ALPN %v: HTTP listener read %q", alpn, got)
		}
	}
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	readN(t, accept(t, m.HTTP()), 16)

	// Garbage is closed and counted unknown.
	g, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Write([]byte{0xff, 0xfe, 0xfd, 0xfc, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	_ = g.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := g.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
		t.Errorf("garbage: read %d, %v; want the connection closed", n, err)
	}
	for p, want := range map[string]float64{ProtoTURN: 1, ProtoTURNTLS: 2, ProtoHTTPS: 2, ProtoHTTP: 1, ProtoUnknown: 1} {
		if got := testutil.ToFloat64(m.m.conns.WithLabelValues(p)); got != want {
			t.Errorf("connections{protocol=%q} = %v, want %v", p, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "icebox_portmux_connections_total"); err != nil || n != 5 {
		t.Errorf("gathered %d series (%v), want 5 (fixed labels)", n, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestProxyProtocol(t *testing.T) {
	m, _, _ := testMux(t, netip.MustParsePrefix("127.0.0.3/32"))
	addr := m.Addrs()[0].String()
	binding, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	dialFrom := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	client := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40123}
	for _, version := range []byte{1, 2} {
		h := proxyproto.HeaderProxyFromAddrs(version, client, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443})
		c := dialFrom("127.0.0.3")
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(binding.Raw); err != nil {
			t.Fatal(err)
		}
		sc := accept(t, m.TURN())
		if sc.RemoteAddr().String() != client.String() {
			t.Errorf("v%d: RemoteAddr %s, want the header's %s", version, sc.RemoteAddr(), client)
		}
		if got := readN(t, sc, len(binding.Raw)); !bytes.Equal(got, binding.Raw) {
			t.Errorf("v%d: read %x after the header", version, got)
		}
	}
	closed := func(c net.Conn) bool {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 1))
		return n == 0 && err != nil && !isTimeout(err)
	}
	// From an untrusted source, a header closes the connection.
	for _, version := range []byte{1, 2} {
		c := dialFrom("127.0.0.2")
		h := proxyproto.HeaderProxyFromAddrs(version, client, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443})
		_, _ = h.WriteTo(c)
		_, _ = c.Write(binding.Raw)
		if !closed(c) {
			t.Errorf("v%d header from an untrusted source: connection not closed", version)
		}
	}
	// A trusted source without a header is refused.
	c := dialFrom("127.0.0.3")
	_, _ = c.Write(binding.Raw)
	if !closed(c) {
		t.Error("trusted source without a header: connection not closed")
	}
	for r, want := range map[string]float64{"untrusted": 2, "missing": 1} {
		if got := testutil.ToFloat64(m.m.proxyRefused.WithLabelValues(r)); got != want {
			t.Errorf("proxy_refused{reason=%q} = %v, want %v", r, got, want)
		}
	}
}

// TestCloseEndsPending: Close ends the wait for a client that sends
// nothing yet.
func TestCloseEndsPending(t *testing.T) {
	m, _, _ := testMux(t)
	c, err := net.Dial("tcp", m.Addrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Wait until the mux holds it, then close the mux.
	deadline := time.Now().Add(5 * time.Second)
	for len(m.pending) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
	done := make(chan error, 1)
	go func() { done <- m.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a silent client")
	}
	if _, err := m.TURN().Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// BenchmarkClassify is the cost the shared port adds to a connection's
// start: dial, first bytes, hand-over to the TURN listener, against the
// same over a plain listener.
func BenchmarkClassify(b *testing.B) {
	binding, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	run := func(b *testing.B, addr string, l net.Listener) {
		buf := make([]byte, len(binding.Raw))
		for b.Loop() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(binding.Raw); err != nil {
				b.Fatal(err)
			}
			sc, err := l.Accept()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(sc, buf); err != nil {
				b.Fatal(err)
			}
			sc.Close()
			c.Close()
		}
	}
	b.Run("direct", func(b *testing.B) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		run(b, l.Addr().String(), l)
	})
	b.Run("mux", func(b *testing.B) {
		m, _, _ := testMux(b)
		run(b, m.Addrs()[0].String(), m.TURN())
	})
	b.Run("mux-tls", func(b *testing.B) {
		m, _, pool := testMux(b)
		conf := &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"stun.turn"}}
		buf := make([]byte, len(binding.Raw))
		for b.Loop() {
			c, err := tls.DialWithDialer(&net.Dialer{}, "tcp", m.Addrs()[0].String(), conf)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Write(binding.Raw); err != nil {
				b.Fatal(err)
			}
			sc, err := m.TURNTLS().Accept()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(sc, buf); err != nil {
				b.Fatal(err)
			}
			sc.Close()
			c.Close()
		}
	})
}
