// Package livekittest runs the real LiveKit SFU, livekit-server, for tests:
// Start writes a configuration (API key and secret, listen address, node
// IP, RTC ports, optional TURN servers handed to clients), starts the
// binary (in a network namespace when the test gives a command wrapper),
// waits until it answers and stops it by PID at the end of the test.
//
// The binary comes from scripts/install-livekit.sh (livekitproc.Version, the
// one release icebox pins for its managed mode and its tests). Without it a
// test fails under CI=true and is skipped elsewhere, saying what to run.
package livekittest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

const (
	// startTimeout bounds start-up: livekit-server answers within a second
	// when idle; the margin is for a machine busy with -race builds.
	startTimeout = 30 * time.Second
	// stopTimeout is how long each stop signal gets: the first SIGTERM
	// drains (livekit-server waits for rooms to empty), the second forces.
	stopTimeout = 5 * time.Second
	// logTail is how much of the server's output a failed test prints.
	logTail = 64 << 10
)

// Config is what Start writes into livekit-server's configuration.
type Config struct {
	// Command makes the process, e.g. a netbed.NS's Command to run it in a
	// namespace; nil runs it in the test's own namespace.
	Command func(ctx context.Context, name string, args ...string) *exec.Cmd
	// Dial reaches the server for the readiness probe (a netbed.NS's
	// DialContext with Command); nil dials from the test's namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// BindIP is where the signalling and API port listens. Default: 127.0.0.1.
	BindIP string
	// Port is the signalling and API port. Default: 7880 with Command (a
	// namespace of the test's own), a free loopback port without.
	Port int
	// NodeIP is the address livekit-server gathers and advertises its ICE
	// candidates on (only that one). Required.
	NodeIP string
	// UDPPort is the single UDP port of all RTC traffic when UDPPortEnd is
	// 0, else the first port of a range up to UDPPortEnd. Default: Port+2.
	UDPPort, UDPPortEnd int
	// TCPPort is ICE over TCP. Default: Port+1 (livekit-server's own
	// default, 7881, would collide between servers on one host).
	TCPPort int
	// TURNServers are handed to clients in the join response.
	TURNServers []TURNServer
	// APIKey and APISecret sign the tokens; default: generated.
	APIKey, APISecret string
	// Extra is merged over the generated configuration (top-level keys).
	Extra map[string]any
}

// TURNServer is one entry of rtc.turn_servers: with Secret, livekit-server
// mints per-participant REST credentials (username "expiry:participantID",
// HMAC-SHA1 of it, base64), as coturn's use-auth-secret expects.
type TURNServer struct {
	Host     string `yaml:"host"`
	Port     int    `yaml:"port"`
	Protocol string `yaml:"protocol"` // udp, tcp or tls
	Secret   string `yaml:"secret,omitempty"`
	TTL      int    `yaml:"ttl,omitempty"`
}

// Server is a running livekit-server.
type Server struct {
	// URL is what clients connect to, ws://BindIP:Port.
	URL string
	// HTTPURL is the same port over HTTP (the RoomService API).
	HTTPURL           string
	APIKey, APISecret string

	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}

	stopOnce sync.Once
}

// Binary returns the path of livekit-server at livekitproc.Version, or skips the test
// (fails it under CI=true) saying what to run.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := find()
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v; CI must run scripts/install-livekit.sh first (make test-deps)", err)
	}
	t.Skipf("%v; run scripts/install-livekit.sh (or make test-deps)", err)
	return ""
}

// find looks in $LIVEKIT_BIN, then $GOBIN and $(go env GOPATH)/bin (where
// the install script puts it), then $PATH, and checks the version.
func find() (string, error) {
	var dirs []string
	if d := os.Getenv("LIVEKIT_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	for _, gp := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gp, "bin"))
	}
	path := ""
	for _, d := range dirs {
		if fi, err := os.Stat(filepath.Join(d, "livekit-server")); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			path = filepath.Join(d, "livekit-server")
			break
		}
	}
	if path == "" {
		p, err := exec.LookPath("livekit-server")
		if err != nil {
			return "", fmt.Errorf("livekittest: livekit-server not found in %s or $PATH", strings.Join(dirs, ", "))
		}
		path = p
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("livekittest: %s --version: %w: %s", path, err, out)
	}
	if got, want := strings.TrimSpace(string(out)), "livekit-server version "+strings.TrimPrefix(livekitproc.Version, "v"); got != want {
		return "", fmt.Errorf("livekittest: %s reports %q, want %q", path, got, want)
	}
	return path, nil
}

