package main

// The NAT traversal test bed (../shared/reference/turn.md, "Test beds"):
// network namespaces with icebox on a "public" bridge 198.18.0.0/24 and
// clients A and B behind two MASQUERADE NATs; and icebox behind a 1:1 NAT of
// its own, like a cloud VM. Built under CI=true as root; skipped elsewhere.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
	"github.com/icebox-voip/icebox/probe"
)

// Addresses of the bed.
const (
	bedPublicIP  = "198.18.0.10" // icebox, or its 1:1 NAT gateway
	bedPrivateIP = "10.99.0.10"  // icebox behind the 1:1 NAT
	bedNATA      = "198.18.0.21"
	bedNATB      = "198.18.0.22"
	bedTURNPort  = "3478"
	bedTLSPort   = "5349"
	peerTimeout  = 30 * time.Second // one webrtcpeer run
)

// natBed is the topology; srv is where icebox runs.
type natBed struct {
	bed                *netbed.Bed
	pub, srv, gw, a, b *netbed.NS
	natA, natB         *netbed.NS
	serverIP, bindIP   string // what clients reach; what icebox binds
	certFile, keyFile  string // TLS certificate for bedPublicIP
}

// newNATBed builds the bed. With oneToOne, icebox sits at bedPrivateIP
// behind a gateway that owns bedPublicIP and forwards the TURN ports and
// the relay range to it (DNAT), SNATs what it sends, and hairpins.
func newNATBed(t *testing.T, oneToOne bool) *natBed {
	t.Helper()
	nb := &natBed{bed: netbed.New(t), serverIP: bedPublicIP, bindIP: bedPublicIP}
	b := nb.bed
	nb.pub = b.Namespace("pub")
	nb.pub.Bridge("br0")
	nb.srv = b.Namespace("srv")
	if oneToOne {
		nb.gw = b.Namespace("gw")
		nb.gw.Attach("wan", bedPublicIP+"/24", nb.pub, "br0")
		netbed.Link(nb.gw, "lan", "10.99.0.1/24", nb.srv, "eth0", bedPrivateIP+"/24")
		nb.srv.DefaultRoute("10.99.0.1")
		nb.gw.OneToOneNAT(bedPublicIP, bedPrivateIP, "lan", bedTURNPort, bedTLSPort,
			fmt.Sprintf("%d:%d", relayMinPort, relayMaxPort))
		nb.bindIP = bedPrivateIP
	} else {
		nb.srv.Attach("eth0", bedPublicIP+"/24", nb.pub, "br0")
	}
	for i, c := range []struct {
		wan, lan string
		nat, cl  **netbed.NS
	}{{bedNATA, "198.19.1", &nb.natA, &nb.a}, {bedNATB, "198.19.2", &nb.natB, &nb.b}} {
		side := string(rune('a' + i))
		*c.nat = b.Namespace("nat" + side)
		*c.cl = b.Namespace("cl" + side)
		(*c.nat).Attach("wan", c.wan+"/24", nb.pub, "br0")
		netbed.Link(*c.nat, "lan", c.lan+".1/24", *c.cl, "eth0", c.lan+".10/24")
		(*c.cl).DefaultRoute(c.lan + ".1")
		(*c.nat).Masquerade("wan")
	}
	nb.certFile, nb.keyFile = writeCert(t, filepath.Join(t.TempDir(), "tls"), nil,
		[]net.IP{net.ParseIP(bedPublicIP)}, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	return nb
}

// config is icebox's configuration in the bed. 198.18.0.0/15 is in the
// default peer deny-list: the NATs' public addresses are allowed so that a
// relay may reach a client's server-reflexive address (relay to relay needs
// nothing: the server's own relay addresses are always allowed).
func (nb *natBed) config(stateDir, publicIP string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: %q\ndrain_timeout: 2s\nlog: {level: info, format: json}\n", stateDir)
	fmt.Fprintf(&b, `turn:
  realm: nat.icebox.test
  listen:
    udp: ["%[1]s:%[2]s"]
    tcp: ["%[1]s:%[2]s"]
    tls: ["%[1]s:%[3]s"]
  tls: {cert_file: %[4]q, key_file: %[5]q}
  udp_sockets: 2
  relay: {bind_ip: %[1]s, public_ip: %[6]q, min_port: %[7]d, max_port: %[8]d}
  allowed_peers: ["%[9]s/32", "%[10]s/32"]
  quotas: {per_user: 50, per_call: 50, total: 1000}
credentials:
  secrets:
    - {kid: k1, secret: %[11]q, compat: true}
http:
  listen: %[12]q
`, nb.bindIP, bedTURNPort, bedTLSPort, nb.certFile, nb.keyFile, publicIP, relayMinPort, relayMaxPort,
		bedNATA, bedNATB, testSecret, nsHTTP)
	return b.String()
}

// startIcebox runs `icebox serve` inside srv and waits for /readyz there.
func (nb *natBed) startIcebox(t *testing.T, publicIP string) *instance {
	t.Helper()
	return startIceboxIn(t, nb.srv, nsClient(nb.srv, time.Second), func(stateDir string) string { return nb.config(stateDir, publicIP) })
}

// checkIn runs `icebox check --json` inside ns and returns the report and
// exit code.
func checkIn(t *testing.T, ns *netbed.NS, args ...string) (*probe.Report, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := ns.Command(ctx, iceboxBin, append([]string{"check", "--json", "--timeout", "3s"}, args...)...)
	cmd.Env = iceboxEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("icebox check in %s did not exit within %s; stderr:\n%s", ns.Name, checkTimeout, errOut.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("icebox check in %s: %v", ns.Name, err)
	}
	if strings.Contains(out.String()+errOut.String(), testSecret) {
		t.Errorf("icebox check printed the secret")
	}
	var rep probe.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("icebox check in %s: exit %d, not a JSON report (%v):\n%s\nstderr:\n%s", ns.Name, cmd.ProcessState.ExitCode(), err, out.String(), errOut.String())
	}
	return &rep, cmd.ProcessState.ExitCode()
}

