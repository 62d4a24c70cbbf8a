package main

// End-to-end test helpers. Most tests start icebox in-process (startIcebox:
// a node on loopback port 0, nodetest); tests of the process itself — signals,
// exit codes, systemd, kill -9, the static binary, network namespaces — run
// the binary that TestMain builds once, on loopback ports picked at run time.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/icebox-voip/icebox/node/nodetest"
)

// The relay port range of every test config. Ports handed out for
// listeners and peers stay outside it: icebox refuses a range that contains a
// listen port, and a peer inside it would be judged as a relay address.
const (
	relayMinPort = 40000
	relayMaxPort = 40999
)

// Timeouts of the process life cycle.
const (
	readyTimeout = 15 * time.Second // a cold start binds a few sockets and opens bbolt
	stopTimeout  = 10 * time.Second // serve drains HTTP for up to 5s on SIGTERM
	exitTimeout  = 10 * time.Second // a command that is expected to fail fast
)

// iceboxBin is the binary TestMain built.
var iceboxBin string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "icebox-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	iceboxBin = filepath.Join(dir, "icebox")
	build := exec.Command(goTool(), buildArgs()...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build icebox:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		// As goleak.VerifyTestMain, which would exit before the deferred
		// RemoveAll: only a passing run is checked. Nothing is ignored:
		// every test stops its in-process nodes (nodetest), its processes,
		// its Matrix and TURN clients and its Dendrite, and the keep-alive
		// connections of httpClient end when the servers they reach stop
		// (goleak.Find retries while they wind down).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: goroutines still running after the tests:", err)
			return 1
		}
	}
	return code
}

// buildArgs builds the binary as this test binary was built: with its build
// tags, and with the race detector under `go test -race`, so a data race in
// the server under real traffic makes it exit 66 and fails the test that
// stops it.
func buildArgs() []string {
	args := []string{"build", "-o", iceboxBin}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "-tags" && s.Value != "":
				args = append(args, "-tags", s.Value)
			case s.Key == "-race" && s.Value == "true":
				args = append(args, "-race")
			}
		}
	}
	return append(args, "github.com/icebox-voip/icebox/cmd/icebox")
}

var (
	staticOnce sync.Once
	staticPath string
	staticErr  error
)

// staticBin builds icebox as it ships (make build): CGO_ENABLED=0, pure-Go
// Olm and SQLite; once per test run, beside iceboxBin.
func staticBin(t *testing.T) string {
	t.Helper()
	staticOnce.Do(func() {
		staticPath = iceboxBin + "-static"
		build := exec.Command(goTool(), "build", "-tags", "goolm", "-trimpath", "-o", staticPath, "github.com/icebox-voip/icebox/cmd/icebox")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			staticErr = fmt.Errorf("CGO_ENABLED=0 go build -tags goolm: %v\n%s", err, out)
		}
	})
	if staticErr != nil {
		t.Fatal(staticErr)
	}
	return staticPath
}

// goTool is the go command that builds the binaries under test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// iceboxEnv is the environment for icebox processes: this one's, without
// the variables icebox reads as configuration, so a developer's shell cannot
// change what a test configured.
func iceboxEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "ICEBOX_"),
			k == "TURN_SERVER_URL", k == "TURN_USERNAME", k == "TURN_PASSWORD", k == "STUN_SERVER_URL":
			continue
		}
		env = append(env, kv)
	}
	return env
}

// syncBuffer is a bytes.Buffer that a process's output goroutine and the
// test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{} // never hand out a port twice in one run
)

func inRelayRange(port int) bool { return port >= relayMinPort && port <= relayMaxPort }

// freePort returns a loopback port that was free for both UDP and TCP a
// moment ago, outside the relay range and not handed out before. Someone may
// take it before icebox binds it; startIcebox retries once for that.
func freePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)
}

// freePorts returns the first of n consecutive loopback ports, each free
// for UDP and TCP a moment ago, outside the relay range and none handed out
// before. turnutils_peer binds its port and the next one, both with
// SO_REUSEPORT: given a port next to icebox's, it silently shares icebox's
// TURN port and echoes clients' requests back to them.
func freePorts(t testing.TB, n int) int {
	t.Helper()
	for range 200 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("freePort: %v", err)
		}
		base := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		if base+n-1 > 65535 || !portsFree(base, n) {
			continue
		}
		portsMu.Lock()
		taken := false
		for p := base; p < base+n; p++ {
			taken = taken || portsGiven[p] || inRelayRange(p)
		}
		if !taken {
			for p := base; p < base+n; p++ {
				portsGiven[p] = true
			}
		}
		portsMu.Unlock()
		if !taken {
			return base
		}
	}
	t.Fatalf("freePort: no %d consecutive free ports found", n)
	return 0
}

