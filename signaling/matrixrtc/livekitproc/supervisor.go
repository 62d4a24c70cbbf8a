package livekitproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"
)

// SupervisorConfig says which livekit-server to run and how to keep it up.
type SupervisorConfig struct {
	Binary     string // the executable (FindBinary)
	ConfigPath string // its config file (WriteConfig)
	// HealthURL is LiveKit's health check, GET http://<bind>:<port>/,
	// which answers 200 once the node is serving.
	HealthURL string
	// Redact are strings never to appear in the log (the API secret, TURN
	// secrets): the child's lines are scrubbed of them.
	Redact []string

	// StartTimeout bounds start to ready; a child not ready by then is
	// killed and started again. Default: 30s (it is ready in about 0.1 s
	// when idle; the margin is for a busy machine).
	StartTimeout time.Duration
	// StopTimeout bounds a stop: SIGTERM, after half of it a second SIGTERM
	// (LiveKit then stops waiting for participants to leave), after all of
	// it SIGKILL. Default: 10s.
	StopTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a restart; it
	// doubles after each failure. Default: 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// HealthyAfter is how long a child must run before its exit counts as
	// a fresh failure again (the backoff restarts from MinBackoff).
	// Default: 1m.
	HealthyAfter time.Duration
	// ProbeInterval is how often a running child's health is checked for
	// Ready. Default: 2s.
	ProbeInterval time.Duration
	// OnStart is called before each start of the child: node rewrites
	// the config file there (TURN secrets may have rotated) and the webhook
	// receiver forgets every room (a new child has none). An error counts
	// as a failed start. nil = nothing.
	OnStart func() error

	Registerer prometheus.Registerer // nil = metrics not registered
	Logger     zerolog.Logger
}

// Supervisor runs livekit-server as a child and keeps it running.
type Supervisor struct {
	cfg    SupervisorConfig
	log    zerolog.Logger
	client *http.Client

	restarts     prometheus.Counter
	restartCount atomic.Int64 // the counter's value, for State

	ready   atomic.Bool  // the child answered its health check last time
	running atomic.Bool  // a child process exists
	pid     atomic.Int64 // the current child's, 0 = none

	restart   chan struct{} // Restart's requests, one pending at most
	closed    chan struct{}
	closeOnce sync.Once
	started   atomic.Bool    // Run was called
	done      chan struct{}  // closed when Run returns
	readers   sync.WaitGroup // the goroutines logging the child's output
}

// State is the child's state, for readiness and the status page.
type State struct {
	Running  bool // a livekit-server process exists
	Ready    bool // and it answers its health check
	PID      int  // 0 = none
	Restarts int  // restarts after a failure since icebox started
}

// NewSupervisor checks cfg; nothing starts before Run.
func NewSupervisor(cfg SupervisorConfig) (*Supervisor, error) {
	if cfg.Binary == "" || cfg.ConfigPath == "" || cfg.HealthURL == "" {
		return nil, errors.New("livekitproc: Binary, ConfigPath and HealthURL are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.StartTimeout, 30*time.Second)
	def(&cfg.StopTimeout, 10*time.Second)
	def(&cfg.MinBackoff, 500*time.Millisecond)
	def(&cfg.MaxBackoff, 30*time.Second)
	def(&cfg.HealthyAfter, time.Minute)
	def(&cfg.ProbeInterval, 2*time.Second)
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = cfg.MinBackoff
	}
	s := &Supervisor{
		cfg: cfg,
		log: cfg.Logger.With().Str("component", "livekit").Logger(),
		// One probe must not outlast the interval between probes; no
		// connection is kept between probes (nor outlives Run).
		client:  &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		restart: make(chan struct{}, 1),
		closed:  make(chan struct{}),
		done:    make(chan struct{}),
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry() // not exposed
	}
	s.restarts = promauto.With(reg).NewCounter(prometheus.CounterOpts{
		Name: "icebox_livekit_restarts_total",
		Help: "Restarts of the managed livekit-server after it exited or failed to become ready.",
	})
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_livekit_up",
		Help: "1 while the managed livekit-server runs and answers its health check, else 0.",
	}, func() float64 {
		if s.ready.Load() {
			return 1
		}
		return 0
	})
	return s, nil
}

// Ready is nil while the child runs and answers its health check (node's
// /readyz).
func (s *Supervisor) Ready() error {
	switch {
	case s.ready.Load():
		return nil
	case s.running.Load():
		return errStarting
	}
	return errNotReady
}

// State reports the child's state.
func (s *Supervisor) State() State {
	return State{Running: s.running.Load(), Ready: s.ready.Load(), PID: int(s.pid.Load()), Restarts: int(s.restartCount.Load())}
}

// Run starts the child and keeps it running until ctx is done or Close is
// called, then stops it and returns nil once it has exited. It runs once;
// a second call returns an error.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("livekitproc: Run called twice")
	}
	defer close(s.done)
	select {
	case <-s.closed: // Close came first: start nothing
		return nil
	default:
	}
	defer s.readers.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	backoff := s.cfg.MinBackoff
	for {
		started := time.Now()
		err := s.runChild(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errRestart) {
			s.log.Info().Msg("livekit-server restarted on request")
			continue
		}
		if time.Since(started) >= s.cfg.HealthyAfter {
			backoff = s.cfg.MinBackoff // it ran well for a while: a fresh failure
		}
		s.restarts.Inc()
		s.restartCount.Add(1)
		s.log.Warn().Err(err).Dur("restart_in", backoff).Msg("livekit-server stopped; restarting it")
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, s.cfg.MaxBackoff)
	}
}