var (
	peerOnce sync.Once
	peerBin  string
	peerErr  error
)

// webrtcPeerBin builds internal/netbed/webrtcpeer once per test run.
func webrtcPeerBin(t *testing.T) string {
	t.Helper()
	peerOnce.Do(func() {
		peerBin = iceboxBin + "-webrtcpeer"
		out, err := exec.Command(goTool(), "build", "-o", peerBin, "github.com/icebox-voip/icebox/internal/netbed/webrtcpeer").CombinedOutput()
		if err != nil {
			peerErr = fmt.Errorf("go build webrtcpeer: %v\n%s", err, out)
		}
	})
	if peerErr != nil {
		t.Fatal(peerErr)
	}
	return peerBin
}

// peerResult is what webrtcpeer prints.
type peerResult struct {
	Role, Local, Remote, Got, Error string
	OK                              bool
	MS                              int64
}

// webrtcCall runs a relay-only pion/webrtc offerer in A and answerer in B
// through icebox, and requires the DataChannel ping and pong to arrive over
// relay candidates.
func (nb *natBed) webrtcCall(t *testing.T) {
	t.Helper()
	bin := webrtcPeerBin(t)
	dir := t.TempDir()
	user, pass := restCredential(testSecret, "webrtc", time.Now().Add(time.Hour))
	turnURL := "turn:" + net.JoinHostPort(nb.serverIP, bedTURNPort) + "?transport=udp"
	peers := map[string]*process{}
	for role, ns := range map[string]*netbed.NS{"offer": nb.a, "answer": nb.b} {
		peers[role] = startProcessEnv(t, []string{"WEBRTCPEER_PASSWORD=" + pass}, "ip", "netns", "exec", ns.Name, bin,
			"-role", role, "-dir", dir, "-turn", turnURL, "-username", user, "-timeout", peerTimeout.String())
	}
	for role, p := range peers {
		select {
		case <-p.done:
		case <-time.After(peerTimeout + 10*time.Second):
			t.Fatalf("webrtcpeer %s did not exit within its timeout; output:\n%s", role, p.out.String())
		}
		var r peerResult
		line := strings.TrimSpace(p.out.String())
		if i := strings.LastIndexByte(line, '\n'); i >= 0 {
			line = line[i+1:]
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil || !r.OK {
			t.Errorf("webrtcpeer %s: exit %v, result %+v; output:\n%s", role, p.waitErr, r, p.out.String())
			continue
		}
		wantGot := map[string]string{"offer": "pong from answer", "answer": "ping from offer"}[role]
		if r.Got != wantGot || !strings.HasPrefix(r.Local, "relay ") || !strings.Contains(r.Local, nb.serverIP) {
			t.Errorf("webrtcpeer %s: got %q over %s -> %s; want %q over a relay candidate on %s", role, r.Got, r.Local, r.Remote, wantGot, nb.serverIP)
		}
		t.Logf("webrtc %s: %s -> %s in %dms", role, r.Local, r.Remote, r.MS)
	}
}

// TestNATTraversal: clients behind two MASQUERADE NATs reach each other
// only through icebox: relay-only pion/webrtc peers exchange data, and
// `icebox check` from inside A passes over UDP, TCP and TLS and sees A's
// NAT.
func TestNATTraversal(t *testing.T) {
	t.Parallel()
	nb := newNATBed(t, false)
	nb.startIcebox(t, "")

	t.Run("webrtc relay-only", nb.webrtcCall)

	t.Run("icebox check from A", func(t *testing.T) {
		args := append([]string{"--secret", testSecret, "--ca", nb.certFile}, turnURLs(bedPublicIP, 3478, 3478, 5349)...)
		rep, code := checkIn(t, nb.a, append(args, "stun:"+bedPublicIP)...)
		requirePass(t, rep, code, 4)
		for _, r := range rep.Results {
			if r.BehindNAT == nil || !*r.BehindNAT || !strings.HasPrefix(r.Mapped, bedNATA+":") {
				t.Errorf("%s: mapped %s, behind NAT %v; want A's NAT %s", r.URL, r.Mapped, r.BehindNAT, bedNATA)
			}
			if r.Relay != "" && !strings.HasPrefix(r.Relay, bedPublicIP+":") {
				t.Errorf("%s: relay %s, want on %s", r.URL, r.Relay, bedPublicIP)
			}
		}
	})
}

// TestNATIceboxBehind1to1NAT: icebox on a private address behind a 1:1 NAT,
// like a cloud VM. With turn.relay.public_ip set, clients relay; without,
// `icebox check` from outside fails, naming the private relay address and
// the setting to fix.
func TestNATIceboxBehind1to1NAT(t *testing.T) {
	t.Parallel()
	nb := newNATBed(t, true)

	t.Run("public_ip set", func(t *testing.T) {
		nb.startIcebox(t, bedPublicIP)
		args := append([]string{"--secret", testSecret, "--ca", nb.certFile}, turnURLs(bedPublicIP, 3478, 3478, 5349)...)
		rep, code := checkIn(t, nb.a, args...)
		requirePass(t, rep, code, 3)
		nb.webrtcCall(t)
	})

	t.Run("public_ip unset", func(t *testing.T) {
		nb.startIcebox(t, "")
		rep, code := checkIn(t, nb.a, "--secret", testSecret, "turn:"+bedPublicIP)
		r := onlyResult(t, rep)
		if code != 1 || r.Verdict != probe.VerdictRelayPrivate {
			t.Fatalf("exit %d, verdict %s: %q; want 1 and %s", code, r.Verdict, r.Message, probe.VerdictRelayPrivate)
		}
		for _, want := range []string{bedPrivateIP + ":", bedPublicIP} {
			if !strings.Contains(r.Message, want) {
				t.Errorf("message %q does not name %s", r.Message, want)
			}
		}
		if !strings.Contains(r.Hint, "turn.relay.public_ip") || !strings.Contains(r.Hint, "external-ip") {
			t.Errorf("hint %q does not name turn.relay.public_ip (icebox) and external-ip (coturn)", r.Hint)
		}

		// The human form, as an operator sees it.
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		defer cancel()
		cmd := nb.a.Command(ctx, iceboxBin, "check", "--secret", testSecret, "turn:"+bedPublicIP)
		cmd.Env = iceboxEnv()
		out, _ := cmd.Output()
		if !strings.Contains(string(out), "verdict: relay_address_private: the server advertises relay address "+bedPrivateIP) ||
			!strings.Contains(string(out), "fix: ") || !strings.Contains(string(out), "FAIL: 0 of 1 passed") {
			t.Errorf("icebox check (exit %d) printed:\n%s", cmd.ProcessState.ExitCode(), out)
		}
		t.Logf("icebox check from outside, public_ip unset:\n%s", out)
	})
}
