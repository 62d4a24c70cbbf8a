package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// requireLiveKit ends the test when livekit-server is not installed: a
// failure under CI=true, a skip elsewhere.
func requireLiveKit(t *testing.T) {
	t.Helper()
	if _, err := livekitproc.FindBinary(""); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v; CI must run scripts/install-livekit.sh first (make test-deps)", err)
		}
		t.Skipf("%v", err)
	}
}

// managedConfig is a node on loopback running its own livekit-server on
// a free loopback port, with media ports apart from nodetest's relay range.
func managedConfig(t *testing.T, stateDir string) config.Config {
	t.Helper()
	cfg := nodetest.Config(stateDir, testSecret)
	cfg.MatrixRTC.Enabled = true
	cfg.MatrixRTC.LiveKit.Mode = config.LiveKitModeManaged
	m := &cfg.MatrixRTC.LiveKit.Managed
	m.Bind, m.NodeIP = "127.0.0.1", "127.0.0.1"
	// No ICE/TCP: LiveKit would listen for it on every interface, and
	// tests listen on loopback only.
	m.Port, m.RTCTCPPort = freeTCPPort(t), 0
	m.RTCUDPPorts = "41000-41099"
	return cfg
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func readyz(t *testing.T, n *nodetest.Node) int {
	t.Helper()
	resp, err := http.Get("http://" + n.Addrs.HTTP + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// poll waits for cond, checking every 20 ms, for at most timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func processGone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// TestNodeManagedLiveKit runs icebox with its own livekit-server and a
// real homeserver: /readyz waits for LiveKit; the key pair is generated
// once into state_dir; a JWT from /sfu/get joins the room the service
// created on that LiveKit (its webhooks reach icebox and move the gauges);
// a forged webhook is refused; kill -9 of the child is answered with a
// restart; stopping the node leaves no livekit-server behind.
func TestNodeManagedLiveKit(t *testing.T) {
	requireLiveKit(t)
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, aliceTok, _ := hs.Register(t, "alice", "alice-password-1", false)

	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := managedConfig(t, stateDir)
	cfg.MatrixRTC.FullAccessHomeservers = []string{hs.ServerName()}
	cfg.MatrixRTC.HomeserverURLs = map[string]string{hs.ServerName(): hs.URL()}
	reg := prometheus.NewRegistry()
	started := time.Now()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop(), Registry: reg})
	poll(t, 30*time.Second, "/readyz 200 with livekit-server up", func() bool { return readyz(t, n) == http.StatusOK })
	t.Logf("node start to ready with livekit-server: %v", time.Since(started).Round(time.Millisecond))
	st, ok := n.LiveKit()
	if !ok || !st.Ready || st.PID == 0 {
		t.Fatalf("LiveKit() = %+v, %v", st, ok)
	}
	keys, err := livekitproc.LoadKeys(filepath.Join(stateDir, "livekit"))
	if err != nil {
		t.Fatal(err)
	}

	// A JWT for alice, as Element Call gets it.
	const roomID = "!call:localhost"
	tok := openIDToken(t, hs.URL(), alice, aliceTok)
	body, _ := json.Marshal(map[string]any{"room": roomID, "openid_token": tok, "device_id": "ALICEDEV"})
	resp, err := http.Post("http://"+n.Addrs.HTTP+"/livekit/jwt/sfu/get", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ URL, JWT string }
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/sfu/get: %d %v", resp.StatusCode, err)
	}
	wantURL := "ws://127.0.0.1:" + itoa(cfg.MatrixRTC.LiveKit.Managed.Port)
	if got.URL != wantURL {
		t.Errorf("url %q, want the managed LiveKit's %q", got.URL, wantURL)
	}
	// The service created the room on the managed LiveKit; its
	// room_started webhook came back to icebox.
	poll(t, 30*time.Second, "icebox_livekit_rooms = 1", func() bool { return gauge(t, reg, "icebox_livekit_rooms") == 1 })

	join := joinLiveKit(t, got.URL, got.JWT)
	if want := authservice.RoomAlias(roomID, "m.call#ROOM"); join.GetRoom().GetName() != want {
		t.Errorf("joined room %q, want %q", join.GetRoom().GetName(), want)
	}
	if want := authservice.LegacyIdentity(alice, "ALICEDEV"); join.GetParticipant().GetIdentity() != want {
		t.Errorf("joined as %q, want %q", join.GetParticipant().GetIdentity(), want)
	}

	// Webhooks: a forged one is refused, before and after.
	hook := "http://" + n.Addrs.HTTP + livekitproc.WebhookPath
	for name, authz := range map[string]string{"unsigned": "", "forged": forgedToken(t, keys.APIKey)} {
		req, _ := http.NewRequest(http.MethodPost, hook, strings.NewReader(`{"event":"room_finished","room":{"name":"x"}}`))
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s webhook: %d, want 401", name, resp.StatusCode)
		}
	}

	// kill -9: icebox restarts it; the new one has no rooms.
	pid := st.PID
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, "restarted after kill -9", func() bool {
		st, _ := n.LiveKit()
		return st.Ready && st.PID != pid && readyz(t, n) == http.StatusOK
	})
	t.Logf("kill -9 to ready again: %v", time.Since(killed).Round(time.Millisecond))
	if got := gauge(t, reg, "icebox_livekit_restarts_total"); got != 1 {
		t.Errorf("icebox_livekit_restarts_total = %v, want 1", got)
	}
	if got := gauge(t, reg, "icebox_livekit_rooms"); got != 0 {
		t.Errorf("icebox_livekit_rooms = %v after a restart, want 0", got)
	}

	st, _ = n.LiveKit()
	stopped := time.Now()
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("node stop with livekit-server: %v", time.Since(stopped).Round(time.Millisecond))
	if !processGone(st.PID) || !processGone(pid) {
		t.Errorf("livekit-server (pid %d) still running after the node stopped", st.PID)
	}

	// The pair outlives the restart of icebox.
	n2 := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop()})
	poll(t, 30*time.Second, "second start ready", func() bool { return readyz(t, n2) == http.StatusOK })
	again, err := livekitproc.LoadKeys(filepath.Join(stateDir, "livekit"))
	if err != nil || again != keys {
		t.Errorf("keys after a restart of icebox: %v, %v; want the same pair", again, err)
	}
}

