package main

// Chromium behind the strict firewall of mux_netns_test.go (nothing out but
// TCP 443) calling through icebox's shared port: the ICE servers icebox
// hands out put turns:…:443 first, and Chromium's WebRTC stack relays a
// call over TURN over TLS on 443 — the only way out.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// t443Page makes two relay-only peer connections in one page with the ICE
// servers it is given, an audio track (Chromium's fake device) and a data
// channel between them, and reports the selected candidate pairs.
const t443Page = `<!doctype html><meta charset="utf-8"><title>turns 443</title><script>
window.t443 = {
  ready: true,
  async run(iceServers, ms) {
    const cfg = { iceServers, iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle' };
    const a = new RTCPeerConnection(cfg), b = new RTCPeerConnection(cfg);
    const errors = [], cands = [];
    for (const pc of [a, b]) pc.onicecandidateerror = (e) => errors.push(e.url + ' ' + e.errorCode + ' ' + e.errorText);
    a.onicecandidate = (e) => { if (e.candidate) { cands.push(e.candidate.candidate); b.addIceCandidate(e.candidate); } };
    b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    stream.getTracks().forEach((t) => a.addTrack(t, stream));
    const dc = a.createDataChannel('t443');
    let got = 0;
    b.ondatachannel = (e) => { e.channel.onmessage = (m) => { got += m.data.length; }; };
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    const open = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      dc.onopen = () => { clearTimeout(timer); resolve(true); };
    });
    let sent = 0;
    if (open) {
      for (let i = 0; i < 50; i++) { dc.send('x'.repeat(1000)); sent += 1000; await new Promise((r) => setTimeout(r, 20)); }
      const until = Date.now() + 5000;
      while (got < sent && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    }
    const report = async (pc) => {
      const stats = await pc.getStats();
      let pair = null, audioIn = 0;
      stats.forEach((s) => {
        if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
        if (s.type === 'inbound-rtp' && s.kind === 'audio') audioIn += s.bytesReceived || 0;
      });
      const local = pair && stats.get(pair.localCandidateId);
      return { state: pc.connectionState, audioIn, bytesSent: pair ? pair.bytesSent : 0, bytesReceived: pair ? pair.bytesReceived : 0,
        candidateType: local ? local.candidateType : '', relayProtocol: local ? (local.relayProtocol || '') : '', url: local ? (local.url || '') : '' };
    };
    // Let some audio arrive before reading the counters.
    await new Promise((r) => setTimeout(r, 1000));
    const out = { open, sent, got, errors, cands, a: await report(a), b: await report(b) };
    stream.getTracks().forEach((t) => t.stop());
    a.close(); b.close();
    return out;
  },
};
</script>`

// chromiumTrusting returns a HOME whose NSS database (where Chromium on
// Linux reads the user's certificates) trusts certFile to identify servers.
func chromiumTrusting(t *testing.T, certFile string) string {
	t.Helper()
	certutil, err := exec.LookPath("certutil")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("certutil not found (scripts/install-test-deps.sh installs libnss3-tools)")
		}
		t.Skip("certutil not found (apt-get install libnss3-tools)")
	}
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"-N", "-d", "sql:" + db, "--empty-password"},
		{"-A", "-d", "sql:" + db, "-n", "icebox-test", "-t", "CT,,", "-i", certFile},
	} {
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v: %s", args, err, out)
		}
	}
	return home
}

type t443Side struct {
	State         string `json:"state"`
	AudioIn       int64  `json:"audioIn"`
	BytesSent     int64  `json:"bytesSent"`
	BytesReceived int64  `json:"bytesReceived"`
	CandidateType string `json:"candidateType"`
	RelayProtocol string `json:"relayProtocol"`
	URL           string `json:"url"`
}

