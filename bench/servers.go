//go:build linux

package main

// The two servers under test, each started fresh for every measurement in
// its own namespace, on 127.0.0.1:3478 (TURN, UDP and TCP), with relay ports
// relayMin..relayMax; icebox's HTTP API on 127.0.0.1:8080.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pion/stun/v4"
)

const (
	turnAddr   = "127.0.0.1:3478"
	httpAddr   = "127.0.0.1:8080"
	benchRealm = "bench.icebox.test"

	readyTimeout = 20 * time.Second
	stopTimeout  = 10 * time.Second
)

// secrets are the credentials of one run: the TURN REST secret both servers
// share, and icebox's API tokens.
type secrets struct {
	TURN  string
	Alice string
	Bob   string
	Admin string
}

// proc is a process the harness started. Every proc is registered in
// running until it has exited, so that an interrupted run stops them all.
type proc struct {
	name    string
	cmd     *exec.Cmd
	pid     int
	done    chan struct{}
	waitErr error
	logPath string
}

var (
	runningMu sync.Mutex
	running   = map[*proc]bool{}
)

// startProc starts cmd with its output in logPath ("" = discarded).
func startProc(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own copy
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.pid = cmd.Process.Pid
	runningMu.Lock()
	running[p] = true
	runningMu.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		runningMu.Lock()
		delete(running, p)
		runningMu.Unlock()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, and SIGKILL after stopTimeout, and waits for the exit.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // it may have exited meanwhile
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		fmt.Fprintf(os.Stderr, "bench: %s (pid %d) did not exit within %s of SIGTERM; killing it\n", p.name, p.pid, stopTimeout)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stopAll stops every process still running, each by its PID.
func stopAll() {
	runningMu.Lock()
	var ps []*proc
	for p := range running {
		ps = append(ps, p)
	}
	runningMu.Unlock()
	for _, p := range ps {
		p.stop()
	}
}

// logTail returns the last lines of the process's log.
func (p *proc) logTail() string {
	if p.logPath == "" {
		return ""
	}
	data, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	return tail(string(data), 20)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// server is a running icebox or coturn in its namespace.
type server struct {
	*proc
	kind string // "icebox" or "coturn"
	ns   *netns
	http *http.Client // dials inside ns
}

func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// iceboxConfig is the serve configuration of every icebox measurement. Keys
// it leaves out keep icebox's defaults, which is what the report measures:
// turn.udp_sockets (one SO_REUSEPORT socket per CPU) and turn.socket_buffer.
func iceboxConfig(stateDir string, s secrets) string {
	return fmt.Sprintf(`# icebox under benchmark (written by bench/).
state_dir: %q
drain_timeout: 0s        # exit at once on SIGTERM, even with allocations left
log:
  level: warn
  format: json
turn:
  realm: %s
  listen:
    udp: [%q]
    tcp: [%q]
  relay:
    bind_ip: 127.0.0.1
    min_port: %d
    max_port: %d
  allow_loopback_peers: true   # uclient -y relays to the server's own relay addresses on 127.0.0.1
  error_rate: 0                # every client is 127.0.0.1: the per-source 401 limiter would throttle Allocate
  quotas:
    per_user: 20000            # uclient and the generators use few users for many allocations
    per_call: 8
    total: 20000               # the 10 000 allocations of the memory test
credentials:
  secrets:
    - kid: k1
      secret: %q
      compat: true             # uclient -W and the generators mint kid-less REST usernames
http:
  listen: %q
auth:
  static_tokens:
    - {sha256: %s, user: alice}
    - {sha256: %s, user: bob}
    - {sha256: %s, user: admin, admin: true}
calls:
  initiate_rate: 100000        # the signaling test initiates calls back to back
  initiate_burst: 100000
`, stateDir, benchRealm, turnAddr, turnAddr, relayMin, relayMax, s.TURN, httpAddr,
		tokenHash(s.Alice), tokenHash(s.Bob), tokenHash(s.Admin))
}

// coturnArgs is the command line of every coturn measurement: its defaults
// but for what the comparison needs (REST secret, loopback peers, no
// quotas, the same relay range) and files kept in dir.
func coturnArgs(dir string, s secrets) []string {
	return []string{
		"--use-auth-secret", "--static-auth-secret=" + s.TURN,
		"--realm=" + benchRealm,
		"--allow-loopback-peers",
		"--no-cli", "--no-tls", "--no-dtls",
		"-L", "127.0.0.1", "--listening-port=3478",
		"--total-quota=0", "--user-quota=0",
		fmt.Sprintf("--min-port=%d", relayMin), fmt.Sprintf("--max-port=%d", relayMax),
		"--no-stdout-log", "--log-file=" + filepath.Join(dir, "turnserver.log"), "--simple-log",
		"--pidfile=" + filepath.Join(dir, "turnserver.pid"),
		"--db=" + filepath.Join(dir, "turndb"),
	}
}

// redact hides the secrets in a command line or config for the report.
func (s secrets) redact(text string) string {
	for _, v := range []string{s.TURN, s.Alice, s.Bob, s.Admin} {
		text = strings.ReplaceAll(text, v, "<secret>")
	}
	for _, v := range []string{s.Alice, s.Bob, s.Admin} {
		text = strings.ReplaceAll(text, tokenHash(v), "<sha256 of a token>")
	}
	return text
}

// startServer starts a fresh server of kind in ns, its files in a new
// directory under tmp, and waits until it answers.
func startServer(ctx context.Context, kind string, ns *netns, tmp string, bins binaries, s secrets) (*server, error) {
	return startServerWith(ctx, kind, ns, tmp, bins, s, "")
}

// startServerWith is startServer with extra top-level YAML appended to
// icebox's configuration (the MatrixRTC section of the get_token load).
func startServerWith(ctx context.Context, kind string, ns *netns, tmp string, bins binaries, s secrets, extra string) (*server, error) {
	dir, err := os.MkdirTemp(tmp, kind+"-")
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	switch kind {
	case "icebox":
		cfg := filepath.Join(dir, "icebox.yaml")
		if err := os.WriteFile(cfg, []byte(iceboxConfig(filepath.Join(dir, "state"), s)+extra), 0o600); err != nil {
			return nil, err
		}
		cmd = ns.command(context.Background(), bins.icebox, "serve", "--config", cfg)
		cmd.Env = serverEnv()
	case "coturn":
		cmd = ns.command(context.Background(), bins.turnserver, coturnArgs(dir, s)...)
	default:
		return nil, fmt.Errorf("unknown server %q", kind)
	}
	p, err := startProc(kind, cmd, filepath.Join(dir, kind+".out"))
	if err != nil {
		return nil, err
	}
	srv := &server{proc: p, kind: kind, ns: ns, http: nsHTTPClient(ns)}
	if err := srv.waitReady(ctx); err != nil {
		srv.stop()
		return nil, fmt.Errorf("%s: %w; output:\n%s", kind, err, p.logTail())
	}
	return srv, nil
}

// serverEnv is the environment without icebox's configuration variables, so
// the caller's shell cannot change what the benchmark configured.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ICEBOX_") || strings.HasPrefix(k, "MATRIX_") ||
			k == "TURN_SERVER_URL" || k == "TURN_USERNAME" || k == "TURN_PASSWORD" || k == "STUN_SERVER_URL" {
			continue
		}
		env = append(env, kv)
	}
	// BENCH_ICEBOX_GRO=on|off|auto sets turn.udp_gro (GRO measured on
	// against off: run the loads once each way, interleaved).
	if v := os.Getenv("BENCH_ICEBOX_GRO"); v != "" {
		env = append(env, "ICEBOX_TURN_UDP_GRO="+v)
	}
	return env
}

