package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestListenerProxyProtocol puts HAProxy (sending PROXY v2 from 127.0.0.3)
// in front of icebox's own TURN TCP, TURN TLS and API listeners
// (turn.proxy_protocol, http.proxy_protocol — not the shared port): an
// allocation through it lists the client's own address, the API answers
// through it, a PROXY header from an untrusted source is refused and a
// plain client of that source is served.
func TestListenerProxyProtocol(t *testing.T) {
	t.Parallel()
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("haproxy not found (%v); CI must install Debian's haproxy package (scripts/install-test-deps.sh)", err)
		}
		t.Skip("install Debian's haproxy package: apt-get install haproxy")
	}
	dir := t.TempDir()
	cert, key, pool := writeTestCert(t, filepath.Join(dir, "tls"))
	cfg := testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret, tlsCert: cert, tlsKey: key})
	cfg = strings.Replace(cfg, "  udp_sockets: 2\n", "  udp_sockets: 2\n  proxy_protocol: {trusted: [127.0.0.3]}\n", 1)
	cfg += "  proxy_protocol: {trusted: [127.0.0.3]}\n" // under http:, the last section
	sum := sha256.Sum256([]byte(muxAdminToken))
	cfg += "auth:\n  static_tokens:\n    - sha256: " + hex.EncodeToString(sum[:]) + "\n      user: \"@admin:mux.test\"\n      admin: true\n"
	in := startIcebox(t, cfg)

	ports := map[string]int{"tcp": freePort(t), "tls": freePort(t), "http": freePort(t)}
	hpCfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	var conf strings.Builder
	conf.WriteString("global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n")
	for name, backend := range map[string]int{"tcp": in.turnTCPPort, "tls": in.tlsPort, "http": in.httpPort} {
		fmt.Fprintf(&conf, "frontend %[1]s\n  bind 127.0.0.1:%[2]d\n  default_backend %[1]s_b\nbackend %[1]s_b\n  server icebox 127.0.0.1:%[3]d send-proxy-v2 source 127.0.0.3\n",
			name, ports[name], backend)
	}
	if err := os.WriteFile(hpCfg, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	hp := startProcess(t, haproxy, "-db", "-f", hpCfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("haproxy output:\n%s", hp.out.String())
		}
	})
	if !waitFor(10*time.Second, func() bool {
		c, err := net.Dial("tcp4", loopback(ports["http"]))
		if err == nil {
			c.Close()
		}
		return err == nil || hp.exited()
	}) || hp.exited() {
		t.Fatalf("haproxy does not listen; output:\n%s", hp.out.String())
	}

	// The API through HAProxy (plain HTTP: http.listen has no TLS here).
	hc := &http.Client{Timeout: 10 * time.Second}
	allocations := func() []struct {
		User       string `json:"user"`
		ClientAddr string `json:"client_addr"`
		Transport  string `json:"transport"`
	} {
		return muxAllocations(t, hc, "http://"+loopback(ports["http"]))
	}

	t.Run("client address through haproxy", func(t *testing.T) {
		for _, tr := range []string{"tcp", "tls"} {
			c := dialFrom(t, "127.0.0.2", loopback(ports[tr]))
			user, conn := "viaproxy"+tr, c
			if tr == "tls" {
				conn = tls.Client(c, &tls.Config{RootCAs: pool, ServerName: "localhost"})
			}
			if _, err := allocateOn(t, conn, user, in); err != nil {
				t.Fatalf("allocate over %s through haproxy: %v", tr, err)
			}
			found := false
			for _, a := range allocations() {
				if a.User == user {
					found = true
					t.Logf("%s: client_addr %s (transport %s)", user, a.ClientAddr, a.Transport)
					if a.ClientAddr != c.LocalAddr().String() {
						t.Errorf("%s: client_addr %s, want the client's own %s (haproxy connects from 127.0.0.3)", tr, a.ClientAddr, c.LocalAddr())
					}
				}
			}
			if !found {
				t.Errorf("allocation of %s not listed", user)
			}
		}
	})

	binding := func() []byte { return stunBinding(t) }
	before := in.metrics(t)
	t.Run("untrusted PROXY header refused, plain client served", func(t *testing.T) {
		hdr := []byte("PROXY TCP4 1.2.3.4 127.0.0.1 12345 3478\r\n")
		if c := dialFrom(t, "127.0.0.2", in.turnTCPAddr()); !refused(t, c, append(append([]byte{}, hdr...), binding()...)) {
			t.Error("TURN TCP: a PROXY header from the untrusted 127.0.0.2 was answered; want the connection closed")
		}
		if c := dialFrom(t, "127.0.0.2", in.turnTCPAddr()); refused(t, c, binding()) {
			t.Error("TURN TCP: a plain STUN Binding from 127.0.0.2 was refused")
		}
		get := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if c := dialFrom(t, "127.0.0.2", loopback(in.httpPort)); !refused(t, c, append(append([]byte{}, hdr...), get...)) {
			t.Error("API: a PROXY header from the untrusted 127.0.0.2 was answered; want the connection closed")
		}
		if c := dialFrom(t, "127.0.0.2", loopback(in.httpPort)); refused(t, c, get) {
			t.Error("API: a plain request from 127.0.0.2 was refused")
		}
	})
	t.Run("trusted source without a header refused", func(t *testing.T) {
		if c := dialFrom(t, "127.0.0.3", in.turnTCPAddr()); !refused(t, c, binding()) {
			t.Error("a connection from the trusted 127.0.0.3 without a PROXY header was answered; want it closed")
		}
	})
	after := in.waitMetrics(t, func(m map[string]float64) bool {
		return m[`icebox_portmux_proxy_refused_total{reason="untrusted"}`]-before[`icebox_portmux_proxy_refused_total{reason="untrusted"}`] >= 2 &&
			m[`icebox_portmux_proxy_refused_total{reason="missing"}`]-before[`icebox_portmux_proxy_refused_total{reason="missing"}`] >= 1
	})
	t.Logf("refused: untrusted +%v, missing +%v", after[`icebox_portmux_proxy_refused_total{reason="untrusted"}`]-before[`icebox_portmux_proxy_refused_total{reason="untrusted"}`],
		after[`icebox_portmux_proxy_refused_total{reason="missing"}`]-before[`icebox_portmux_proxy_refused_total{reason="missing"}`])
}
