package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/internal/acmecert/acmetest"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
)

// freePort returns a loopback TCP port that was free a moment ago: pebble
// must know the ports it validates on before the node binds them.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// acmeConfig is a node with TURN over TLS on turnPort and (apiTLS) the API
// over HTTPS on apiPort, both with certificates from pebble.
func acmeConfig(t *testing.T, p *acmetest.Pebble, challenge string, chalPort, turnPort, apiPort int, apiTLS bool, domains ...string) config.Config {
	t.Helper()
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.TURN.Listen.TLS = []string{fmt.Sprintf("127.0.0.1:%d", turnPort)}
	cfg.TURN.TLS.ACME = true
	cfg.HTTP.Listen = fmt.Sprintf("127.0.0.1:%d", apiPort)
	cfg.HTTP.TLS.ACME = apiTLS
	cfg.ACME = config.ACME{Domains: domains, CAURL: p.DirectoryURL(), CARootFile: p.RootFile(),
		Challenge: challenge, HTTPListen: fmt.Sprintf("127.0.0.1:%d", chalPort), AgreeTOS: true}
	return cfg
}

// pollUntil polls cond every 50 ms until it holds or timeout passes.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// httpsStatus GETs url over a new connection that verifies name against
// roots; it returns the status and the certificate served.
func httpsStatus(url, name string, roots *x509.CertPool) (int, *x509.Certificate, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{ServerName: name, RootCAs: roots}}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.TLS.PeerCertificates[0], nil
}

// httpsBody GETs url over TLS verified against roots and returns the body.
func httpsBody(t *testing.T, url, name string, roots *x509.CertPool) []byte {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{ServerName: name, RootCAs: roots}}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// turnOverTLS opens TURN over TLS to addr, verifying name against roots,
// and allocates with pion's client.
func turnOverTLS(t *testing.T, addr, name string, roots *x509.CertPool, user, pass string) (*turn.Client, net.PacketConn, *x509.Certificate) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp4", addr, &tls.Config{ServerName: name, RootCAs: roots})
	if err != nil {
		t.Fatalf("TURN over TLS: handshake verified against pebble's root: %v", err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	conn := turn.NewSTUNConn(c)
	t.Cleanup(func() { conn.Close() })
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	client, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: user, Password: pass, LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay, err := client.AllocateWithContext(ctx)
	if err != nil {
		t.Fatalf("allocate over TLS: %v", err)
	}
	t.Cleanup(func() { relay.Close() })
	return client, relay, leaf
}

// relayRoundTrip sends through the allocation to a fresh peer (which
// needs a CreatePermission on the TURN connection) and back.
func relayRoundTrip(t *testing.T, relay net.PacketConn, msg string) {
	t.Helper()
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := relay.WriteTo([]byte(msg), peer.LocalAddr()); err != nil {
		t.Fatalf("relay WriteTo: %v", err)
	}
	buf := make([]byte, 1500)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("peer got %q, %v; want %q", buf[:n], err, msg)
	}
	if _, err := peer.WriteTo([]byte("back:"+msg), from); err != nil {
		t.Fatal(err)
	}
	_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err = relay.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "back:"+msg {
		t.Fatalf("relay got %q, %v; want back:%s", buf[:n], err, msg)
	}
}

// refresh sends an authenticated Refresh for the allocation by hand
// (pion's client refreshes only on its own timer, minutes away).
func refresh(c *turn.Client, realm, user, pass string) error {
	lifetime := stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 2, 88}} // 600 s
	probe := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime, stun.Fingerprint)
	res, err := c.PerformTransaction(probe, c.TURNServerAddr(), false)
	if err != nil {
		return err
	}
	var nonce stun.Nonce
	if err := nonce.GetFrom(res.Msg); err != nil {
		return errors.New("no nonce in the answer to an unauthenticated Refresh")
	}
	msg := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetime,
		stun.NewUsername(user), stun.NewRealm(realm), nonce, stun.NewLongTermIntegrity(user, realm, pass), stun.Fingerprint)
	if res, err = c.PerformTransaction(msg, c.TURNServerAddr(), false); err != nil {
		return err
	}
	if res.Msg.Type.Class != stun.ClassSuccessResponse {
		var code stun.ErrorCodeAttribute
		_ = code.GetFrom(res.Msg)
		return errors.New("refresh refused: " + code.String())
	}
	return nil
}

// metric returns the value of one series of reg (0 when absent).
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue series
				}
			}
			return value(m)
		}
	}
	return 0
}

