package main

// The shared port on 443 itself, in a network namespace (binding 443 needs
// root there only), reached from a client namespace whose firewall lets
// nothing out but TCP 443: the strict office firewall turn.mux is for.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

func TestSharedPort443BehindFirewall(t *testing.T) {
	uclient := coturnTool(t, "turnutils_uclient")
	peerBin := coturnTool(t, "turnutils_peer")
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl not found (scripts/install-test-deps.sh installs it)")
		}
		t.Skip("curl not found (run scripts/install-test-deps.sh)")
	}
	const srvIP, cliIP, peerIP = "198.18.0.1", "198.18.0.2", "198.18.1.2"
	bed := netbed.New(t)
	srv, cli, peerNS := bed.Namespace("muxsrv"), bed.Namespace("muxcli"), bed.Namespace("muxpeer")
	netbed.Link(srv, "eth0", srvIP+"/24", cli, "eth0", cliIP+"/24")
	// The peer on a network of its own behind icebox (the relay refuses
	// the host's own addresses as peers).
	netbed.Link(srv, "eth1", "198.18.1.1/24", peerNS, "eth0", peerIP+"/24")
	peerNS.DefaultRoute("198.18.1.1")
	// The client's firewall: out through TCP 443 only.
	cli.IPTables("-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT")
	cli.IPTables("-A", "OUTPUT", "-p", "tcp", "--dport", "443", "-j", "ACCEPT")
	cli.IPTables("-P", "OUTPUT", "DROP")

	dir := t.TempDir()
	cert, key := writeCert(t, filepath.Join(dir, "tls"), nil, []net.IP{net.ParseIP(srvIP)}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	startIceboxIn(t, srv, nsClient(srv, 5*time.Second), func(stateDir string) string {
		return fmt.Sprintf(`state_dir: %[1]q
drain_timeout: 2s
log: {level: info, format: json}
turn:
  realm: mux443.icebox.test
  listen: {udp: ["%[2]s:3478"], tcp: ["%[2]s:3478"]}
  tls: {cert_file: %[3]q, key_file: %[4]q}
  mux: {listen: ["%[2]s:443"]}
  udp_sockets: 2
  relay: {bind_ip: %[2]s, min_port: %[5]d, max_port: %[6]d}
  allowed_peers: ["198.18.1.0/24"]
credentials:
  secrets:
    - {kid: k1, secret: %[7]q, compat: true}
auth:
  static_tokens: []
http:
  listen: %[8]q
`, stateDir, srvIP, cert, key, relayMinPort, relayMaxPort, testSecret, nsHTTP)
	})

	// The echo peer (the relay reaches it; the client cannot).
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	const peerPort = 3480
	peer := peerNS.Command(ctx, peerBin, "-L", peerIP, "-p", strconv.Itoa(peerPort))
	var peerOut bytes.Buffer
	peer.Stdout, peer.Stderr = &peerOut, &peerOut
	if err := peer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = peer.Wait() })

	// curl verifies the certificate and reaches the API on 443.
	out, err := cli.Try(curl, "-sS", "--max-time", "10", "--cacert", cert, "https://"+srvIP+"/healthz")
	if err != nil {
		t.Fatalf("curl https://%s/healthz from behind the firewall: %v: %s", srvIP, err, out)
	}
	t.Logf("curl over 443: %s", strings.TrimSpace(out))
	// The plain HTTP API and TURN's own port are out of reach.
	if out, err := cli.Try(curl, "-sS", "--max-time", "2", "http://"+srvIP+":3478/"); err == nil {
		t.Fatalf("TCP 3478 reachable through the firewall: %s", out)
	}

	// TURN over TLS on 443 relays to the peer.
	// (turnutils_uclient opens some connections with TLS 1.0 first: refused
	// like on every icebox TLS listener, counted as unknown.)
	var res uclientResult
	{
		ctx, cancel := context.WithTimeout(context.Background(), uclientTimeout)
		cmd := cli.Command(ctx, uclient, "-W", testSecret, "-u", "fw443", "-t", "-S", "-e", peerIP, "-r", strconv.Itoa(peerPort),
			"-X", "-c", "-m", "2", "-n", "50", "-l", "172", "-z", "5", "-p", "443", srvIP)
		cmd.WaitDelay = time.Second
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("turnutils_uclient over TLS on 443: %v; output:\n%s\npeer:\n%s", err, tail(buf.String(), 30), peerOut.String())
		}
		if res, err = parseUclient(buf.String()); err != nil {
			t.Fatalf("turnutils_uclient: %v; output:\n%s", err, tail(buf.String(), 30))
		}
	}
	t.Logf("turnutils_uclient over TLS on %s:443 behind a 443-only firewall: sent %d, received %d, lost %d", srvIP, res.sent, res.received, res.lost)
	if res.sent == 0 || res.received == 0 || res.lost != 0 {
		t.Errorf("sent %d, received %d, lost %d; want none lost; peer output:\n%s", res.sent, res.received, res.lost, peerOut.String())
	}
	// What the shared port saw (and, on failure, the relay's counters).
	resp, err := nsClient(srv, 5*time.Second).Get("http://" + nsHTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	resp.Body.Close()
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "icebox_portmux_connections") || (t.Failed() && strings.HasPrefix(l, "icebox_turn_")) {
			t.Log(l)
		}
	}
}