// portsFree reports whether ports base..base+n-1 can be bound on 127.0.0.1
// for UDP and for TCP right now.
func portsFree(base, n int) bool {
	for p := base; p < base+n; p++ {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		pc, err := net.ListenPacket("udp4", addr)
		if err != nil {
			return false
		}
		l, err := net.Listen("tcp4", addr)
		pc.Close()
		if err != nil {
			return false
		}
		l.Close()
	}
	return true
}

// listenPeer opens the UDP socket of a plain peer on 127.0.0.1, outside the
// relay range.
func listenPeer(t testing.TB) net.PacketConn {
	t.Helper()
	for range 200 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen peer: %v", err)
		}
		if inRelayRange(pc.LocalAddr().(*net.UDPAddr).Port) {
			pc.Close()
			continue
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	t.Fatal("listen peer: every port was in the relay range")
	return nil
}

// Placeholders that startIcebox fills in with the ports it picked.
const (
	phTURNPort = "{{TURN_PORT}}"
	phTLSPort  = "{{TLS_PORT}}"
	phHTTPPort = "{{HTTP_PORT}}"
)

// cfgOpts varies the test configuration.
type cfgOpts struct {
	secret  string // inline compat secret; "" = let icebox generate one into state_dir
	tlsCert string // with tlsKey: also listen for TURN over TLS
	tlsKey  string
}

// testConfig returns a serve configuration for loopback, with placeholders
// for the ports.
func testConfig(stateDir string, o cfgOpts) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state_dir: %q\n", stateDir)
	// Tests stop icebox with SIGTERM, which drains open allocations first:
	// a short drain keeps a test's leftovers from holding it up.
	b.WriteString("drain_timeout: 2s\n")
	b.WriteString(`log:
  level: info
  format: json
turn:
  realm: e2e.icebox.test
  listen:
    udp: ["127.0.0.1:` + phTURNPort + `"]
    tcp: ["127.0.0.1:` + phTURNPort + `"]
`)
	if o.tlsCert != "" {
		fmt.Fprintf(&b, "    tls: [\"127.0.0.1:%s\"]\n  tls:\n    cert_file: %q\n    key_file: %q\n", phTLSPort, o.tlsCert, o.tlsKey)
	}
	fmt.Fprintf(&b, `  udp_sockets: 2
  relay:
    bind_ip: 127.0.0.1
    min_port: %d
    max_port: %d
  allow_loopback_peers: true
  quotas:
    per_user: 50
    per_call: 50
    total: 1000
`, relayMinPort, relayMaxPort)
	if o.secret != "" {
		fmt.Fprintf(&b, "credentials:\n  secrets:\n    - kid: k1\n      secret: %q\n      compat: true\n", o.secret)
	}
	b.WriteString("http:\n  listen: \"127.0.0.1:" + phHTTPPort + "\"\n")
	return b.String()
}

// process is a child process started by a test, with its output.
type process struct {
	*exec.Cmd
	out  *syncBuffer   // stdout and stderr
	done chan struct{} // closed when the process has exited
	// waitErr is Wait's result; read it only after done is closed.
	waitErr error
}

// startProcess starts name with args and the sanitised environment. At
// cleanup a process that still runs is killed, by its PID, and reaped.
func startProcess(t *testing.T, name string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, nil, name, args...)
}

