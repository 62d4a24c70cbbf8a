package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestClusterBench measures whole calls through the API (issue 18's
// benchmark), for one node on bbolt, one node on PostgreSQL and three
// nodes on PostgreSQL, each with 10, 100 and 1000 calls at once:
//
//   - calls/s: calls completed (initiate → answer → hang up) per second of
//     the measuring window;
//   - initiate → callee event, p50 and p99: from just before the caller's
//     POST /calls/initiate is sent to the arrival of the CallInvite on the
//     callee's WebSocket (read by its own goroutine, stamped on arrival),
//     of every call started in the window;
//   - errors: calls that failed (a refused request, an event not there
//     within benchCallTimeout); they are counted, the call given up and
//     the next one started.
//
// Each of the N concurrent calls is a pair of users of its own (callerI,
// calleeI, one conversation, JWT bearer tokens) calling back to back: the
// caller initiates and hangs up over REST (a keep-alive connection), the
// callee hears the invite and answers over its WebSocket (the "answer"
// command). On three nodes the pair is spread: the caller's requests go
// to node i mod 3, the callee's WebSocket is on node i+1 mod 3, so every
// invite and answer crosses nodes through the database's feed. Each cell
// starts fresh nodes (and a fresh database) and measures for a window
// (ICEBOX_CLUSTER_BENCH_SECONDS, default 10); a call that starts in the
// window finishes after it, only calls completed within it count.
//
// A measurement, not a check: opt in with ICEBOX_CLUSTER_BENCH=1 (`make
// bench` runs it: bench/cluster.sh; ICEBOX_CLUSTER_BENCH_CONC=10,100 picks
// the concurrencies). It writes a markdown report to
// ICEBOX_CLUSTER_BENCH_OUT if set, and fails only when a cell completes no
// call or more than 1 % of its calls fail. PostgreSQL runs durable
// (pgtest.Durable: fsync, synchronous_commit and full_page_writes on, as in
// production), so that it is compared with bbolt, which syncs every
// transition, like for like.
func TestClusterBench(t *testing.T) {
	if os.Getenv("ICEBOX_CLUSTER_BENCH") != "1" {
		t.Skip("a measurement: set ICEBOX_CLUSTER_BENCH=1 to run it (make bench does)")
	}
	concs := []int{10, 100, 1000}
	if v := os.Getenv("ICEBOX_CLUSTER_BENCH_CONC"); v != "" {
		concs = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n > benchMaxConc {
				t.Fatalf("ICEBOX_CLUSTER_BENCH_CONC: %q is not a number of calls in 1..%d", f, benchMaxConc)
			}
			concs = append(concs, n)
		}
	}
	window := 10 * time.Second
	if v := os.Getenv("ICEBOX_CLUSTER_BENCH_SECONDS"); v != "" {
		s, err := strconv.Atoi(v)
		if err != nil || s < 1 || s > 60 {
			t.Fatalf("ICEBOX_CLUSTER_BENCH_SECONDS: %q is not a number of seconds in 1..60", v)
		}
		window = time.Duration(s) * time.Second
	}
	requireNoFile(t, 6*slices.Max(concs)+1024)

	srv := pgtest.Start(t, pgtest.Durable())
	pgVersion := postgresVersion(t, srv.NewDatabase(t))
	started, loadBefore := time.Now(), loadAvg()
	var rows []benchRow
	for _, setup := range []benchSetup{
		{"1 node, bbolt", 1, false},
		{"1 node, PostgreSQL", 1, true},
		{"3 nodes, PostgreSQL", 3, true},
	} {
		for _, conc := range concs {
			t.Run(fmt.Sprintf("%s, %d at once", setup.name, conc), func(t *testing.T) {
				r := benchCalls(t, srv, setup, conc, window)
				rows = append(rows, r)
				t.Logf("%s", r.line())
			})
		}
	}
	report := benchReport(rows, pgVersion, loadBefore, window, time.Since(started))
	t.Logf("\n%s", report)
	if out := os.Getenv("ICEBOX_CLUSTER_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const (
	// benchMaxConc bounds the calls at once (each pair is two users, a
	// WebSocket and a keep-alive connection: about six descriptors).
	benchMaxConc = 2000
	// benchCallTimeout bounds every request and the wait for the invite:
	// past it the call counts as an error.
	benchCallTimeout = 10 * time.Second
)

type benchSetup struct {
	name  string
	nodes int
	pg    bool
}

// benchRow is one cell of the matrix.
type benchRow struct {
	setup    benchSetup
	conc     int
	window   time.Duration
	calls    int // completed within the window
	errors   int
	errFirst string
	lat      []time.Duration // initiate → callee's CallInvite of the calls started in the window, sorted
}

func (r benchRow) rate() float64 { return float64(r.calls) / r.window.Seconds() }

func (r benchRow) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	// Nearest rank.
	i := int(float64(len(r.lat))*q+0.999999) - 1
	return r.lat[max(0, min(i, len(r.lat)-1))]
}