// runChild runs one child until it exits (an error saying how) or ctx is
// done (the child is stopped; nil).
func (s *Supervisor) runChild(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	if s.cfg.OnStart != nil {
		if err := s.cfg.OnStart(); err != nil {
			return err
		}
	}
	p, err := s.start()
	if err != nil {
		return err
	}
	s.running.Store(true)
	s.pid.Store(int64(p.cmd.Process.Pid))
	defer func() {
		s.ready.Store(false)
		s.running.Store(false)
		s.pid.Store(0)
	}()
	started := time.Now()
	if err := s.waitReady(ctx, p); err != nil {
		s.stop(p)
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.ready.Store(true)
	s.log.Info().Int("pid", p.cmd.Process.Pid).Dur("start_time", time.Since(started)).Msg("livekit-server ready")
	tick := time.NewTicker(s.cfg.ProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.stop(p)
			return nil
		case <-p.exited:
			return fmt.Errorf("livekitproc: livekit-server (pid %d) exited: %v", p.cmd.Process.Pid, p.err)
		case <-s.restart:
			s.stop(p)
			return errRestart
		case <-tick.C:
			err := s.probe(ctx)
			if was := s.ready.Swap(err == nil); was != (err == nil) {
				s.log.Warn().AnErr("probe", err).Bool("ready", err == nil).Msg("livekit-server health changed")
			}
		}
	}
}

// process is one run of the child.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once it has exited
	err    error         // Wait's, set before exited is closed
}

// start starts the child with its output going to the log.
func (s *Supervisor) start() (*process, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("livekitproc: start: %w", err)
	}
	cmd := exec.Command(s.cfg.Binary, "--config", s.cfg.ConfigPath)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr()
	p := &process{cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		// Pdeathsig fires when the thread that started the child exits:
		// keep this goroutine on its thread until the child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.exited)
	}()
	err = <-started
	w.Close() // the child has its own copy
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("livekitproc: start %s: %w", s.cfg.Binary, err)
	}
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		defer r.Close()
		s.logOutput(r)
	}()
	return p, nil
}

// childEnv is the child's environment: enough to run, and none of the
// LIVEKIT_*, NODE_IP, UDP_PORT or REDIS_* variables livekit-server reads,
// so the config file alone decides.
func childEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// waitReady polls the health check until it answers 200, the child exits,
// StartTimeout passes or ctx is done.
func (s *Supervisor) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.probe(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("livekitproc: livekit-server exited before it was ready: %v", p.err)
		case <-ctx.Done():
			return fmt.Errorf("livekitproc: livekit-server not ready after %s: %v", s.cfg.StartTimeout, err)
		case <-tick.C:
		}
	}
}

func (s *Supervisor) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.HealthURL, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check: %s", resp.Status)
	}
	return nil
}

// stop ends the child and returns once it has exited: SIGTERM; a second
// SIGTERM after half of StopTimeout; SIGKILL after StopTimeout. LiveKit's
// first SIGTERM waits for every participant to leave (idle, it exits in
// about 2 s), and v1.13.5 given it within a second of starting hangs in
// shutdown until the second, which stops it at once.
func (s *Supervisor) stop(p *process) {
	proc := p.cmd.Process
	signal := func(name string, f func(*os.Process) error) {
		if err := f(proc); err != nil && !errors.Is(err, os.ErrProcessDone) {
			s.log.Debug().Err(err).Int("pid", proc.Pid).Str("signal", name).Msg("signalling livekit-server")
		}
	}
	select {
	case <-p.exited:
		return
	default:
	}
	signal("SIGTERM", terminate)
	half := time.NewTimer(s.cfg.StopTimeout / 2)
	defer half.Stop()
	select {
	case <-p.exited:
		return
	case <-half.C:
	}
	s.log.Info().Int("pid", proc.Pid).Msg("livekit-server still waiting for participants; forcing it to stop")
	signal("SIGTERM", terminate)
	rest := time.NewTimer(s.cfg.StopTimeout - s.cfg.StopTimeout/2)
	defer rest.Stop()
	select {
	case <-p.exited:
		return
	case <-rest.C:
	}
	s.log.Warn().Int("pid", proc.Pid).Dur("timeout", s.cfg.StopTimeout).Msg("livekit-server did not stop; killing it")
	signal("SIGKILL", kill)
	<-p.exited
}

// Restart stops the running child and starts it again at once (OnStart
// rewrites its config first), e.g. after a TURN secret rotated. It does
// not wait and does not count as a failure; a child still starting takes
// the request once it is ready.
func (s *Supervisor) Restart() {
	select {
	case s.restart <- struct{}{}:
	default: // one is pending already
	}
}

// Close stops the child (as ctx's end does) and waits until Run has
// returned. It is idempotent; before Run it only prevents a later start.
func (s *Supervisor) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	// Either Run saw closed (and returns at once) or started is set here.
	if s.started.Load() {
		<-s.done
	}
	return nil
}