func value(m *dto.Metric) float64 {
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestNodeACME: a node gets certificates from pebble (real http-01
// validation on its challenge listener) for the API and TURN over TLS;
// an HTTPS client and pion's TURN client over TLS verify them against
// pebble's root. Renewals (pebble issues 21 s certificates, renewed with
// 7 s left: the failure below leaves time to see the old one serve) swap
// them for new handshakes while the TURN-over-TLS allocation opened before
// stays up (relay, CreatePermission and Refresh on its connection after
// the swap).
// With pebble gone, a renewal fails: counted, in ACMEStatus, and the node
// stays ready with the old certificate.
func TestNodeACME(t *testing.T) {
	p := acmetest.New(t)
	chalPort, turnPort, apiPort := freePort(t), freePort(t), freePort(t)
	p.Start(t, acmetest.Options{HTTPPort: chalPort, TLSPort: apiPort, Validity: 21 * time.Second})
	const turnName, apiName = "turn.node.icebox.test", "api.node.icebox.test"
	cfg := acmeConfig(t, p, config.ChallengeHTTP01, chalPort, turnPort, apiPort, true, turnName, apiName)
	reg := prometheus.NewRegistry()
	start := time.Now()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		Registry: reg, ACMERenewCheck: 200 * time.Millisecond})
	roots := p.IssuerRoots(t)
	readyz := "https://" + n.Addrs.HTTP + "/readyz"
	pollUntil(t, 30*time.Second, "/readyz 200 over HTTPS with the obtained certificate", func() bool {
		code, _, err := httpsStatus(readyz, apiName, roots)
		return err == nil && code == http.StatusOK
	})
	t.Logf("time to first certificates (2 domains, http-01) until /readyz answers 200 over HTTPS: %s", time.Since(start).Round(time.Millisecond))

	kr, err := credentials.NewKeyring([]credentials.Secret{{KID: "k1", Key: []byte(testSecret), Compat: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := kr.Mint(credentials.Subject{User: "alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, relay, firstLeaf := turnOverTLS(t, first(n.Addrs.TURNTLS), turnName, roots, cred.Username, cred.Password)
	relayRoundTrip(t, relay, "before the renewal")
	if got := metric(t, reg, "icebox_tls_certificate_expiry_timestamp_seconds", map[string]string{"listener": "turn"}); got == 0 {
		t.Error("no expiry gauge for the turn listener")
	}

	// Wait for a renewed certificate on a new TURN-over-TLS handshake.
	swap := time.Now()
	pollUntil(t, 40*time.Second, "a renewed certificate on TURN over TLS", func() bool {
		c, err := tls.Dial("tcp4", first(n.Addrs.TURNTLS), &tls.Config{ServerName: turnName, RootCAs: roots})
		if err != nil {
			return false
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(firstLeaf.SerialNumber) != 0
	})
	t.Logf("renewed certificate served %s after the allocation began", time.Since(swap).Round(time.Millisecond))
	if got := metric(t, reg, "icebox_acme_renewals_total", nil); got < 1 {
		t.Errorf("icebox_acme_renewals_total = %v, want ≥ 1", got)
	}
	if got := metric(t, reg, "icebox_acme_obtained_total", nil); got != 2 {
		t.Errorf("icebox_acme_obtained_total = %v, want 2 (one per domain)", got)
	}
	// The allocation made over the old certificate's connection lives on.
	relayRoundTrip(t, relay, "after the renewal")
	if err := refresh(client, cfg.TURN.Realm, cred.Username, cred.Password); err != nil {
		t.Errorf("Refresh on the TLS connection opened before the renewal: %v", err)
	}
	if code, _, err := httpsStatus(readyz, apiName, roots); err != nil || code != http.StatusOK {
		t.Errorf("/readyz after the renewal: %d %v", code, err)
	}

	// The CA goes away: the next renewal fails, the node stays ready.
	p.Stop()
	before := metric(t, reg, "icebox_acme_failures_total", map[string]string{"op": "renew"})
	pollUntil(t, 40*time.Second, "a failed renewal", func() bool {
		return metric(t, reg, "icebox_acme_failures_total", map[string]string{"op": "renew"}) > before
	})
	code, leaf, err := httpsStatus(readyz, apiName, roots)
	if err != nil || code != http.StatusOK {
		t.Errorf("/readyz with a failed renewal and a valid certificate: %d %v, want 200", code, err)
	} else if time.Now().After(leaf.NotAfter) {
		t.Errorf("an expired certificate serves (%s)", leaf.NotAfter)
	}
	var failed bool
	for _, s := range n.ACMEStatus() {
		if s.LastError != "" && s.Renewal && s.NotAfter != nil {
			failed = true
		}
	}
	if !failed {
		t.Errorf("ACMEStatus after the failed renewal: %+v, want a renewal error next to a valid certificate", n.ACMEStatus())
	}
	// /readyz tells anyone that the renewal fails (when, not why: no token).
	body := httpsBody(t, readyz, apiName, roots)
	var ready struct {
		Status  string `json:"status"`
		Details struct {
			ACME []struct {
				Domain        string     `json:"domain"`
				NotAfter      *time.Time `json:"not_after"`
				Failing       string     `json:"failing"`
				LastFailureAt *time.Time `json:"last_failure_at"`
			} `json:"acme"`
		} `json:"details"`
	}
	if err := json.Unmarshal(body, &ready); err != nil || ready.Status != "ready" || len(ready.Details.ACME) == 0 {
		t.Fatalf("/readyz body %s: %v", body, err)
	}
	failing := 0
	for _, d := range ready.Details.ACME {
		if d.NotAfter == nil {
			t.Errorf("/readyz details of %s: %+v, want its expiry", d.Domain, d)
		}
		if d.Failing == "renew" && d.LastFailureAt != nil {
			failing++
		}
	}
	if failing == 0 {
		t.Errorf("/readyz details %s: no domain's renewal failing", body)
	}
	if strings.Contains(string(body), "error\"") {
		t.Errorf("/readyz carries an error text: %s", body)
	}
	relayRoundTrip(t, relay, "after the failed renewal")
}

// TestNodeACMETLSALPN: with tls-alpn-01 the CA's validation is answered by
// the TURN-over-TLS listener itself; TURN clients then allocate over it.
func TestNodeACMETLSALPN(t *testing.T) {
	p := acmetest.New(t)
	turnPort, apiPort := freePort(t), freePort(t)
	p.Start(t, acmetest.Options{HTTPPort: 1, TLSPort: turnPort})
	const turnName = "turn.alpn.node.icebox.test"
	cfg := acmeConfig(t, p, config.ChallengeTLSALPN01, 0, turnPort, apiPort, false, turnName)
	start := time.Now()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	pollUntil(t, 30*time.Second, "/readyz 200", func() bool {
		resp, err := http.Get("http://" + n.Addrs.HTTP + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	t.Logf("time to first certificate (tls-alpn-01 on the TURN listener): %s", time.Since(start).Round(time.Millisecond))
	kr, err := credentials.NewKeyring([]credentials.Secret{{KID: "k1", Key: []byte(testSecret), Compat: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := kr.Mint(credentials.Subject{User: "bob"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, relay, _ := turnOverTLS(t, first(n.Addrs.TURNTLS), turnName, p.IssuerRoots(t), cred.Username, cred.Password)
	relayRoundTrip(t, relay, "alpn")
}

// TestNodeACMEUnreadyWithoutCertificate: while no certificate could be
// obtained (the CA is down from the start), /readyz is 503, the failure is
// counted and in ACMEStatus; TURN over UDP serves meanwhile.
func TestNodeACMEUnreadyWithoutCertificate(t *testing.T) {
	p := acmetest.New(t) // never started (no binary needed): nothing answers at its address
	chalPort, turnPort, apiPort := freePort(t), freePort(t), freePort(t)
	cfg := acmeConfig(t, p, config.ChallengeHTTP01, chalPort, turnPort, apiPort, false, "turn.down.node.icebox.test")
	reg := prometheus.NewRegistry()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop(), Registry: reg})
	pollUntil(t, 30*time.Second, "a failed order", func() bool {
		return metric(t, reg, "icebox_acme_failures_total", map[string]string{"op": "obtain"}) >= 1
	})
	resp, err := http.Get("http://" + n.Addrs.HTTP + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz without any certificate: %s, want 503", resp.Status)
	}
	st := n.ACMEStatus()
	if len(st) != 1 || st[0].NotAfter != nil || st[0].LastError == "" || st[0].Renewal {
		t.Errorf("ACMEStatus: %+v, want no certificate and the order's error", st)
	}
	if got := metric(t, reg, "icebox_tls_certificate_expiry_timestamp_seconds", map[string]string{"listener": "turn"}); got != 0 {
		t.Errorf("expiry gauge without a certificate: %v, want absent", got)
	}
	if !strings.Contains(st[0].LastError, "connection refused") {
		t.Logf("order error: %s", st[0].LastError)
	}
}