func (r benchRow) line() string {
	return fmt.Sprintf("%s, %d at once: %d calls in %s = %.0f calls/s; initiate → callee's CallInvite p50 %s, p99 %s; %d errors %s",
		r.setup.name, r.conc, r.calls, r.window, r.rate(), fmtMS(r.quantile(0.5)), fmtMS(r.quantile(0.99)), r.errors, r.errFirst)
}

func fmtMS(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) + " ms" }

func benchReport(rows []benchRow, pgVersion, loadBefore string, window, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# icebox calls through the API: one node and three (%s)\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "`go test -run '^TestClusterBench$' ./cmd/icebox/` (bench/cluster.sh). Each of N calls at once is a pair of users "+
		"calling back to back for %s: the caller initiates and hangs up over REST, the callee answers over its WebSocket. "+
		"**calls/s**: calls completed (initiate → answer → hang up) in the window. **initiate → callee event**: from sending "+
		"POST /calls/initiate to the CallInvite arriving on the callee's WebSocket, of every call started in the window. On three nodes the caller's requests go to node "+
		"i mod 3 and the callee's WebSocket to node i+1 mod 3, so every event crosses nodes through the database's feed. "+
		"Every node and the load generator run in one process on this machine (%d CPUs, shared); PostgreSQL %s on the same "+
		"machine, durable as in production (fsync, synchronous_commit and full_page_writes on: every commit is flushed "+
		"to disk), as bbolt syncs each transition to disk. The matrix took %s; the machine's load average (1 min) was %s before "+
		"and %s after: figures from a busy machine are low and noisy, compare within one report.\n\n",
		window, runtime.NumCPU(), pgVersion, took.Round(time.Second), loadBefore, loadAvg())
	b.WriteString("| setup | calls at once | calls/s | initiate → callee event p50 | p99 | calls | errors |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %d | %d |\n",
			r.setup.name, r.conc, r.rate(), fmtMS(r.quantile(0.5)), fmtMS(r.quantile(0.99)), r.calls, r.errors)
	}
	for _, r := range rows {
		if r.errFirst != "" {
			fmt.Fprintf(&b, "\nFirst error of %s, %d at once: %s\n", r.setup.name, r.conc, r.errFirst)
		}
	}
	return b.String()
}

// loadAvg is the machine's 1-minute load average, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

// requireNoFile raises the soft limit of open files to need if the hard
// limit allows (Go raises it to the hard limit at start already).
func requireNoFile(t *testing.T, need int) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= uint64(need) {
		return
	}
	if lim.Max < uint64(need) {
		t.Fatalf("open files: the hard limit is %d, the benchmark needs %d (ulimit -n)", lim.Max, need)
	}
	lim.Cur = uint64(need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
}

