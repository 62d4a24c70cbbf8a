package main

// What the network-namespace beds share: icebox serving inside a namespace
// (nat_test.go, security_netns_test.go, ui_test.go, jssdk_bed_test.go), and
// the browser beds' namespace with one veth interface, its icebox
// configuration and the check that Chromium and the harness are installed
// (ui_test.go, jssdk_bed_test.go).

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// nsHTTP is icebox's HTTP API inside its namespace (the namespace's own
// loopback: a fixed port cannot collide with anything outside it).
const nsHTTP = "127.0.0.1:8080"

// serveLogTail is how many lines of icebox's output a failed test logs:
// enough for the Matrix bridge's start-up and a call in the jssdk bed, the
// most talkative.
const serveLogTail = 120

// nsClient is an HTTP client that dials inside ns.
func nsClient(ns *netbed.NS, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: ns.DialContext}}
}

// startIceboxIn runs `icebox serve` inside ns (its sockets must bind the
// namespace's addresses, so not in-process) with the configuration that
// config writes for a state directory and the extra variables env
// ("KEY=value"), and waits until its /readyz at nsHTTP answers 200 through
// hc. At cleanup it is stopped with SIGTERM (by PID) and must exit 0.
func startIceboxIn(t *testing.T, ns *netbed.NS, hc *http.Client, config func(stateDir string) string, env ...string) *instance {
	t.Helper()
	dir := t.TempDir()
	in := &instance{cfgPath: filepath.Join(dir, "icebox.yaml")}
	if err := os.WriteFile(in.cfgPath, []byte(config(filepath.Join(dir, "state"))), 0o600); err != nil {
		t.Fatal(err)
	}
	in.process = startProcessEnv(t, env, "ip", "netns", "exec", ns.Name, iceboxBin, "serve", "--config", in.cfgPath)
	ready := waitFor(readyTimeout, func() bool {
		if in.exited() {
			return true
		}
		resp, err := hc.Get("http://" + nsHTTP + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if in.exited() || !ready {
		t.Fatalf("icebox in namespace %s not ready (exited: %v, %v); output:\n%s", ns.Name, in.exited(), in.waitErr, in.out.String())
	}
	t.Cleanup(func() {
		in.stop(t)
		if t.Failed() {
			t.Logf("icebox serve in %s:\n%s", ns.Name, tail(in.out.String(), serveLogTail))
		}
	})
	return in
}

// Addresses inside a browser bed's namespace: icebox's TURN listener and
// relays on the veth address, its HTTP API (nsHTTP) on loopback, a secure
// context for the pages.
const (
	browserBedIP   = "198.18.0.1"
	browserBedPeer = "198.18.0.2"
	browserBedTURN = "3478"
)

// newBrowserNS makes a namespace with loopback and one veth interface on
// browserBedIP, where icebox and Chromium run: WebRTC gathers nothing on a
// loopback-only host (../shared/reference/turn.md, "Test beds"). The
// veth's other end is in a stub namespace, so that the interface is up.
func newBrowserNS(t *testing.T, name string) *netbed.NS {
	t.Helper()
	bed := netbed.New(t)
	ns := bed.Namespace(name)
	netbed.Link(ns, "eth0", browserBedIP+"/24", bed.Namespace(name+"stub"), "eth0", browserBedPeer+"/24")
	return ns
}

// browserBedConfig is icebox's configuration in a browser bed, up to its
// http section; a bed appends what else it needs.
func browserBedConfig(stateDir, realm string) string {
	return fmt.Sprintf(`state_dir: %[1]q
drain_timeout: 2s
log: {level: info, format: json}
turn:
  realm: %[2]s
  listen:
    udp: ["%[3]s:%[4]s"]
    tcp: ["%[3]s:%[4]s"]
  udp_sockets: 2
  relay: {bind_ip: %[3]s, min_port: %[5]d, max_port: %[6]d}
  # The browsers' candidates (host ones, and relay ones on icebox) are on
  # the bed's range, which the default deny-list holds (198.18.0.0/15).
  allowed_peers: ["198.18.0.0/24"]
  quotas: {per_user: 50, per_call: 50, total: 1000}
credentials:
  secrets:
    - {kid: k1, secret: %[7]q, compat: true}
http:
  listen: %[8]q
`, stateDir, realm, browserBedIP, browserBedTURN, relayMinPort, relayMaxPort, testSecret, nsHTTP)
}

// requireChromium returns web/<sub> (absolute) once Debian's Chromium and
// node are installed and missing(dir) names nothing else the harness there
// lacks. Otherwise it skips the test (fails it under CI=true), saying what
// to run; what names the tests.
func requireChromium(t *testing.T, what, sub string, missing func(dir string) string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "web", sub))
	if err != nil {
		t.Fatal(err)
	}
	var why string
	switch {
	case !executable("/usr/bin/chromium"):
		why = "/usr/bin/chromium not found (apt-get install chromium)"
	case !executable("/usr/bin/node") && lookPath("node") == "":
		why = "node not found (apt-get install nodejs npm)"
	default:
		why = missing(dir)
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %s; CI installs it with scripts/install-test-deps.sh", what, why)
		}
		t.Skipf("%s: %s; scripts/install-test-deps.sh installs and builds everything", what, why)
	}
	return dir
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func lookPath(name string) string {
	p, _ := exec.LookPath(name)
	return p
}
