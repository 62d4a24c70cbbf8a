package main

// The shared port (turn.mux): TURN over TCP and TLS, HTTPS, plain HTTP and
// WebSocket on one TCP port, with real clients: coturn's turnutils_uclient,
// pion's TURN client (ALPN stun.turn), Go's HTTP client (h2, http/1.1),
// coder/websocket, and HAProxy sending PROXY protocol v2.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/stun/v4"
	"github.com/pion/turn/v5"
)

const muxAdminToken = "mux-admin-token-0123456789"

// muxConfig is testConfig with TLS files, a shared port on muxPort, the
// PROXY protocol sources trusted, and an admin token.
func muxConfig(t *testing.T, muxPort int, trusted ...string) (cfg string, pool *x509.CertPool) {
	t.Helper()
	dir := t.TempDir()
	cert, key, pool := writeTestCert(t, filepath.Join(dir, "tls"))
	cfg = testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret, tlsCert: cert, tlsKey: key})
	tr, _ := json.Marshal(trusted)
	if trusted == nil {
		tr = []byte("[]")
	}
	mux := fmt.Sprintf("  mux:\n    listen: [\"127.0.0.1:%d\"]\n    proxy_protocol:\n      trusted: %s\n  udp_sockets: 2\n", muxPort, tr)
	cfg = strings.Replace(cfg, "  udp_sockets: 2\n", mux, 1)
	sum := sha256.Sum256([]byte(muxAdminToken))
	cfg += "auth:\n  static_tokens:\n    - sha256: " + hex.EncodeToString(sum[:]) + "\n      user: \"@admin:mux.test\"\n      admin: true\n"
	return cfg, pool
}

// muxAllocations is GET /admin/allocations over the shared port.
func muxAllocations(t *testing.T, hc *http.Client, base string) []struct {
	User       string `json:"user"`
	ClientAddr string `json:"client_addr"`
	Transport  string `json:"transport"`
} {
	t.Helper()
	var resp struct {
		Allocations []struct {
			User       string `json:"user"`
			ClientAddr string `json:"client_addr"`
			Transport  string `json:"transport"`
		} `json:"allocations"`
	}
	body := muxGet(t, hc, base+"/admin/allocations", muxAdminToken, http.StatusOK)
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("/admin/allocations: %s: %v", body, err)
	}
	return resp.Allocations
}

func muxGet(t *testing.T, hc *http.Client, url, token string, want int) []byte {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: status %d (%s), want %d", url, resp.StatusCode, body, want)
	}
	return body
}

// allocateOn allocates a UDP relay through a TURN client on conn (a TCP or
// TLS connection to the shared port).
func allocateOn(t *testing.T, conn net.Conn, user string, in *instance) (net.PacketConn, error) {
	t.Helper()
	creds := mintCreds(t, in.cfgPath, user)
	sc := turn.NewSTUNConn(conn)
	t.Cleanup(func() { sc.Close() })
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: conn.RemoteAddr().String(),
		TURNServerAddr: conn.RemoteAddr().String(),
		Conn:           sc,
		Username:       creds.Username,
		Password:       creds.Password,
		LoggerFactory:  quietLogger(),
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay, err := client.AllocateWithContext(ctx)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { relay.Close() })
	return relay, nil
}

