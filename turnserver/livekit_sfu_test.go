package turnserver

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/pion/turn/v5"
	"google.golang.org/protobuf/proto"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials/keystore"
)

// liveKitServer finds the pinned livekit-server (scripts/install-livekit.sh):
// $LIVEKIT_BIN/livekit-server, else $(go env GOPATH)/bin. Missing, the test
// skips, and fails under CI=true.
func liveKitServer(t *testing.T) string {
	t.Helper()
	var dirs []string
	if d := os.Getenv("LIVEKIT_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		dirs = append(dirs, filepath.Join(strings.TrimSpace(string(out)), "bin"))
	}
	for _, d := range dirs {
		if p := filepath.Join(d, "livekit-server"); isExecutable(p) {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("livekit-server not found in %v; CI must run scripts/install-livekit.sh (make test-deps)", dirs)
	}
	t.Skip("livekit-server not installed: scripts/install-livekit.sh")
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// TestSecurityLiveKitSFUCredentials runs the real livekit-server with
// icebox's SFU TURN secret file (keystore.SFUSecretPath) as its
// rtc.turn_servers[].secret_file, joins a room through LiveKit's signaling,
// and uses the TURN credential LiveKit hands the participant with pion's
// TURN client: it allocates on icebox's relay and may reach LiveKit's
// media ports, and nothing else.
func TestSecurityLiveKitSFUCredentials(t *testing.T) {
	bin := liveKitServer(t)

	// The SFU TURN secret, generated as icebox serve does.
	cfg := config.Default()
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	cfg.MatrixRTC.LiveKit.TURN.Enabled = true
	cfg.MatrixRTC.LiveKit.TURN.Peers = []string{"127.0.0.1:1"}
	if _, err := keystore.Build(cfg); err != nil {
		t.Fatal(err)
	}
	secretFile := keystore.SFUSecretPath(cfg.StateDir)
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}

	httpPort, rtcUDP, rtcTCP := freePort(t), freePort(t), freePort(t)
	sfuPeers := []PeerRange{
		{Prefix: netip.MustParsePrefix("127.0.0.1/32"), MinPort: rtcUDP, MaxPort: rtcUDP},
		{Prefix: netip.MustParsePrefix("127.0.0.1/32"), MinPort: rtcTCP, MaxPort: rtcTCP},
	}
	r := startRelay(t, relayOptions{allowLoopback: true, sfuKeys: []string{string(bytes.TrimSpace(secret))}, sfuPeers: sfuPeers})
	relayAP := netip.MustParseAddrPort(r.udp)

	const apiKey, apiSecret = "APIiceboxtest", "icebox-test-livekit-api-secret-0123456789"
	lkConf := fmt.Sprintf(`port: %d
bind_addresses: ["127.0.0.1"]
rtc:
  udp_port: %d
  tcp_port: %d
  use_external_ip: false
  node_ip: 127.0.0.1
  turn_servers:
    - host: 127.0.0.1
      port: %d
      protocol: udp
      secret_file: %s
keys:
  %s: %s
logging:
  level: warn
`, httpPort, rtcUDP, rtcTCP, relayAP.Port(), secretFile, apiKey, apiSecret)
	confPath := filepath.Join(t.TempDir(), "livekit.yaml")
	if err := os.WriteFile(confPath, []byte(lkConf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "--config", confPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("livekit-server output:\n%s", out.String())
		}
	})
	base := fmt.Sprintf("127.0.0.1:%d", httpPort)
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	waitFor(t, "livekit-server answering", 30*time.Second, func() bool {
		resp, err := hc.Get("http://" + base + "/")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	})

	// Join a room as LiveKit's clients do and read the JoinResponse.
	tok, err := auth.NewAccessToken(apiKey, apiSecret).SetIdentity("alice").
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: "scope-test"}).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+base+"/rtc?"+url.Values{"access_token": {tok}, "protocol": {"15"}}.Encode(), nil)
	if err != nil {
		t.Fatalf("LiveKit signaling: %v", err)
	}
	defer ws.CloseNow()
	var join *livekit.JoinResponse
	for join == nil {
		_, data, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("reading LiveKit's JoinResponse: %v", err)
		}
		var res livekit.SignalResponse
		if err := proto.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		join = res.GetJoin()
	}
	var user, pass string
	for _, s := range join.GetIceServers() {
		for _, u := range s.GetUrls() {
			if strings.Contains(u, r.udp) {
				user, pass = s.GetUsername(), s.GetCredential()
			}
		}
	}
	if user == "" {
		t.Fatalf("LiveKit handed out no TURN server for %s: %v", r.udp, join.GetIceServers())
	}
	sid := join.GetParticipant().GetSid()
	t.Logf("LiveKit participant %s got TURN username %s", sid, user)
	if !strings.HasSuffix(user, ":"+sid) {
		t.Errorf("username %q does not end in the participant ID %s", user, sid)
	}

	c := r.newClient(t, overUDP, user, pass, turn.RequestedAddressFamilyIPv4)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate with LiveKit's credential: %v", err)
	}
	t.Cleanup(func() { _ = relay.Close() })
	if _, err := relay.WriteTo([]byte("stun-ish"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(rtcUDP)}); err != nil {
		t.Errorf("WriteTo LiveKit's media port: %v", err)
	}
	for _, to := range []string{"127.0.0.2:5000", "8.8.8.8:53"} {
		_, err := relay.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(to)))
		t.Logf("WriteTo %s: %v", to, err)
		if err == nil {
			t.Errorf("LiveKit's credential reached %s, outside the SFU's ports", to)
		}
	}
	waitFor(t, "the datagram to LiveKit counted as scoped", 5*time.Second, func() bool {
		return r.counter(t, "icebox_turn_scoped_relayed_bytes_total", "direction", "to_peer") > 0
	})
}