// TestNodeNotReadyWithoutLiveKit: a managed LiveKit that cannot start (its
// port taken) keeps /readyz at 503 while icebox serves the rest.
func TestNodeNotReadyWithoutLiveKit(t *testing.T) {
	requireLiveKit(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cfg := managedConfig(t, filepath.Join(t.TempDir(), "state"))
	cfg.MatrixRTC.LiveKit.Managed.Port = l.Addr().(*net.TCPAddr).Port
	reg := prometheus.NewRegistry()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop(), Registry: reg})
	poll(t, 30*time.Second, "a failed start counted", func() bool { return gauge(t, reg, "icebox_livekit_restarts_total") >= 1 })
	if got := readyz(t, n); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d with livekit-server down, want 503", got)
	}
	if got := gauge(t, reg, "icebox_livekit_up"); got != 0 {
		t.Errorf("icebox_livekit_up = %v, want 0", got)
	}
}

// joinLiveKit opens LiveKit's signal WebSocket with jwt and returns its
// JoinResponse: LiveKit accepted the token for that room. It leaves again.
func joinLiveKit(t *testing.T, lkURL, jwt string) *livekit.JoinResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := lkURL + "/rtc?" + url.Values{"access_token": {jwt}, "protocol": {"15"}, "auto_subscribe": {"1"}}.Encode()
	c, resp, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("join LiveKit: %v (status %d)", err, status)
	}
	defer c.CloseNow()
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("join LiveKit: %v", err)
		}
		var res livekit.SignalResponse
		if err := proto.Unmarshal(msg, &res); err != nil {
			t.Fatalf("join LiveKit: %v", err)
		}
		if j := res.GetJoin(); j != nil {
			leave, _ := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
			_ = c.Write(ctx, websocket.MessageBinary, leave)
			c.Close(websocket.StatusNormalClosure, "")
			return j
		}
	}
}

// forgedToken is a webhook token for the right key signed with another
// secret.
func forgedToken(t *testing.T, key string) string {
	t.Helper()
	tok, err := livekitAccessToken(key, strings.Repeat("f", 43))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func openIDToken(t *testing.T, hsURL, userID, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, hsURL+"/_matrix/client/v3/user/"+url.PathEscape(userID)+"/openid/request_token", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var o map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&o); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("openid request_token: %d %v", resp.StatusCode, err)
	}
	return o
}

// TestNodeDrainWaitsForLiveKitParticipants: a node stopping with someone
// in a room of its LiveKit drains until they leave (the webhooks say so),
// as it waits for allocations.
func TestNodeDrainWaitsForLiveKitParticipants(t *testing.T) {
	requireLiveKit(t)
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := managedConfig(t, stateDir)
	cfg.DrainTimeout = 10 * time.Second
	log := &syncBuffer{}
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(log)})
	poll(t, 30*time.Second, "/readyz 200", func() bool { return readyz(t, n) == http.StatusOK })
	keys, err := livekitproc.LoadKeys(filepath.Join(stateDir, "livekit"))
	if err != nil {
		t.Fatal(err)
	}
	hook := func(ev string) {
		t.Helper()
		body := []byte(`{"event":"` + ev + `","room":{"name":"r1","sid":"RM_1"},"participant":{"sid":"PA_1","identity":"@a:b:D"}}`)
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.Addrs.HTTP+livekitproc.WebhookPath, bytes.NewReader(body))
		req.Header.Set("Authorization", signWebhook(t, body, keys.APIKey, keys.APISecret))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook %s: %d", ev, resp.StatusCode)
		}
	}
	hook("participant_joined")

	stopped := make(chan error, 1)
	go func() { stopped <- n.Stop() }()
	poll(t, 10*time.Second, "draining for one LiveKit participant", func() bool {
		return strings.Contains(log.String(), `"livekit_participants":1,"timeout"`)
	})
	select {
	case err := <-stopped:
		t.Fatalf("the node stopped with a participant in a LiveKit room: %v", err)
	default:
	}
	hook("participant_left")
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), `"drained"`) {
		t.Error("the drain did not end by itself")
	}
}

// TestNodeManagedLiveKitMissingBinary: without livekit-server, New fails
// with a configuration error that says what to install, and leaves
// nothing running.
func TestNodeManagedLiveKitMissingBinary(t *testing.T) {
	cfg := managedConfig(t, filepath.Join(t.TempDir(), "state"))
	cfg.MatrixRTC.LiveKit.Managed.Binary = filepath.Join(t.TempDir(), "livekit-server")
	auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(context.Background(), cfg, node.Options{Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(), Auth: auth})
	if err == nil {
		n.Close()
		t.Fatal("New succeeded without livekit-server")
	}
	var ce node.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "matrixrtc.livekit.managed.binary: ") || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("New: %v (%T), want a ConfigError naming the missing file", err, err)
	}
}