// Start runs livekit-server with cfg until the test ends.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	bin := Binary(t)
	if cfg.NodeIP == "" {
		t.Fatal("livekittest: Config.NodeIP is required")
	}
	if cfg.BindIP == "" {
		cfg.BindIP = "127.0.0.1"
	}
	if cfg.Port == 0 {
		if cfg.Command != nil {
			cfg.Port = 7880
		} else {
			cfg.Port = freePort(t, cfg.BindIP)
		}
	}
	if cfg.UDPPort == 0 {
		cfg.UDPPort = cfg.Port + 2
	}
	if cfg.TCPPort == 0 {
		cfg.TCPPort = cfg.Port + 1
	}
	if cfg.APIKey == "" {
		cfg.APIKey = "APItest" + randomHex(t, 4)
	}
	if cfg.APISecret == "" {
		cfg.APISecret = randomHex(t, 32)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "livekit.yaml")
	body, err := yaml.Marshal(configDoc(cfg))
	if err != nil {
		t.Fatalf("livekittest: %v", err)
	}
	if err := os.WriteFile(cfgPath, body, 0o600); err != nil {
		t.Fatalf("livekittest: %v", err)
	}

	hostPort := net.JoinHostPort(cfg.BindIP, strconv.Itoa(cfg.Port))
	s := &Server{
		URL: "ws://" + hostPort, HTTPURL: "http://" + hostPort,
		APIKey: cfg.APIKey, APISecret: cfg.APISecret,
		out: &syncBuffer{}, exited: make(chan struct{}),
	}
	mk := cfg.Command
	if mk == nil {
		mk = exec.CommandContext
	}
	s.cmd = mk(context.Background(), bin, "--config", cfgPath)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	// The configuration is the file alone: livekit-server reads flags from
	// these variables too, and a set one (even empty) overrides the file.
	flagVars := []string{"LIVEKIT_CONFIG", "LIVEKIT_KEYS", "LIVEKIT_REGION", "NODE_IP", "UDP_PORT",
		"REDIS_HOST", "REDIS_PASSWORD", "LIVEKIT_TURN_CERT", "LIVEKIT_TURN_KEY"}
	s.cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		name, _, _ := strings.Cut(kv, "=")
		return slices.Contains(flagVars, name)
	})
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("livekittest: start %s: %v", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("livekittest: livekit-server output (last %d KiB):\n%s", logTail>>10, s.Log())
		}
	})
	begin := time.Now()
	if err := s.waitReady(cfg.Dial); err != nil {
		t.Fatalf("livekittest: %v\n%s", err, s.Log())
	}
	t.Logf("livekittest: livekit-server %s ready at %s (node IP %s, UDP %d) in %v", livekitproc.Version, s.URL, cfg.NodeIP, cfg.UDPPort, time.Since(begin).Round(time.Millisecond))
	return s
}

func configDoc(cfg Config) map[string]any {
	rtc := map[string]any{
		"node_ip":         cfg.NodeIP,
		"use_external_ip": false,
		// Only the node IP: no candidates on the other interfaces of the
		// machine (or of a namespace) that clients cannot reach.
		"ips":                       map[string]any{"includes": []string{cfg.NodeIP + "/32"}},
		"enable_loopback_candidate": false,
	}
	if cfg.UDPPortEnd == 0 {
		rtc["udp_port"] = cfg.UDPPort
	} else {
		rtc["port_range_start"], rtc["port_range_end"] = cfg.UDPPort, cfg.UDPPortEnd
	}
	rtc["tcp_port"] = cfg.TCPPort
	if len(cfg.TURNServers) > 0 {
		rtc["turn_servers"] = cfg.TURNServers
	}
	doc := map[string]any{
		"port":           cfg.Port,
		"bind_addresses": []string{cfg.BindIP},
		"rtc":            rtc,
		"keys":           map[string]string{cfg.APIKey: cfg.APISecret},
		"turn":           map[string]any{"enabled": false},
		"logging":        map[string]any{"level": "info", "json": true},
	}
	for k, v := range cfg.Extra {
		doc[k] = v
	}
	return doc
}

// waitReady polls GET / (livekit-server answers 200 "OK") until the
// deadline or the process exits.
func (s *Server) waitReady(dial func(ctx context.Context, network, addr string) (net.Conn, error)) error {
	tr := &http.Transport{DisableKeepAlives: true}
	if dial != nil {
		tr.DialContext = dial
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: tr}
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("livekit-server exited during start-up (%v)", s.cmd.ProcessState)
		default:
		}
		resp, err := hc.Get(s.HTTPURL + "/")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("livekit-server not ready at %s within %v", s.HTTPURL, startTimeout)
}

// Stop ends the server: SIGTERM (it drains), a second SIGTERM (it stops at
// once), then SIGKILL, each after stopTimeout. It is called at cleanup;
// calling it earlier is fine.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGTERM, syscall.SIGKILL} {
			if s.cmd.Process.Signal(sig) != nil {
				break // already gone
			}
			select {
			case <-s.exited:
				return
			case <-time.After(stopTimeout):
			}
		}
		<-s.exited
	})
}

// Exited reports whether the process has ended.
func (s *Server) Exited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

// Log is the tail of the server's output.
func (s *Server) Log() string {
	b := s.out.Bytes()
	if len(b) > logTail {
		b = b[len(b)-logTail:]
	}
	return string(b)
}

// freePort picks a signalling port p on ip whose neighbours livekit-server
// also takes — TCP p+1 and UDP p+2, on every address — free as well: a
// port the kernel hands out says nothing of the next two, and a test
// package running beside this one may hold them (CI saw "bind: address
// already in use" on p+1).
func freePort(t testing.TB, ip string) int {
	t.Helper()
	for try := 0; try < 20; try++ {
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("livekittest: %v", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if p+2 > 65535 {
			continue
		}
		tcp, err := net.Listen("tcp", ":"+strconv.Itoa(p+1))
		if err != nil {
			continue
		}
		tcp.Close()
		udp, err := net.ListenPacket("udp", ":"+strconv.Itoa(p+2))
		if err != nil {
			continue
		}
		udp.Close()
		return p
	}
	t.Fatal("livekittest: no port p with p+1 (TCP) and p+2 (UDP) free after 20 tries")
	return 0
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("livekittest: %v", err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer collects the process's output from its two pipes' goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Bounded: keep the last logTail bytes and some.
	if s.b.Len() > 4*logTail {
		rest := s.b.Bytes()[s.b.Len()-logTail:]
		s.b = *bytes.NewBuffer(append([]byte(nil), rest...))
	}
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}
