package probe

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
)

const testSecret = "probe-test-secret"

// serverOpts vary the in-process pion TURN server.
type serverOpts struct {
	clock      time.Duration // the server's clock, ahead of ours by this much
	permission turn.PermissionHandler
}

// startServer runs a bare pion TURN server on 127.0.0.1:0 (UDP) with TURN
// REST auth, relaying on 127.0.0.1; it returns the port.
func startServer(t *testing.T, o serverOpts) int {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const realm = "probe.test"
	logf := logging.NewDefaultLoggerFactory()
	logf.DefaultLogLevel = logging.LogLevelError
	s, err := turn.NewServer(turn.ServerConfig{
		Realm: realm,
		AuthHandler: func(ra *turn.RequestAttributes) (string, []byte, bool) {
			exp := usernameExpiry(ra.Username)
			if exp.IsZero() || !time.Now().Add(o.clock).Before(exp) {
				return "", nil, false
			}
			return ra.Username, turn.GenerateAuthKey(ra.Username, realm, credentials.Password([]byte(testSecret), ra.Username)), true
		},
		PacketConnConfigs: []turn.PacketConnConfig{{
			PacketConn: pc,
			RelayAddressGenerator: &turn.RelayAddressGeneratorStatic{
				RelayAddress: net.IPv4(127, 0, 0, 1),
				Address:      "127.0.0.1",
			},
			PermissionHandler: o.permission,
		}},
		LoggerFactory: logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return pc.LocalAddr().(*net.UDPAddr).Port
}

func runOne(t *testing.T, url string, cfg Config) *Result {
	t.Helper()
	tg, err := ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Targets = []Target{tg}
	if cfg.Timeout == 0 {
		cfg.Timeout = 3 * time.Second
	}
	rep := Run(context.Background(), cfg)
	if len(rep.Results) != 1 {
		t.Fatalf("%d results, want 1", len(rep.Results))
	}
	r := rep.Results[0]
	if rep.OK != r.OK() {
		t.Errorf("report OK %v, result OK %v", rep.OK, r.OK())
	}
	return r
}

func stepNames(r *Result) string {
	var s []string
	for _, st := range r.Steps {
		s = append(s, st.Name+"="+string(st.Status))
	}
	return strings.Join(s, " ")
}

func TestRunRelays(t *testing.T) {
	t.Parallel()
	port := startServer(t, serverOpts{})
	r := runOne(t, "turn:127.0.0.1:"+strconv.Itoa(port), Config{Mint: SecretMinter([]byte(testSecret), "", "alice", nil), Packets: 20})
	if !r.OK() {
		t.Fatalf("verdict %s: %s (steps %s)", r.Verdict, r.Message, stepNames(r))
	}
	if r.Stats == nil || r.Stats.Sent != 20 || r.Stats.Received != 20 || r.Stats.RTTAvg <= 0 {
		t.Errorf("stats %+v, want 20 of 20 with an RTT", r.Stats)
	}
	if r.BehindNAT == nil || *r.BehindNAT || !strings.HasPrefix(r.Mapped, "127.0.0.1:") {
		t.Errorf("mapped %s, behind NAT %v; want 127.0.0.1 and no NAT", r.Mapped, r.BehindNAT)
	}
	if got := stepNames(r); got != "binding=ok allocate=ok peer allocation=ok permission=ok relay=ok" {
		t.Errorf("steps %s", got)
	}
}

// A server that refuses permissions for its own relay addresses: the
// verdict says relay to relay is forbidden.
func TestRunPeerRefused(t *testing.T) {
	t.Parallel()
	port := startServer(t, serverOpts{permission: func(net.Addr, net.IP) bool { return false }})
	r := runOne(t, "turn:127.0.0.1:"+strconv.Itoa(port), Config{Mint: SecretMinter([]byte(testSecret), "", "alice", nil)})
	if r.Verdict != VerdictPeerRefused || !strings.Contains(r.Message, "403") || !strings.Contains(r.Message, r.PeerRelay) {
		t.Fatalf("verdict %s: %q; want %s naming 403 and %s", r.Verdict, r.Message, VerdictPeerRefused, r.PeerRelay)
	}
}

// A server whose clock runs two hours ahead refuses a one-hour credential
// and accepts a 30-day one: clock skew, not a wrong secret.
func TestRunClockSkew(t *testing.T) {
	t.Parallel()
	port := startServer(t, serverOpts{clock: 2 * time.Hour})
	url := "turn:127.0.0.1:" + strconv.Itoa(port)
	r := runOne(t, url, Config{Mint: SecretMinter([]byte(testSecret), "", "alice", nil)})
	if r.Verdict != VerdictClockSkew || !strings.Contains(r.Message, "clock is ahead") {
		t.Fatalf("verdict %s: %q (steps %s); want %s", r.Verdict, r.Message, stepNames(r), VerdictClockSkew)
	}
	r = runOne(t, url, Config{Mint: SecretMinter([]byte("not-the-secret"), "", "alice", nil)})
	if r.Verdict != VerdictAuth || !strings.Contains(r.Message, "secret is wrong") {
		t.Fatalf("wrong secret: verdict %s: %q; want %s", r.Verdict, r.Message, VerdictAuth)
	}
}

func TestRunNoCredentials(t *testing.T) {
	t.Parallel()
	port := startServer(t, serverOpts{})
	r := runOne(t, "turn:127.0.0.1:"+strconv.Itoa(port), Config{})
	if r.Verdict != VerdictNoCredentials {
		t.Fatalf("verdict %s, want %s", r.Verdict, VerdictNoCredentials)
	}
	// A STUN URL needs none.
	r = runOne(t, "stun:127.0.0.1:"+strconv.Itoa(port), Config{})
	if !r.OK() || r.Mapped == "" {
		t.Fatalf("stun: verdict %s: %s", r.Verdict, r.Message)
	}
}

// A UDP port nobody listens on answers with ICMP port unreachable; a
// silent one times out.
func TestRunClosedAndSilent(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := pc.LocalAddr().(*net.UDPAddr).Port
	t.Cleanup(func() { pc.Close() })
	closedPC, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := closedPC.LocalAddr().(*net.UDPAddr).Port
	closedPC.Close()

	r := runOne(t, "stun:127.0.0.1:"+strconv.Itoa(closed), Config{})
	if r.Verdict != VerdictRefused {
		t.Errorf("closed port: verdict %s: %s; want %s", r.Verdict, r.Message, VerdictRefused)
	}
	start := time.Now()
	r = runOne(t, "stun:127.0.0.1:"+strconv.Itoa(silent), Config{Timeout: 500 * time.Millisecond})
	if r.Verdict != VerdictUnreachable || !strings.Contains(r.Message, "timed out") {
		t.Errorf("silent port: verdict %s: %s; want %s", r.Verdict, r.Message, VerdictUnreachable)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a 500ms timeout took %s", d)
	}
}
