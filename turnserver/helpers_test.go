package turnserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
)

const testRealm = "icebox.test"

var (
	testSecret    = []byte("turnserver-test-secret-0123456789")
	testOldSecret = []byte("turnserver-old-secret-0123456789")
	wrongSecret   = []byte("not-the-secret-at-all-0123456789")
)

// fakeClock is a settable clock shared by the keyring and the server.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// relayOptions adjust the test relay.
type relayOptions struct {
	allowLoopback bool
	quotas        Quotas
	maxDuration   time.Duration
	advertiseV4   netip.Addr // default: 127.0.0.1
	ipv6          bool       // also relay IPv6, bound on ::1, advertised as advertiseV6
	advertiseV6   netip.Addr
	errorRate     ErrorRate
	bindingRate   ErrorRate
	// hostAddrs, hostAddrsInterval: Config.HostAddrs and its interval.
	hostAddrs         func() ([]netip.Addr, error)
	hostAddrsInterval time.Duration
	// minPort, maxPort: the relay port range. Default: 40000–40999.
	minPort, maxPort uint16
	tcpMaxPerSource  int
	tcpMaxTotal      int
	tcpIdleTimeout   time.Duration
	revoked          []Revocation
	// wrapTCP, if set, wraps the TURN-over-TCP listener before New.
	wrapTCP func(net.Listener) net.Listener
	// permissionTimeout: pion's permission lifetime (default 5 minutes).
	permissionTimeout time.Duration
	// sfuKeys are SFU secrets (the current first, kids sfuN..sfu1);
	// sfuPeers the allow-list of their allocations.
	sfuKeys  []string
	sfuPeers []PeerRange
	// bandwidth: Config.Bandwidth; rateInterval: Config.RateInterval.
	bandwidth    Bandwidth
	rateInterval time.Duration
	// kernelPath: Config.KernelPath; logTo, if set, also gets the log.
	kernelPath string
	logTo      *lockedBuffer
	// kernelPathMode: Config.KernelPathMode.
	kernelPathMode string
	// udpGRO: Config.UDPGRO.
	udpGRO string
	// mode: where the relay, its clients and peers live (modes_test.go);
	// zero: loopback.
	mode testMode
}

// lockedBuffer is a log the test reads while the server writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testStart is the fake clock's time when a test relay starts.
var testStart = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// testRelay is a running Server on loopback with UDP, TCP and TLS listeners.
type testRelay struct {
	srv     *Server
	reg     *prometheus.Registry
	clock   *fakeClock
	keyring *credentials.Keyring
	ring    *atomic.Pointer[credentials.Keyring] // what the server uses; setKeyring swaps it
	udp     string
	tcp     string
	tls     string
	tlsConf *tls.Config // client side, trusting the server's certificate
	mode    testMode
	policy  PolicyConfig // the policy New got, for a test's SetPolicy
}

