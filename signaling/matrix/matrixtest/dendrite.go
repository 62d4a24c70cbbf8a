// Package matrixtest starts a real Matrix homeserver, Dendrite, for tests:
// StartDendrite runs it as a subprocess on a loopback port with its data in
// t.TempDir(), and Register and Login make users on it. StartFederation runs
// several that federate, each in a network namespace of its own (Linux).
//
// The binaries come from scripts/install-dendrite.sh. Without them a test
// fails under CI=true and is skipped elsewhere, saying what to run.
package matrixtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// startTimeout bounds start-up. Dendrite is ready in well under a second
	// when idle (it creates ~8 SQLite databases); the margin is for a CI
	// machine busy with -race builds of other packages.
	startTimeout = 30 * time.Second
	// stopTimeout is how long Dendrite gets after SIGTERM to flush JetStream
	// and close its databases before it is killed.
	stopTimeout = 10 * time.Second
	// startAttempts: the port is picked by binding :0 and closing it, so
	// another process can take it before Dendrite binds; then try again.
	startAttempts = 3
	// logTail is how much of Dendrite's log a failed test prints.
	logTail = 64 << 10
)

// Homeserver is a running Dendrite. Its methods may be called from several
// goroutines.
type Homeserver struct {
	url          string
	serverName   string
	sharedSecret string
	dir          string
	logPath      string
	client       *http.Client

	binary, cfgPath, addr string // for Restart: same binary, data and address
	place                 placement

	mu   sync.Mutex
	proc *process // the current run
}

// process is one run of the dendrite binary.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // Wait's result, set before exited is closed
	// stopped is set once the exit was asked for or already reported, so
	// that an exit nobody asked for can be flagged as a crash.
	stopped bool
}

// StartDendrite starts a Dendrite homeserver for the test, with server name
// "localhost", its client API on http://127.0.0.1:<free port>, federation off,
// rate limiting off and shared-secret registration on. It returns once
// /_matrix/client/versions answers. The server is stopped (SIGTERM, then
// SIGKILL after 10 s) when the test ends, and its log is printed if the test
// failed.
func StartDendrite(t testing.TB, opts ...Option) *Homeserver {
	t.Helper()
	return startDendrite(t, "localhost", placement{}, opts)
}

// placement is where a Dendrite runs and how the test reaches it. The zero
// value is StartDendrite's: the test's own network namespace, a free
// loopback port. StartFederation fills it in for a network namespace.
type placement struct {
	wrap []string // a command prefix, e.g. ip netns exec NAME
	addr string   // -http-bind-address; "" picks a free loopback port
	args []string // more flags (the TLS federation listener)
	env  []string // more environment (the test CA)
	url  string   // the client API as the test reaches it; "" is http://addr
}

func startDendrite(t testing.TB, serverName string, place placement, opts []Option) *Homeserver {
	t.Helper()
	bins := requireBinaries(t)
	var s settings
	for _, o := range opts {
		o(&s)
	}
	// A slot first: its release is registered before everything below, so
	// it runs after the server has stopped.
	acquireSlot(t)
	// Before any Cleanup below, so the directory is removed after the server
	// has stopped (cleanups run last-registered first).
	dir := t.TempDir()

	hs := &Homeserver{
		serverName:   serverName,
		place:        place,
		sharedSecret: randomHex(t, 32),
		dir:          dir,
		logPath:      filepath.Join(dir, "dendrite.log"),
		client:       &http.Client{Timeout: 30 * time.Second},
	}
	// Registered before the processes' own cleanups, so it runs after them
	// and prints the whole log.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("matrixtest: dendrite log (%s, last %d KiB):\n%s", hs.logPath, logTail>>10, hs.readLog(logTail))
		}
	})
	cfgPath, err := writeConfig(bins, dir, hs.serverName, hs.sharedSecret, s.overrides)
	if err != nil {
		t.Fatalf("matrixtest: %v", err)
	}

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		begin := time.Now()
		hs.binary, hs.cfgPath, hs.addr = bins.dendrite, cfgPath, place.addr
		lastErr = hs.start(t, bins.dendrite, cfgPath)
		if lastErr == nil {
			t.Logf("matrixtest: dendrite %s ready at %s in %v", DendriteVersion, hs.url, time.Since(begin).Round(time.Millisecond))
			return hs
		}
		if !errors.Is(lastErr, errPortTaken) {
			break
		}
	}
	t.Fatalf("matrixtest: %v", lastErr)
	return nil
}

var errPortTaken = errors.New("port taken before dendrite bound it")