// TestSharedPort serves every client kind on one port: Go's HTTP client
// over h2, HTTP/1.1 and in clear, a WebSocket over TLS, pion's TURN client
// over TLS (ALPN stun.turn) and TCP, coturn's turnutils_uclient over TLS
// (no ALPN) and TCP; /calls/ice_servers offers turns: on it first, and the
// metric counts each protocol.
func TestSharedPort(t *testing.T) {
	t.Parallel()
	muxPort := freePort(t)
	cfg, pool := muxConfig(t, muxPort)
	in := startIcebox(t, cfg)
	addr := loopback(muxPort)
	base := "https://localhost:" + strconv.Itoa(muxPort)
	tlsConf := &tls.Config{RootCAs: pool, ServerName: "localhost"}

	t.Run("https h2 and http/1.1", func(t *testing.T) {
		h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: true}}
		resp, err := h2.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz over h2: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			t.Errorf("GET /healthz: %d over %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
		}
		h1conf := tlsConf.Clone()
		h1conf.NextProtos = []string{"http/1.1"}
		h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h1conf}}
		resp, err = h1.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("GET /healthz over HTTP/1.1: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 1 {
			t.Errorf("GET /healthz: %d over %s, want 200 over HTTP/1.1", resp.StatusCode, resp.Proto)
		}
		// The TLS certificate is verified against the test CA: one the
		// client does not trust fails.
		bad := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "localhost", RootCAs: x509.NewCertPool()}}}
		if resp, err := bad.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			t.Error("GET /healthz with an empty root pool succeeded; want a certificate error")
		}
	})

	t.Run("plain http", func(t *testing.T) {
		muxGet(t, &http.Client{Timeout: 10 * time.Second}, "http://"+addr+"/healthz", "", http.StatusOK)
	})

	t.Run("sni without a matching certificate", func(t *testing.T) {
		// The default certificate answers (the handshake succeeds); the
		// client's name check fails.
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.example", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("TLS with SNI other.example: %v; want the default certificate", err)
		}
		c.Close()
		if _, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "other.example", RootCAs: pool}); err == nil {
			t.Error("verified TLS to other.example succeeded; want a name mismatch")
		}
	})

	t.Run("websocket over tls", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, resp, err := websocket.Dial(ctx, "wss://localhost:"+strconv.Itoa(muxPort)+"/ws", &websocket.DialOptions{
			HTTPClient: &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf.Clone()}},
			HTTPHeader: http.Header{"Authorization": {"Bearer " + muxAdminToken}},
		})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("dial wss /ws: %v (status %d)", err, status)
		}
		conn.Close(websocket.StatusNormalClosure, "done")
	})

	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConf.Clone()}}

	t.Run("ice servers offer turns on the shared port first", func(t *testing.T) {
		var resp struct {
			ICEServers []struct {
				URLs []string `json:"urls"`
			} `json:"ice_servers"`
		}
		body := muxGet(t, hc, base+"/calls/ice_servers", muxAdminToken, http.StatusOK)
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("turns:127.0.0.1:%d?transport=tcp", muxPort)
		for _, s := range resp.ICEServers {
			if strings.HasPrefix(s.URLs[0], "turn") {
				if s.URLs[0] != want {
					t.Errorf("first TURN URI %q, want %q (all: %v)", s.URLs[0], want, s.URLs)
				}
				return
			}
		}
		t.Errorf("no TURN server in %s", body)
	})

	t.Run("pion over tls with alpn stun.turn and over tcp", func(t *testing.T) {
		conf := tlsConf.Clone()
		conf.NextProtos = []string{"stun.turn"}
		tc, err := tls.Dial("tcp4", addr, conf)
		if err != nil {
			t.Fatal(err)
		}
		if p := tc.ConnectionState().NegotiatedProtocol; p != "stun.turn" {
			t.Errorf("negotiated ALPN %q, want stun.turn", p)
		}
		if _, err := allocateOn(t, tc, "muxtls", in); err != nil {
			t.Fatalf("allocate over TLS: %v", err)
		}
		pc, err := net.Dial("tcp4", addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := allocateOn(t, pc, "muxtcp", in); err != nil {
			t.Fatalf("allocate over TCP: %v", err)
		}
		want := map[string][2]string{
			"muxtls": {tc.LocalAddr().String(), "tls"},
			"muxtcp": {pc.LocalAddr().String(), "tcp"},
		}
		seen := 0
		for _, a := range muxAllocations(t, hc, base) {
			if w, ok := want[a.User]; ok {
				seen++
				if a.ClientAddr != w[0] || a.Transport != w[1] {
					t.Errorf("allocation of %s: client %s over %s, want %s over %s", a.User, a.ClientAddr, a.Transport, w[0], w[1])
				}
			}
		}
		if seen != 2 {
			t.Errorf("/admin/allocations lists %d of the 2 allocations", seen)
		}
	})

	t.Run("turn over udp on the same port number", func(t *testing.T) {
		creds := mintCreds(t, in.cfgPath, "muxudp")
		a, err := allocate(t, "udp", addr, nil, creds.Username, creds.Password)
		if err != nil {
			t.Fatalf("allocate over UDP on the shared port: %v", err)
		}
		relayRoundTrip(t, a, listenPeer(t))
	})

	t.Run("turnutils_uclient over tls and tcp", func(t *testing.T) {
		uclient := coturnTool(t, "turnutils_uclient")
		peerPort := strconv.Itoa(startEchoPeer(t, coturnTool(t, "turnutils_peer")))
		for _, tc := range []struct {
			name string
			args []string
		}{
			{"tls", []string{"-t", "-S", "-u", "muxuctls"}},
			{"tcp", []string{"-t", "-u", "muxuctcp"}},
		} {
			args := append([]string{"-W", testSecret}, tc.args...)
			args = append(args, "-e", "127.0.0.1", "-r", peerPort, "-X", "-c", "-m", "2", "-n", "50", "-l", "172", "-z", "5",
				"-p", strconv.Itoa(muxPort), "127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), uclientTimeout)
			cmd := exec.CommandContext(ctx, uclient, args...)
			cmd.WaitDelay = time.Second
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			cancel()
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v; output:\n%s", strings.Join(args, " "), err, tail(out.String(), 30))
			}
			res, err := parseUclient(out.String())
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v; output:\n%s", tc.name, err, tail(out.String(), 30))
			}
			t.Logf("turnutils_uclient over %s on the shared port: sent %d, received %d, lost %d", tc.name, res.sent, res.received, res.lost)
			if res.sent == 0 || res.received == 0 || res.lost != 0 {
				t.Errorf("turnutils_uclient over %s: sent %d, received %d, lost %d; want none lost", tc.name, res.sent, res.received, res.lost)
			}
		}
	})

	t.Run("metrics by protocol", func(t *testing.T) {
		m := in.metrics(t)
		for _, p := range []string{"turn", "turn_tls", "https", "http"} {
			k := `icebox_portmux_connections_total{protocol="` + p + `"}`
			t.Logf("%s = %v", k, m[k])
			if m[k] < 1 {
				t.Errorf("%s = %v, want >= 1", k, m[k])
			}
		}
	})
}