func startRelay(t *testing.T, o relayOptions) *testRelay {
	t.Helper()
	r, err := startRelayErr(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startRelayErr is startRelay returning New's error.
func startRelayErr(t *testing.T, o relayOptions) (*testRelay, error) {
	t.Helper()
	clock := &fakeClock{t: testStart}
	secrets := []credentials.Secret{
		{KID: "k2", Key: testSecret},
		{KID: "k1", Key: testOldSecret, Compat: true},
	}
	for i, k := range o.sfuKeys {
		secrets = append(secrets, credentials.Secret{KID: fmt.Sprintf("sfu%d", len(o.sfuKeys)-i), Key: []byte(k), SFU: true})
	}
	kr, err := credentials.NewKeyring(secrets, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ring := &atomic.Pointer[credentials.Keyring]{}
	ring.Store(kr)
	ctx := context.Background()
	here := o.mode.relayIP()
	udp, _, err := ListenUDP(ctx, netip.AddrPortFrom(here, 0).String(), 2, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := ListenTCP(ctx, netip.AddrPortFrom(here, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	serverTLS, clientTLS := selfSignedTLS(t)
	tlsLn, err := ListenTCP(ctx, netip.AddrPortFrom(here, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	if !o.advertiseV4.IsValid() {
		o.advertiseV4 = here
	}
	if o.maxDuration == 0 {
		o.maxDuration = time.Hour
	}
	if o.minPort == 0 {
		o.minPort, o.maxPort = 40000, 40999
	}
	cfg := Config{
		Realm:                 testRealm,
		Keyring:               ring.Load,
		SFUPeers:              o.sfuPeers,
		RelayBindIPv4:         here,
		RelayIPv4:             o.advertiseV4,
		MinPort:               o.minPort,
		MaxPort:               o.maxPort,
		Quotas:                o.quotas,
		Bandwidth:             o.bandwidth,
		RateInterval:          o.rateInterval,
		MaxAllocationDuration: o.maxDuration,
		ErrorRate:             o.errorRate,
		BindingRate:           o.bindingRate,
		HostAddrs:             o.hostAddrs,
		HostAddrsInterval:     o.hostAddrsInterval,
		TCPMaxPerSource:       o.tcpMaxPerSource,
		TCPMaxTotal:           o.tcpMaxTotal,
		TCPIdleTimeout:        o.tcpIdleTimeout,
		Revoked:               o.revoked,
		Logger:                testLogger(t),
		Now:                   clock.Now,
		permissionTimeout:     o.permissionTimeout,
		KernelPath:            o.kernelPath,
		KernelPathMode:        o.kernelPathMode,
		UDPGRO:                o.udpGRO,
	}
	if o.logTo != nil {
		cfg.Logger = zerolog.New(zerolog.MultiLevelWriter(cfg.Logger, o.logTo))
	}
	relayAddrs := []netip.Addr{o.advertiseV4}
	if o.ipv6 {
		cfg.RelayBindIPv6 = netip.IPv6Loopback()
		cfg.RelayIPv6 = o.advertiseV6
		relayAddrs = append(relayAddrs, o.advertiseV6)
	}
	var ports []uint16
	for _, a := range []net.Addr{udp[0].LocalAddr(), tcp.Addr(), tlsLn.Addr()} {
		ap, _ := addrPortOf(a)
		ports = append(ports, ap.Port())
	}
	pc := PolicyConfig{
		AllowLoopback: o.allowLoopback,
		Allowed:       o.mode.peerAllowed(),
		RelayAddrs:    relayAddrs,
		MinPort:       cfg.MinPort,
		MaxPort:       cfg.MaxPort,
		ServicePorts:  ports,
	}
	cfg.Policy, err = NewPolicy(pc)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	var tcpLn net.Listener = tcp
	if o.wrapTCP != nil {
		tcpLn = o.wrapTCP(tcp)
	}
	srv, err := New(cfg, Listeners{UDP: udp, TCP: []net.Listener{tcpLn}, TLS: []net.Listener{tlsLn}, TLSConfig: serverTLS})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &testRelay{
		srv: srv, reg: reg, clock: clock, keyring: kr, ring: ring,
		udp: udp[0].LocalAddr().String(), tcp: tcp.Addr().String(), tls: tlsLn.Addr().String(),
		tlsConf: clientTLS, mode: o.mode, policy: pc,
	}, nil
}

// mint returns a credential for user (and call) signed with the active kid.
func (r *testRelay) mint(t *testing.T, user, call string, ttl time.Duration) credentials.Credential {
	t.Helper()
	c, err := r.keyring.Mint(credentials.Subject{User: user, CallID: call}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counter reads a counter or gauge from the relay's registry.
func (r *testRelay) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

var _ = testutil.ToFloat64 // keep testutil available for ad-hoc checks

type transport string

const (
	overUDP transport = "udp"
	overTCP transport = "tcp"
	overTLS transport = "tls"
)

// newClient connects a pion TURN client to the relay over tr.
func (r *testRelay) newClient(t *testing.T, tr transport, username, password string, family turn.RequestedAddressFamily) *turn.Client {
	t.Helper()
	var conn net.PacketConn
	var server string
	switch tr {
	case overUDP:
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn, server = pc, r.udp
	case overTCP:
		c, err := net.Dial("tcp", r.tcp)
		if err != nil {
			t.Fatal(err)
		}
		conn, server = turn.NewSTUNConn(c), r.tcp
	case overTLS:
		c, err := tls.Dial("tcp", r.tls, r.tlsConf)
		if err != nil {
			t.Fatal(err)
		}
		conn, server = turn.NewSTUNConn(c), r.tls
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr:         server,
		TURNServerAddr:         server,
		Conn:                   conn,
		Username:               username,
		Password:               password,
		Realm:                  testRealm,
		RTO:                    200 * time.Millisecond,
		RequestedAddressFamily: family,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		_ = conn.Close() // may already be closed by the client
	})
	return c
}

// dialTCP opens a plain TCP connection to the relay's TURN-over-TCP
// listener from the given loopback address.
func (r *testRelay) dialTCP(t *testing.T, from string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// stunBinding sends a Binding request over a TURN TCP connection and reads
// the response: it succeeds only if the server serves the connection.
func stunBinding(c net.Conn) error {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err := c.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	if _, err := c.Write(req.Raw); err != nil {
		return err
	}
	head := make([]byte, 20)
	if _, err := io.ReadFull(c, head); err != nil {
		return err
	}
	body := make([]byte, binary.BigEndian.Uint16(head[2:4]))
	if _, err := io.ReadFull(c, body); err != nil {
		return err
	}
	res := &stun.Message{Raw: append(head, body...)}
	if err := res.Decode(); err != nil {
		return err
	}
	if res.Type != stun.BindingSuccess || res.TransactionID != req.TransactionID {
		return fmt.Errorf("got %v, want a Binding success for the request", res.Type)
	}
	return nil
}

// requireClosedByServer reads from c and wants the server's close (EOF or
// reset), not a timeout.
func requireClosedByServer(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read got %v, want the server to close the connection within %v", err, within)
	}
}

// peer is a plain UDP socket on loopback that a relay sends to.
func newPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// exchange sends a message from the client through its allocation to the
// peer and one back, and checks both arrive intact.
func exchange(t *testing.T, relay net.PacketConn, peer *net.UDPConn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	want := []byte("to-peer " + t.Name())
	buf := make([]byte, 1500)
	// The first send installs the permission; resend until the peer hears it.
	var from net.Addr
	for from == nil {
		if time.Now().After(deadline) {
			t.Fatal("peer received nothing through the relay")
		}
		if _, err := relay.WriteTo(want, peer.LocalAddr()); err != nil {
			t.Fatalf("client WriteTo: %v", err)
		}
		if err := peer.SetReadDeadline(time.Now().Add(200 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		n, addr, err := peer.ReadFrom(buf)
		if err == nil {
			if string(buf[:n]) != string(want) {
				t.Fatalf("peer got %q, want %q", buf[:n], want)
			}
			from = addr
		}
	}
	if from.String() != relay.LocalAddr().String() {
		t.Fatalf("peer heard from %v, want the relay address %v", from, relay.LocalAddr())
	}
	back := []byte("from-peer " + t.Name())
	if _, err := peer.WriteTo(back, from); err != nil {
		t.Fatal(err)
	}
	if err := relay.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	n, addr, err := relay.ReadFrom(buf)
	if err != nil {
		t.Fatalf("client ReadFrom: %v", err)
	}
	if string(buf[:n]) != string(back) || addr.String() != peer.LocalAddr().String() {
		t.Fatalf("client got %q from %v, want %q from %v", buf[:n], addr, back, peer.LocalAddr())
	}
}

// stunRefresh sends an authenticated Refresh for the client's allocation by
// hand (pion's client refreshes only on its own timer).
func stunRefresh(t *testing.T, c *turn.Client, username, password string) error {
	t.Helper()
	lifetime := stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 2, 88}} // 600 s
	probe := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime, stun.Fingerprint)
	res, err := c.PerformTransaction(probe, c.TURNServerAddr(), false)
	if err != nil {
		return err
	}
	var nonce stun.Nonce
	if err := nonce.GetFrom(res.Msg); err != nil {
		return errors.New("no nonce in the 401 to an unauthenticated Refresh")
	}
	msg := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime,
		stun.NewUsername(username), stun.NewRealm(testRealm), nonce,
		stun.NewLongTermIntegrity(username, testRealm, password), stun.Fingerprint)
	res, err = c.PerformTransaction(msg, c.TURNServerAddr(), false)
	if err != nil {
		return err
	}
	if res.Msg.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res.Msg) // absent code leaves 0, which the message shows
		return errors.New("refresh refused: " + code.String())
	}
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

func requireErrContains(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got error %v, want one containing %q", err, want)
	}
}

// selfSignedTLS returns a server config with a fresh certificate for
// 127.0.0.1 and a client config that trusts it.
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "icebox test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return server, client
}

// testLogger collects log lines and prints them if the test fails. It does
// not write to t directly: pion's connection goroutines may log after the
// test has returned.
func testLogger(t *testing.T) zerolog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			t.Logf("server log:\n%s", buf.String())
			mu.Unlock()
		}
	})
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	return zerolog.New(w).Level(zerolog.DebugLevel)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