// start runs Dendrite once on a fresh port and waits until it is ready. The
// process is stopped at the end of the test, or at once if it does not get ready.
func (hs *Homeserver) start(t testing.TB, binary, cfgPath string) error {
	addr := hs.addr
	if addr == "" {
		var err error
		if addr, err = freeLoopbackAddr(); err != nil {
			return err
		}
	}
	logFile, err := os.OpenFile(hs.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close() // the child has its own descriptor

	argv := append(slices.Clone(hs.place.wrap), binary, "-config", cfgPath, "-http-bind-address", addr)
	argv = append(argv, hs.place.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = hs.dir
	// A file, not a pipe: the child then holds no pipe of `go test`, which
	// would otherwise wait for it if the test binary died first.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(childEnv(), hs.place.env...)
	cmd.SysProcAttr = sysProcAttr()

	p := &process{cmd: cmd, exited: make(chan struct{})}
	hs.mu.Lock()
	hs.proc = p
	hs.mu.Unlock()
	started := make(chan error, 1)
	go func() {
		// On Linux the child gets SIGKILL when the thread that started it
		// exits (Pdeathsig), so that a test binary killed by -timeout leaves no
		// server behind. Keep that thread for as long as the child runs.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s: %w", binary, err)
	}
	t.Cleanup(func() {
		select {
		case <-p.exited:
			if !p.stopped {
				t.Errorf("matrixtest: dendrite (pid %d) exited during the test: %v", cmd.Process.Pid, p.err)
			}
		default:
			p.stop(t)
		}
	})

	hs.url = "http://" + addr
	if hs.place.url != "" {
		hs.url = hs.place.url
	}
	hs.addr = addr
	if err := hs.waitReady(p); err != nil {
		p.stop(t) // the error says how it ended
		if strings.Contains(hs.readLog(logTail), "address already in use") {
			return fmt.Errorf("%w: %v", errPortTaken, err)
		}
		return err
	}
	return nil
}

// waitReady polls /_matrix/client/versions until it answers 200, the process
// exits, or startTimeout passes.
func (hs *Homeserver) waitReady(p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if lastErr = hs.probe(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("dendrite exited before it was ready: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("dendrite not ready after %v: %v", startTimeout, lastErr)
		case <-tick.C:
		}
	}
}

func (hs *Homeserver) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hs.url+"/_matrix/client/versions", nil)
	if err != nil {
		return err
	}
	resp, err := hs.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v struct {
		Versions []string `json:"versions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return fmt.Errorf("GET /_matrix/client/versions: %d: %w", resp.StatusCode, err)
	}
	if resp.StatusCode != http.StatusOK || len(v.Versions) == 0 {
		return fmt.Errorf("GET /_matrix/client/versions: %d %v", resp.StatusCode, v.Versions)
	}
	return nil
}

// stop ends the process by its PID: SIGTERM, then SIGKILL after stopTimeout.
// It returns once the process has exited and may be called more than once.
func (p *process) stop(t testing.TB) {
	p.stopped = true
	select {
	case <-p.exited:
		return
	default:
	}
	pid := p.cmd.Process.Pid
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Logf("matrixtest: SIGTERM dendrite (pid %d): %v", pid, err)
	}
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
		t.Errorf("matrixtest: dendrite (pid %d) still running %v after SIGTERM; killing it", pid, stopTimeout)
		if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("matrixtest: kill dendrite (pid %d): %v", pid, err)
		}
		<-p.exited
	}
}

// readLog returns the last n bytes of the server's log.
func (hs *Homeserver) readLog(n int64) string {
	f, err := os.Open(hs.logPath)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// URL is the client-server API's base URL, http://127.0.0.1:PORT: for a
// homeserver of StartFederation, a forwarder into its network namespace.
func (hs *Homeserver) URL() string { return hs.url }

// ServerName is the homeserver's name, the part of user IDs after the colon.
func (hs *Homeserver) ServerName() string { return hs.serverName }

// LogPath is the file that has Dendrite's output.
func (hs *Homeserver) LogPath() string { return hs.logPath }

// freeLoopbackAddr returns 127.0.0.1:PORT for a port that was free just now.
// Dendrite takes an address, not a listener, so the port has to be chosen
// here; StartDendrite retries if someone else takes it first.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// childEnv is the test's environment without PPROFLISTEN, which would make
// Dendrite open a pprof listener.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PPROFLISTEN=") {
			env = append(env, kv)
		}
	}
	return env
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("matrixtest: %v", err)
	}
	return hex.EncodeToString(b)
}

// Stop stops the homeserver (SIGTERM) and waits for it to exit, as an outage
// would; Restart brings it back on the same address and data.
func (hs *Homeserver) Stop(t testing.TB) {
	t.Helper()
	hs.mu.Lock()
	p := hs.proc
	hs.mu.Unlock()
	p.stop(t)
}

// Restart starts the homeserver again after Stop, on the same address and
// with the same data, and waits until it is ready.
func (hs *Homeserver) Restart(t testing.TB) {
	t.Helper()
	begin := time.Now()
	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		if err = hs.start(t, hs.binary, hs.cfgPath); err == nil || !errors.Is(err, errPortTaken) {
			break
		}
	}
	if err != nil {
		t.Fatalf("matrixtest: restart: %v", err)
	}
	t.Logf("matrixtest: dendrite restarted at %s in %v", hs.url, time.Since(begin).Round(time.Millisecond))
}

// maxDendrites bounds the Dendrites that run at once on the machine, over
// every test process (go test runs packages in parallel). Each is idle most
// of the time, but on a 2-core machine many starting and syncing at once
// starve Dendrite's SQLite writers past their 10 s busy timeout, and
// Dendrite v0.13.8 then panics ("cannot start a transaction within a
// transaction"). Tests wait for a slot instead.
const maxDendrites = 4

// slotWait bounds the wait for a slot; a test holds one for well under a
// minute.
const slotWait = 5 * time.Minute

// acquireSlot takes one of maxDendrites lock files in the temp directory
// (flock, released by the kernel if the process dies) until the test ends.
func acquireSlot(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(slotWait)
	for {
		for i := range maxDendrites {
			path := filepath.Join(os.TempDir(), fmt.Sprintf("icebox-matrixtest-dendrite-%d.lock", i))
			f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
			if err != nil {
				t.Fatalf("matrixtest: slot: %v", err)
			}
			if err := tryLock(f); err == nil {
				t.Cleanup(func() { _ = f.Close() }) // closing releases the lock
				return
			}
			_ = f.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("matrixtest: no Dendrite slot free within %v (%d run at once)", slotWait, maxDendrites)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