// startProcessEnv is startProcess with extra "KEY=value" variables.
func startProcessEnv(t *testing.T, env []string, name string, args ...string) *process {
	t.Helper()
	p := &process{Cmd: exec.Command(name, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.Env = append(iceboxEnv(), env...)
	p.Stdout, p.Stderr = p.out, p.out
	if err := p.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill ends the process with SIGKILL, if it still runs, and waits for it.
func (p *process) kill() {
	if !p.exited() {
		_ = p.Process.Kill() // it may exit meanwhile
	}
	<-p.done
}

// openSockets lists the sockets among pid's open files ("socket:[inode]").
// A process that has exited has none.
func openSockets(pid int) []string {
	fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			out = append(out, l)
		}
	}
	return out
}

// instance is a running `icebox serve`: a process, or a node in-process.
type instance struct {
	*process                   // nil for a node in-process
	node        *nodetest.Node // nil for a process
	cfgPath     string
	turnPort    int // UDP, and TCP for a process
	turnTCPPort int
	tlsPort     int
	httpPort    int
	stopOnce    sync.Once
}

func (in *instance) turnAddr() string    { return loopback(in.turnPort) }
func (in *instance) turnTCPAddr() string { return loopback(in.turnTCPPort) }
func (in *instance) tlsAddr() string     { return loopback(in.tlsPort) }

func (in *instance) httpURL(path string) string { return "http://" + loopback(in.httpPort) + path }

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

var errPortTaken = errors.New("a port was taken before icebox bound it")

// startIceboxProcess writes cfgYAML (with its port placeholders filled in)
// to a file, runs `icebox serve --config` on it, with the extra environment
// variables env ("KEY=value"), and waits for /readyz. At cleanup it stops the
// process with SIGTERM and requires exit code 0; if the test failed it logs
// the process's stderr.
func startIceboxProcess(t *testing.T, cfgYAML string, env ...string) *instance {
	t.Helper()
	return startIceboxBin(t, iceboxBin, cfgYAML, env...)
}

// startIceboxBin is startIcebox with another icebox binary (staticBin).
func startIceboxBin(t *testing.T, bin, cfgYAML string, env ...string) *instance {
	t.Helper()
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		in, err := tryStartIcebox(t, bin, dir, cfgYAML, env)
		if err == nil {
			return in
		}
		if attempt == 2 || !errors.Is(err, errPortTaken) {
			t.Fatalf("start icebox: %v", err)
		}
		t.Logf("start icebox: %v; retrying with other ports", err)
	}
}

func tryStartIcebox(t *testing.T, bin, dir, cfgYAML string, env []string) (*instance, error) {
	t.Helper()
	in := &instance{
		cfgPath:  filepath.Join(dir, "icebox.yaml"),
		turnPort: freePort(t),
		tlsPort:  freePort(t),
		httpPort: freePort(t),
	}
	in.turnTCPPort = in.turnPort
	cfg := strings.NewReplacer(
		phTURNPort, strconv.Itoa(in.turnPort),
		phTLSPort, strconv.Itoa(in.tlsPort),
		phHTTPPort, strconv.Itoa(in.httpPort),
	).Replace(cfgYAML)
	if err := os.WriteFile(in.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	in.process = startProcessEnv(t, env, bin, "serve", "--config", in.cfgPath)

	ready := waitFor(readyTimeout, func() bool {
		return in.exited() || httpStatus(in.httpURL("/readyz")) == http.StatusOK
	})
	switch {
	case in.exited():
		out := in.out.String()
		if strings.Contains(out, "address already in use") {
			return nil, fmt.Errorf("%w (%v):\n%s", errPortTaken, in.waitErr, out)
		}
		return nil, fmt.Errorf("icebox serve exited before it was ready (%v); stderr:\n%s", in.waitErr, out)
	case !ready:
		in.kill()
		return nil, fmt.Errorf("/readyz not 200 within %s; stderr:\n%s", readyTimeout, in.out.String())
	}
	// Registered after startProcess's kill, so it runs before it.
	t.Cleanup(func() {
		in.stop(t)
		if t.Failed() {
			t.Logf("icebox serve (config %s) stderr:\n%s", in.cfgPath, in.out.String())
		}
	})
	return in, nil
}

// stop sends SIGTERM and requires a clean exit (code 0) within stopTimeout;
// after that the process is killed and the test fails. A node in-process is
// stopped as SIGTERM would and must return no error. It runs once.
func (in *instance) stop(t *testing.T) {
	t.Helper()
	in.stopOnce.Do(func() {
		if in.node != nil {
			if err := in.node.Stop(); err != nil {
				t.Errorf("icebox node: stop: %v", err)
			}
			return
		}
		if err := in.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("SIGTERM icebox (pid %d): %v", in.Process.Pid, err)
		}
		select {
		case <-in.done:
		case <-time.After(stopTimeout):
			in.kill()
			t.Errorf("icebox (pid %d) did not exit within %s of SIGTERM; killed", in.Process.Pid, stopTimeout)
			return
		}
		if code := in.ProcessState.ExitCode(); code != 0 {
			t.Errorf("icebox serve exited with %d after SIGTERM (%v), want 0", code, in.waitErr)
		}
	})
}