func postgresVersion(t *testing.T, dsn string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// benchCalls runs one cell.
func benchCalls(t *testing.T, srv *pgtest.Server, setup benchSetup, conc int, window time.Duration) benchRow {
	secret := "bench-jwt-" + rand.Text()
	var dsn string
	if setup.pg {
		dsn = srv.NewDatabase(t)
	}
	tok := newAPITokens() // admin, for the conversations
	envs := make([]*callsEnv, setup.nodes)
	for i := range envs {
		cfg := callsConfig(filepath.Join(t.TempDir(), "state"),
			// No rate limit worth the name: every pair calls back to back.
			"  initiate_rate: 1000\n  initiate_burst: 1000\n") +
			"auth:\n  jwt:\n    hs256_secret: " + strconv.Quote(secret) + "\n"
		if setup.pg {
			cfg += "store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n    max_conns: 20\n"
		}
		envs[i] = &callsEnv{instance: startIcebox(t, cfg, tok.env(), "ICEBOX_LOG_LEVEL=warn"), tok: tok}
	}
	mint := func(user string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": user, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// One keep-alive connection per caller, closed before the nodes stop
	// (cleanups run last-in first-out): an idle connection left open
	// holds a node's HTTP shutdown up.
	tr := &http.Transport{MaxIdleConnsPerHost: conc + 16, IdleConnTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: benchCallTimeout}
	t.Cleanup(tr.CloseIdleConnections)

	pairs := make([]*benchPair, conc)
	for i := range pairs {
		pairs[i] = &benchPair{
			conv:   fmt.Sprintf("bench%d", i),
			caller: mint(fmt.Sprintf("caller%d", i)), callee: mint(fmt.Sprintf("callee%d", i)),
			api: envs[i%setup.nodes], ws: envs[(i+1)%setup.nodes],
		}
	}
	// Set up 16 at a time: conversations, then the callees' WebSockets.
	setupEach(t, conc, func(i int) error {
		p := pairs[i]
		code, body, err := benchRequest(hc, http.MethodPut, envs[0].httpURL("/admin/conversations/"+p.conv), tok["admin"],
			map[string]any{"participants": []string{fmt.Sprintf("caller%d", i), fmt.Sprintf("callee%d", i)}})
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, body)
		}
		if err != nil {
			return fmt.Errorf("PUT conversation %s: %w", p.conv, err)
		}
		return nil
	})
	var wsMu sync.Mutex
	var sockets []*benchWS
	t.Cleanup(func() {
		for _, s := range sockets {
			s.close()
		}
	})
	setupEach(t, conc, func(i int) error {
		s, err := dialBenchWS(pairs[i].ws, pairs[i].callee)
		if err != nil {
			return fmt.Errorf("callee%d's WebSocket: %w", i, err)
		}
		wsMu.Lock()
		sockets = append(sockets, s)
		wsMu.Unlock()
		pairs[i].sock = s
		return nil
	})
	if t.Failed() {
		t.FailNow()
	}

	row := benchRow{setup: setup, conc: conc, window: window}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		nErrors  atomic.Int64
		firstErr atomic.Pointer[string]
	)
	start := time.Now()
	end := start.Add(window)
	for _, p := range pairs {
		wg.Go(func() {
			// Bounded: the window, and at most one call per 10 ms.
			for n := 0; n < int(window/(10*time.Millisecond)) && time.Now().Before(end); n++ {
				lat, err := p.call(hc)
				mu.Lock()
				if lat > 0 { // the invite arrived: a sample, whenever the call ends
					row.lat = append(row.lat, lat)
				}
				if err == nil && !time.Now().After(end) {
					row.calls++
				}
				mu.Unlock()
				if err != nil {
					nErrors.Add(1)
					msg := err.Error()
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(row.lat)
	row.errors = int(nErrors.Load())
	if e := firstErr.Load(); e != nil {
		row.errFirst = *e
	}
	if row.calls == 0 || row.errors*100 > row.calls+row.errors {
		t.Errorf("%d calls completed, %d failed (first: %s)", row.calls, row.errors, row.errFirst)
	}
	return row
}

// setupEach runs fn for 0..n-1, 16 at a time, and fails t with the errors.
func setupEach(t *testing.T, n int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	var mu sync.Mutex
	var errs []error
	for range min(n, 16) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := fn(i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

// benchPair is one of the concurrent calls: a caller and a callee.
type benchPair struct {
	conv           string
	caller, callee string // bearer tokens
	api, ws        *callsEnv
	sock           *benchWS // the callee's
}

// call makes one call and returns initiate → CallInvite on the callee's
// WebSocket (0 if the invite did not come), and whether the call failed.
func (p *benchPair) call(hc *http.Client) (time.Duration, error) {
	t0 := time.Now()
	code, body, err := benchRequest(hc, http.MethodPost, p.api.httpURL("/calls/initiate"), p.caller,
		map[string]any{"conversation_id": p.conv, "sdp_offer": testOffer})
	if err == nil && code != http.StatusCreated {
		err = fmt.Errorf("%d %s", code, body)
	}
	if err != nil {
		return 0, fmt.Errorf("initiate: %w", err)
	}
	var c struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.ID == "" {
		return 0, fmt.Errorf("initiate: body %.200s: %v", body, err)
	}
	hangup := func() error {
		code, body, err := benchRequest(hc, http.MethodPost, p.api.httpURL("/calls/"+c.ID+"/hangup"), p.caller, nil)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d %s", code, body)
		}
		if err != nil {
			return fmt.Errorf("hangup: %w", err)
		}
		return nil
	}
	at, ok := p.sock.awaitInvite(c.ID, benchCallTimeout)
	if !ok {
		return 0, errors.Join(fmt.Errorf("no CallInvite on the callee's WebSocket within %s", benchCallTimeout), hangup())
	}
	lat := at.Sub(t0)
	if err := p.sock.command(map[string]any{"type": "answer", "call_id": c.ID, "sdp_answer": testAnswer}); err != nil {
		return lat, errors.Join(fmt.Errorf("answer: %w", err), hangup())
	}
	return lat, hangup()
}

// benchRequest is one API request; body as JSON (nil: none).
func benchRequest(hc *http.Client, method, url, token string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// benchWS is a callee's WebSocket. Its reader stamps each CallInvite as it
// arrives and passes on command replies; other events are dropped.
type benchWS struct {
	conn    *websocket.Conn
	invites chan benchInvite
	replies chan benchReply
	done    chan struct{}
	refs    int
}

type benchInvite struct {
	callID string
	at     time.Time
}

type benchReply struct {
	ref string
	err *apiErrorJSON
}

func dialBenchWS(e *callsEnv, token string) (*benchWS, error) {
	ctx, cancel := context.WithTimeout(context.Background(), benchCallTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+loopback(e.httpPort)+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	s := &benchWS{conn: conn, invites: make(chan benchInvite, 16), replies: make(chan benchReply, 4), done: make(chan struct{})}
	go s.read()
	// A command's reply proves the hub has registered the connection: no
	// invite published after it can miss it.
	if err := s.command(map[string]any{"type": "get", "call_id": "no-such-call"}); err == nil || !strings.Contains(err.Error(), "not_found") {
		s.close()
		return nil, fmt.Errorf("the first command: %v, want not_found", err)
	}
	return s, nil
}

func (s *benchWS) read() {
	defer close(s.done)
	for {
		_, data, err := s.conn.Read(context.Background())
		if err != nil {
			return
		}
		var m struct {
			Type   string        `json:"type"`
			Ref    string        `json:"ref"`
			CallID string        `json:"call_id"`
			Error  *apiErrorJSON `json:"error"`
		}
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		switch m.Type {
		case "CallInvite":
			select {
			case s.invites <- benchInvite{m.CallID, time.Now()}:
			default: // one call at a time: only a stale invite can find it full
			}
		case "reply", "error":
			select {
			case s.replies <- benchReply{m.Ref, m.Error}:
			default:
			}
		}
	}
}

// awaitInvite waits for callID's CallInvite (skipping stale ones of
// earlier calls) and returns when it arrived.
func (s *benchWS) awaitInvite(callID string, timeout time.Duration) (time.Time, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case in := <-s.invites:
			if in.callID == callID {
				return in.at, true
			}
		case <-timer.C:
			return time.Time{}, false
		case <-s.done:
			return time.Time{}, false
		}
	}
}

// command sends a command and waits for its reply; an error reply is an
// error naming its code.
func (s *benchWS) command(cmd map[string]any) error {
	s.refs++
	ref := strconv.Itoa(s.refs)
	cmd["ref"] = ref
	data, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), benchCallTimeout)
	defer cancel()
	if err := s.conn.Write(ctx, websocket.MessageText, data); err != nil {
		return err
	}
	for {
		select {
		case r := <-s.replies:
			if r.ref != ref {
				continue // a late reply to a command given up
			}
			if r.err != nil {
				return fmt.Errorf("%s: %s", r.err.Code, r.err.Message)
			}
			return nil
		case <-ctx.Done():
			return fmt.Errorf("no reply within %s", benchCallTimeout)
		case <-s.done:
			return errors.New("the WebSocket closed")
		}
	}
}

func (s *benchWS) close() {
	_ = s.conn.Close(websocket.StatusNormalClosure, "bench done")
	<-s.done
}