func nsHTTPClient(ns *netns) *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{DialContext: ns.dial, DisableKeepAlives: true},
	}
}

// waitReady polls until the server answers a STUN Binding request (and, for
// icebox, /readyz is 200).
func (s *server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.exited() {
			return fmt.Errorf("exited before it was ready (%v)", s.waitErr)
		}
		if s.stunAnswers(ctx) && (s.kind != "icebox" || s.httpStatus(ctx, "/readyz", "") == http.StatusOK) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s", readyTimeout)
		case <-tick.C:
		}
	}
}

// stunAnswers sends one STUN Binding request to turnAddr from inside the
// namespace and reports whether a success response came back.
func (s *server) stunAnswers(ctx context.Context) bool {
	c, err := s.ns.dial(ctx, "udp4", turnAddr)
	if err != nil {
		return false
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(req.Raw); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return false
	}
	var resp stun.Message
	resp.Raw = buf[:n]
	return resp.Decode() == nil && resp.Type == stun.BindingSuccess && resp.TransactionID == req.TransactionID
}

// httpStatus is the status of GET path on icebox's API (0 on error).
func (s *server) httpStatus(ctx context.Context, path, token string) int {
	code, _, _ := s.httpGet(ctx, path, token)
	return code
}

func (s *server) httpGet(ctx context.Context, path, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// sample is what /proc says about the server at one moment.
type sample struct {
	at    time.Time
	ticks int64
	udp   udpCounters
}

func (s *server) sample() (sample, error) {
	t, err := cpuTicks(s.pid)
	if err != nil {
		return sample{}, err
	}
	u, err := readUDP(s.pid)
	if err != nil {
		return sample{}, err
	}
	return sample{at: time.Now(), ticks: t, udp: u}, nil
}

var errServerExited = errors.New("the server exited during the measurement")

// alive returns errServerExited (with its output) if the server is gone.
func (s *server) alive() error {
	if s.exited() {
		return fmt.Errorf("%s: %w (%v); output:\n%s", s.kind, errServerExited, s.waitErr, s.logTail())
	}
	return nil
}