// runIcebox runs a short icebox command and returns its output and exit
// code; it fails the test if the command does not exit within timeout.
func runIcebox(t *testing.T, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, iceboxBin, args...)
	cmd.Env = iceboxEnv()
	cmd.Dir = t.TempDir() // `config defaults` names ./data; keep anything relative out of the tree
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("icebox %s did not exit within %s; stderr:\n%s", strings.Join(args, " "), timeout, errOut.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("icebox %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// credsOut is what `icebox creds` prints.
type credsOut struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

// mintCreds runs `icebox creds --config cfgPath --user user`.
func mintCreds(t *testing.T, cfgPath, user string) credsOut {
	t.Helper()
	stdout, stderr, code := runIcebox(t, exitTimeout, "creds", "--config", cfgPath, "--user", user)
	if code != 0 {
		t.Fatalf("icebox creds: exit %d, stderr:\n%s", code, stderr)
	}
	var c credsOut
	if err := json.Unmarshal([]byte(stdout), &c); err != nil {
		t.Fatalf("icebox creds printed %q: %v", stdout, err)
	}
	if c.Username == "" || c.Password == "" || c.TTL <= 0 {
		t.Fatalf("icebox creds printed %+v, want a username, a password and a ttl", c)
	}
	return c
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// httpStatus returns the status of GET url, or 0 if the request failed.
func httpStatus(url string) int {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// httpGet returns the status and body of GET url, sent with the bearer
// token if it is not "".
func httpGet(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, body
}

// metrics returns the samples of /metrics, keyed by `name{labels}` as
// printed (`name` alone for a series without labels).
func (in *instance) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	code, body := httpGet(t, in.httpURL("/metrics"), "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", code)
	}
	m, err := metricSamples(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return m
}

// metricSamples parses a text exposition (what GET /metrics serves) with
// expfmt's parser into its samples, keyed by `name{labels}` as the text
// prints them (`name` alone for a series without labels): a histogram's
// or summary's by its _bucket (quantile), _sum and _count series. The
// tests read /metrics over HTTP, from an in-process node or from a
// process alike, so they read what a scraper reads.
func metricSamples(r io.Reader) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := func(suffix string, extra ...string) string {
				return sampleKey(name+suffix, m.GetLabel(), extra...)
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					out[key("_bucket", "le", formatFloat(b.GetUpperBound()))] = float64(b.GetCumulativeCount())
				}
				out[key("_sum")], out[key("_count")] = h.GetSampleSum(), float64(h.GetSampleCount())
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					out[key("", "quantile", formatFloat(q.GetQuantile()))] = q.GetValue()
				}
				out[key("_sum")], out[key("_count")] = s.GetSampleSum(), float64(s.GetSampleCount())
			default:
				out[key("")] = m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}

// sampleKey prints a series as the text exposition does: name{l="v",…},
// with extra label name/value pairs (le, quantile) last.
func sampleKey(name string, labels []*dto.LabelPair, extra ...string) string {
	var pairs []string
	for _, l := range labels {
		pairs = append(pairs, l.GetName(), l.GetValue())
	}
	pairs = append(pairs, extra...)
	if len(pairs) == 0 {
		return name
	}
	esc := strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
	var b strings.Builder
	b.WriteString(name)
	for i := 0; i < len(pairs); i += 2 {
		sep := ","
		if i == 0 {
			sep = "{"
		}
		fmt.Fprintf(&b, `%s%s="%s"`, sep, pairs[i], esc.Replace(pairs[i+1]))
	}
	b.WriteString("}")
	return b.String()
}

func formatFloat(v float64) string {
	if math.IsInf(v, +1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// metricsLag bounds how long a counter may trail the traffic it counts: the
// relay counts a packet after the kernel took it, so a peer can see the
// packet before /metrics does.
const metricsLag = 5 * time.Second

// waitMetrics polls /metrics until cond holds or metricsLag passes, and
// returns the last samples read.
func (in *instance) waitMetrics(t *testing.T, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	var m map[string]float64
	waitFor(metricsLag, func() bool {
		m = in.metrics(t)
		return cond(m)
	})
	return m
}

// sum adds the samples of every series of metric name.
func sum(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

const (
	mToPeer      = `icebox_turn_relayed_packets_total{direction="to_peer"}`
	mFromPeer    = `icebox_turn_relayed_packets_total{direction="from_peer"}`
	mAllocations = "icebox_turn_allocations_total"
)

// writeCert writes a self-signed certificate for the given DNS names and IPs
// (valid from notBefore to notAfter) and its key; it returns their paths and
// the certificate's path as a CA file.
func writeCert(t *testing.T, dir string, dns []string, ips []net.IP, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "icebox check test"},
		DNSNames:              dns,
		IPAddresses:           ips,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and
// localhost, valid for a day, and its key (mode 0600) into dir and returns
// their paths and a pool that trusts it.
func writeTestCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile = writeCert(t, dir, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)},
		time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	pemData, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		t.Fatal("test certificate not parsed")
	}
	return certFile, keyFile, pool
}

// turnAlloc is an allocation made with pion's TURN client.
type turnAlloc struct {
	client *turn.Client
	relay  net.PacketConn // the relayed transport address, seen from the client
}

// quietLogger keeps pion's client logs to errors.
func quietLogger() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelError
	return f
}

