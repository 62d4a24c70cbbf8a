package livekitproc_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/proto"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

type supervised struct {
	sup  *livekitproc.Supervisor
	reg  *prometheus.Registry
	log  *logBuffer
	cfg  livekitproc.ServerConfig
	done chan error
}

// startSupervisor runs a supervisor of the real livekit-server on
// loopback until the test ends.
func startSupervisor(t *testing.T, edit func(*livekitproc.ServerConfig)) *supervised {
	t.Helper()
	bin := requireBinary(t)
	dir := t.TempDir()
	c := serverConfig(t, dir, "http://127.0.0.1:9/webhook") // webhooks go nowhere here
	if edit != nil {
		edit(&c)
	}
	s := &supervised{reg: prometheus.NewRegistry(), log: &logBuffer{}, cfg: c, done: make(chan error, 1)}
	sup, err := livekitproc.NewSupervisor(livekitproc.SupervisorConfig{
		Binary:      bin,
		ConfigPath:  writeConfig(t, dir, c),
		HealthURL:   "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)) + "/",
		Redact:      []string{c.Keys.APISecret},
		MinBackoff:  50 * time.Millisecond,
		StopTimeout: 10 * time.Second,
		Registerer:  s.reg,
		Logger:      zerolog.New(s.log).Level(zerolog.DebugLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	s.sup = sup
	ctx, cancel := context.WithCancel(context.Background())
	go func() { s.done <- sup.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := sup.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// gone reports whether no process has pid, and no process is left in its
// process group.
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) && errors.Is(syscall.Kill(-pid, 0), syscall.ESRCH)
}

// TestSupervisor runs the real livekit-server: it becomes ready, a kill -9
// is answered with a restart (counted, ready again under a new PID), a
// requested restart is not counted as a failure, and Close stops it with
// no process left behind. Its output is logged at debug, without the API
// secret.
func TestSupervisor(t *testing.T) {
	start := time.Now()
	s := startSupervisor(t, nil)
	waitFor(t, 30*time.Second, "livekit-server ready", func() bool { return s.sup.Ready() == nil })
	t.Logf("child start to ready: %v", time.Since(start).Round(time.Millisecond))
	st := s.sup.State()
	if !st.Running || !st.Ready || st.PID == 0 || st.Restarts != 0 {
		t.Fatalf("state %+v, want running, ready, a PID, no restarts", st)
	}
	if got := metricValue(t, s.reg, "icebox_livekit_up"); got != 1 {
		t.Errorf("icebox_livekit_up = %v, want 1", got)
	}

	pid1 := st.PID
	killed := time.Now()
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "restarted after kill -9", func() bool {
		st := s.sup.State()
		return st.Ready && st.PID != 0 && st.PID != pid1
	})
	t.Logf("kill -9 to ready again: %v", time.Since(killed).Round(time.Millisecond))
	if got := metricValue(t, s.reg, "icebox_livekit_restarts_total"); got != 1 {
		t.Errorf("icebox_livekit_restarts_total = %v after one kill, want 1", got)
	}
	if !gone(pid1) {
		t.Errorf("the killed child %d is still there", pid1)
	}

	pid2 := s.sup.State().PID
	s.sup.Restart()
	waitFor(t, 30*time.Second, "restarted on request", func() bool {
		st := s.sup.State()
		return st.Ready && st.PID != 0 && st.PID != pid2
	})
	if got := s.sup.State().Restarts; got != 1 {
		t.Errorf("restarts = %d after a requested restart, want still 1", got)
	}

	pid3 := s.sup.State().PID
	stopped := time.Now()
	if err := s.sup.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("stop: %v", time.Since(stopped).Round(time.Millisecond))
	if err := <-s.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if !gone(pid3) || !gone(pid2) {
		t.Errorf("livekit-server left running after Close (pids %d, %d)", pid2, pid3)
	}
	if s.sup.Ready() == nil || metricValue(t, s.reg, "icebox_livekit_up") != 0 {
		t.Error("still ready after Close")
	}

	log := s.log.String()
	if !strings.Contains(log, `"livekit":{`) || !strings.Contains(log, "starting LiveKit server") {
		t.Errorf("the child's JSON lines are not in the log:\n%s", log)
	}
	if strings.Contains(log, s.cfg.Keys.APISecret) {
		t.Error("the API secret is in the log")
	}
}

// TestSupervisorRestartsAFailingChild: a child that cannot start (its port
// taken) is restarted with backoff and counted, and never reported ready.
func TestSupervisorRestartsAFailingChild(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s := startSupervisor(t, func(c *livekitproc.ServerConfig) { c.Port = l.Addr().(*net.TCPAddr).Port })
	waitFor(t, 30*time.Second, "two restarts", func() bool { return s.sup.State().Restarts >= 2 })
	if s.sup.Ready() == nil {
		t.Error("ready although its port is taken")
	}
}

// TestLiveKitAcceptsTURNServers: livekit-server starts with an
// rtc.turn_servers block whose secret file is private, and refuses one
// that others can read (its own check, which the keystore's file must
// pass).
func TestLiveKitAcceptsTURNServers(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "sfu-turn-secret")
	if err := os.WriteFile(secret, []byte("a-turn-rest-secret-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	turn := []livekitproc.TURNServer{{Host: "127.0.0.1", Port: 3478, Protocol: "udp", SecretFile: secret, TTL: 3600}}
	s := startSupervisor(t, func(c *livekitproc.ServerConfig) { c.TURNServers = turn })
	waitFor(t, 30*time.Second, "livekit-server ready with turn_servers", func() bool { return s.sup.Ready() == nil })
	// A participant is handed the server with TURN REST credentials minted
	// from the file's secret (whitespace trimmed): username
	// "<unix expiry>:<participant SID>", password
	// base64(HMAC-SHA1(secret, username)), valid for ttl.
	join := joinRoom(t, s.cfg, "turn-room", "@alice:example.org:DEV")
	var got *livekit.ICEServer
	for _, is := range join.GetIceServers() {
		if slices.Contains(is.GetUrls(), "turn:127.0.0.1:3478?transport=udp") {
			got = is
		}
	}
	if got == nil {
		t.Fatalf("JoinResponse ice_servers %v lack turn:127.0.0.1:3478?transport=udp", join.GetIceServers())
	}
	expiry, sid, ok := strings.Cut(got.GetUsername(), ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if !ok || err != nil || sid != join.GetParticipant().GetSid() {
		t.Errorf("TURN username %q, want <expiry>:%s", got.GetUsername(), join.GetParticipant().GetSid())
	}
	if ttl := time.Until(time.Unix(exp, 0)); ttl < 3500*time.Second || ttl > 3600*time.Second {
		t.Errorf("TURN credential valid for %s, want the configured ttl 3600 s", ttl)
	}
	mac := hmac.New(sha1.New, []byte("a-turn-rest-secret-0123456789abcdef"))
	mac.Write([]byte(got.GetUsername()))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); got.GetCredential() != want {
		t.Errorf("TURN password %q, want HMAC-SHA1 of the username with the file's secret", got.GetCredential())
	}
	if strings.Contains(s.log.String(), "a-turn-rest-secret") {
		t.Error("the TURN secret is in the log")
	}

	if err := os.Chmod(secret, 0o644); err != nil {
		t.Fatal(err)
	}
	c := serverConfig(t, t.TempDir(), "http://127.0.0.1:9/webhook")
	c.TURNServers = turn
	path := writeConfig(t, filepath.Dir(c.Keys.File), c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// It exits (with status 0, as v1.13.5 does on any config error) saying why.
	out, err := exec.CommandContext(ctx, requireBinary(t), "--config", path).CombinedOutput()
	if ctx.Err() != nil || !strings.Contains(string(out), "turn secret file others permissions must be set to 0") {
		t.Errorf("livekit-server with a world-readable TURN secret file: %v\n%s", err, out)
	}
}

// joinRoom opens LiveKit's signal WebSocket as identity with a token that
// may create room, and returns the JoinResponse; it leaves again.
func joinRoom(t *testing.T, c livekitproc.ServerConfig, room, identity string) *livekit.JoinResponse {
	t.Helper()
	jwt, err := auth.NewAccessToken(c.Keys.APIKey, c.Keys.APISecret).SetIdentity(identity).SetValidFor(time.Minute).
		SetVideoGrant(&auth.VideoGrant{RoomJoin: true, RoomCreate: true, Room: room}).ToJWT()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := "ws://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)) + "/rtc?" + url.Values{"access_token": {jwt}, "protocol": {"15"}}.Encode()
	ws, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("join LiveKit: %v", err)
	}
	defer ws.CloseNow()
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("join LiveKit: %v", err)
		}
		var res livekit.SignalResponse
		if err := proto.Unmarshal(msg, &res); err != nil {
			t.Fatalf("join LiveKit: %v", err)
		}
		if j := res.GetJoin(); j != nil {
			leave, _ := proto.Marshal(&livekit.SignalRequest{Message: &livekit.SignalRequest_Leave{Leave: &livekit.LeaveRequest{}}})
			_ = ws.Write(ctx, websocket.MessageBinary, leave)
			ws.Close(websocket.StatusNormalClosure, "")
			return j
		}
	}
}