// TestSharedPortProxyProtocol puts HAProxy (sending PROXY v2, from
// 127.0.0.3) in front of the shared port: the allocation list shows the
// client's own address (127.0.0.2), not HAProxy's. A PROXY header from
// an untrusted source, and a trusted source without one, are refused.
func TestSharedPortProxyProtocol(t *testing.T) {
	t.Parallel()
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("haproxy not found (%v); CI must install Debian's haproxy package (scripts/install-test-deps.sh)", err)
		}
		t.Skip("install Debian's haproxy package: apt-get install haproxy")
	}
	muxPort := freePort(t)
	cfg, pool := muxConfig(t, muxPort, "127.0.0.3")
	in := startIcebox(t, cfg)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}

	hpPort := freePort(t)
	hpCfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(hpCfg, []byte(fmt.Sprintf(`global
  maxconn 100
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend shared
  bind 127.0.0.1:%d
  default_backend icebox
backend icebox
  server icebox 127.0.0.1:%d send-proxy-v2 source 127.0.0.3
`, hpPort, muxPort)), 0o600); err != nil {
		t.Fatal(err)
	}
	hp := startProcess(t, haproxy, "-db", "-f", hpCfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy output:\n%s", hp.out.String())
		}
	})
	hpAddr := loopback(hpPort)
	if !waitFor(10*time.Second, func() bool {
		c, err := net.Dial("tcp4", hpAddr)
		if err == nil {
			c.Close()
		}
		return err == nil || hp.exited()
	}) || hp.exited() {
		t.Fatalf("haproxy does not listen on %s; output:\n%s", hpAddr, hp.out.String())
	}

	t.Run("client address through haproxy", func(t *testing.T) {
		for _, tls := range []bool{false, true} {
			c := dialFrom(t, "127.0.0.2", hpAddr)
			user, conn := "viaproxytcp", c
			if tls {
				user = "viaproxytls"
				conn = tlsClient(c, pool)
			}
			if _, err := allocateOn(t, conn, user, in); err != nil {
				t.Fatalf("allocate through haproxy (tls %v): %v", tls, err)
			}
			found := false
			for _, a := range muxAllocations(t, hc, "https://localhost:"+strconv.Itoa(muxPort)) {
				if a.User == user {
					found = true
					if a.ClientAddr != c.LocalAddr().String() {
						t.Errorf("client_addr %s, want the client's own %s (haproxy connects from 127.0.0.3)", a.ClientAddr, c.LocalAddr())
					}
				}
			}
			if !found {
				t.Errorf("allocation of %s not listed", user)
			}
		}
	})

	binding := func() []byte { return stunBinding(t) }
	v2 := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\x01\x02\x03\x04\x7f\x00\x00\x01\x30\x39\x01\xbb")

	before := in.metrics(t)
	t.Run("untrusted PROXY v1 and v2 refused", func(t *testing.T) {
		for _, hdr := range [][]byte{[]byte("PROXY TCP4 1.2.3.4 127.0.0.1 12345 443\r\n"), v2} {
			c := dialFrom(t, "127.0.0.2", loopback(muxPort))
			if !refused(t, c, append(append([]byte{}, hdr...), binding()...)) {
				t.Errorf("a PROXY header (%q...) from the untrusted 127.0.0.2 was answered; want the connection closed", hdr[:6])
			}
		}
		// Without a header the same source is served.
		c := dialFrom(t, "127.0.0.2", loopback(muxPort))
		if refused(t, c, binding()) {
			t.Error("a plain STUN Binding from 127.0.0.2 was refused")
		}
	})
	t.Run("trusted source without a header refused", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.3", loopback(muxPort))
		if !refused(t, c, binding()) {
			t.Error("a connection from the trusted 127.0.0.3 without a PROXY header was answered; want it closed")
		}
	})
	after := in.waitMetrics(t, func(m map[string]float64) bool {
		return m[`icebox_portmux_proxy_refused_total{reason="untrusted"}`]-before[`icebox_portmux_proxy_refused_total{reason="untrusted"}`] >= 2 &&
			m[`icebox_portmux_proxy_refused_total{reason="missing"}`]-before[`icebox_portmux_proxy_refused_total{reason="missing"}`] >= 1
	})
	for r, want := range map[string]float64{"untrusted": 2, "missing": 1} {
		k := `icebox_portmux_proxy_refused_total{reason="` + r + `"}`
		t.Logf("%s grew by %v", k, after[k]-before[k])
		if after[k]-before[k] < want {
			t.Errorf("%s grew by %v, want >= %v", k, after[k]-before[k], want)
		}
	}
}

// dialFrom dials dst over TCP from the local address src (a loopback
// address of 127.0.0.0/8), closed at the test's end.
func dialFrom(t *testing.T, src, dst string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp4", dst)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stunBinding is a STUN Binding request.
func stunBinding(t *testing.T) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// refused writes payload on c and reports whether the server closed c
// without answering.
func refused(t *testing.T, c net.Conn, payload []byte) bool {
	t.Helper()
	if _, err := c.Write(payload); err != nil {
		return true
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1500))
	return n == 0 && err != nil && !isTimeout(err)
}

func tlsClient(c net.Conn, pool *x509.CertPool) net.Conn {
	return tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"stun.turn"}})
}

func isTimeout(err error) bool {
	var ne net.Error
	return err != nil && errors.As(err, &ne) && ne.Timeout()
}