// allocate connects to icebox over transport ("udp", "tcp" or "tls") and
// allocates a UDP relay with the given credentials. Everything is closed at
// cleanup.
func allocate(t *testing.T, transport, serverAddr string, tlsConf *tls.Config, user, pass string) (*turnAlloc, error) {
	t.Helper()
	var conn net.PacketConn
	switch transport {
	case "udp":
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = pc
	case "tcp":
		c, err := net.DialTimeout("tcp4", serverAddr, 5*time.Second)
		if err != nil {
			return nil, fmt.Errorf("dial tcp %s: %w", serverAddr, err)
		}
		conn = turn.NewSTUNConn(c)
	case "tls":
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp4", serverAddr, tlsConf)
		if err != nil {
			return nil, fmt.Errorf("dial tls %s: %w", serverAddr, err)
		}
		conn = turn.NewSTUNConn(c)
	default:
		t.Fatalf("allocate: unknown transport %q", transport)
	}
	t.Cleanup(func() { conn.Close() })

	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: serverAddr,
		TURNServerAddr: serverAddr,
		Conn:           conn,
		Username:       user,
		Password:       pass,
		LoggerFactory:  quietLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("turn.NewClient: %w", err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		return nil, fmt.Errorf("turn client listen: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay, err := client.AllocateWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("allocate over %s: %w", transport, err)
	}
	// Registered last, so it runs first: deallocate before the client goes.
	t.Cleanup(func() { relay.Close() })
	return &turnAlloc{client: client, relay: relay}, nil
}

// relayRoundTrip sends a datagram from the client through its relay to
// peer, and one from peer back through the relay to the client, checking
// contents and addresses. UDP may drop a datagram (the permission is created
// while the first one is on its way), so each direction is retried until a
// deadline.
func relayRoundTrip(t *testing.T, a *turnAlloc, peer net.PacketConn) {
	t.Helper()
	relayAddr := a.relay.LocalAddr().(*net.UDPAddr)
	peerAddr := peer.LocalAddr().(*net.UDPAddr)
	if !relayAddr.IP.Equal(net.IPv4(127, 0, 0, 1)) || !inRelayRange(relayAddr.Port) {
		t.Errorf("relayed address %s, want 127.0.0.1:%d-%d", relayAddr, relayMinPort, relayMaxPort)
	}

	toPeer := []byte("client->peer via " + relayAddr.String())
	if !exchange(func() error {
		_, err := a.relay.WriteTo(toPeer, peerAddr)
		return err
	}, peer, toPeer, relayAddr) {
		t.Fatalf("peer %s got nothing from the client through relay %s", peerAddr, relayAddr)
	}

	fromPeer := []byte("peer->client via " + relayAddr.String())
	if !exchange(func() error {
		_, err := peer.WriteTo(fromPeer, relayAddr)
		return err
	}, a.relay, fromPeer, peerAddr) {
		t.Fatalf("client got nothing from peer %s through relay %s", peerAddr, relayAddr)
	}
}

// exchange calls send, then reads from recv until it gets want from wantFrom;
// it repeats for up to 10s.
func exchange(send func() error, recv net.PacketConn, want []byte, wantFrom *net.UDPAddr) bool {
	buf := make([]byte, 1500)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := send(); err != nil {
			return false
		}
		_ = recv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, from, err := recv.ReadFrom(buf)
			if err != nil {
				break // timed out: send again
			}
			u, ok := from.(*net.UDPAddr)
			if ok && u.IP.Equal(wantFrom.IP) && u.Port == wantFrom.Port && bytes.Equal(buf[:n], want) {
				_ = recv.SetReadDeadline(time.Time{})
				return true
			}
		}
	}
	return false
}