func TestChromiumRelaysThroughTURNSOn443(t *testing.T) {
	dir := requireChromium(t, "Chromium over turns:443", "e2e-matrix", func(dir string) string {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core", "package.json")); err != nil {
			return "node_modules/playwright-core missing in web/e2e-matrix (npm ci there)"
		}
		return ""
	})
	const srvIP, cliIP = "198.18.0.1", "198.18.0.2"
	bed := netbed.New(t)
	srv, cli := bed.Namespace("t443srv"), bed.Namespace("t443cli")
	netbed.Link(srv, "eth0", srvIP+"/24", cli, "eth0", cliIP+"/24")
	cli.IPTables("-A", "OUTPUT", "-o", "lo", "-j", "ACCEPT")
	cli.IPTables("-A", "OUTPUT", "-p", "tcp", "--dport", "443", "-j", "ACCEPT")
	cli.IPTables("-P", "OUTPUT", "DROP")

	tmp := t.TempDir()
	cert, key := writeCert(t, filepath.Join(tmp, "tls"), nil, []net.IP{net.ParseIP(srvIP)}, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	const token = "t443-client-token-0123456789"
	startIceboxIn(t, srv, nsClient(srv, 5*time.Second), func(stateDir string) string {
		// The two peer connections' relays talk to each other: another
		// allocation's relay address is the one address of its own host
		// the relay reaches.
		return fmt.Sprintf(`state_dir: %[1]q
drain_timeout: 2s
log: {level: info, format: json}
turn:
  realm: t443.icebox.test
  listen: {udp: ["%[2]s:3478"], tcp: ["%[2]s:3478"]}
  tls: {cert_file: %[3]q, key_file: %[4]q}
  mux: {listen: ["%[2]s:443"]}
  udp_sockets: 1
  relay: {bind_ip: %[2]s, min_port: %[5]d, max_port: %[6]d}
credentials:
  secrets:
    - {kid: k1, secret: %[7]q, compat: true}
http:
  listen: %[8]q
`, stateDir, srvIP, cert, key, relayMinPort, relayMaxPort, testSecret, nsHTTP)
	}, apiTokens{"t443": token}.env())

	// The ICE servers as the client gets them: turns:…:443 first.
	req, _ := http.NewRequest(http.MethodGet, "http://"+nsHTTP+"/calls/ice_servers", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	var ice struct {
		ICEServers []struct {
			URLs       []string `json:"urls"`
			Username   string   `json:"username,omitempty"`
			Credential string   `json:"credential,omitempty"`
		} `json:"ice_servers"`
	}
	resp, err := nsClient(srv, 5*time.Second).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&ice)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("/calls/ice_servers: %s, %v", resp.Status, err)
	}
	var turnURLs []string
	for _, s := range ice.ICEServers {
		if s.Username != "" {
			turnURLs = s.URLs
		}
	}
	want443 := "turns:" + srvIP + ":443?transport=tcp"
	if len(turnURLs) == 0 || turnURLs[0] != want443 {
		t.Fatalf("TURN URLs %v; want %s first", turnURLs, want443)
	}

	// The page, served inside the client namespace (loopback is allowed).
	var ln net.Listener
	if err := cli.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	page := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(t443Page))
	})}
	go func() {
		if err := page.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("page server: %v", err)
		}
	}()
	t.Cleanup(func() { _ = page.Close() })

	// Chromium verifies the TURN server's certificate: it trusts the test's
	// through the NSS database of a HOME of its own, as a user's browser
	// trusts an organisation's CA.
	br := startJSBrowser(t, cli, dir, "HOME="+chromiumTrusting(t, cert))
	br.open(t, "t443", "http://"+ln.Addr().String()+"/", "t443")
	var res struct {
		Open   bool     `json:"open"`
		Errors []string `json:"errors"`
		Cands  []string `json:"cands"`
		Sent   int      `json:"sent"`
		Got    int      `json:"got"`
		A      t443Side `json:"a"`
		B      t443Side `json:"b"`
	}
	br.call(t, "t443", "t443.run", &res, ice.ICEServers, 20000)
	t.Logf("ICE candidate errors %q; caller's candidates %q", res.Errors, res.Cands)
	t.Logf("Chromium behind a 443-only firewall: data channel open %v, sent %d, received %d; caller %+v; callee %+v", res.Open, res.Sent, res.Got, res.A, res.B)
	if !res.Open || res.Got != res.Sent || res.Sent == 0 {
		for _, c := range br.console(t, "t443", 0) {
			t.Logf("console %s: %.300s", c.Type, c.Text)
		}
		t.Fatalf("data channel open %v, %d of %d bytes arrived; want all through turns:443", res.Open, res.Got, res.Sent)
	}
	for name, s := range map[string]t443Side{"caller": res.A, "callee": res.B} {
		if s.CandidateType != "relay" || s.RelayProtocol != "tls" || !strings.Contains(s.URL, ":443") {
			t.Errorf("%s's selected local candidate: %s over %q from %q; want a relay candidate over tls from %s", name, s.CandidateType, s.RelayProtocol, s.URL, want443)
		}
		if s.BytesReceived == 0 || s.AudioIn == 0 && name == "callee" {
			t.Errorf("%s: %d bytes received on the selected pair, audio in %d", name, s.BytesReceived, s.AudioIn)
		}
	}
}
