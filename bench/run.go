//go:build linux

package main

// `bench run`: the plan (what is measured, how much), the namespaces, the
// interleaved rounds, and the report at the end. Every measurement starts a
// fresh server and stops it, by its PID, when done; an interrupted run stops
// what it started and deletes its namespaces.

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// plan is how much of each load a run offers.
type plan struct {
	Rounds        int
	Quick         bool
	Only          map[string]bool // measurements to run (nil: all); a partial run is not latest.md
	ProfileLoad   int             // index in Uclient of the load profiled
	RateStep      time.Duration   // how long each offered rate of the rate loads lasts
	RateBurst     int             // datagrams per session back to back in the rate loads ($BENCH_RATE_BURST)
	RateSessions  []int           // the rate loads' session counts ($BENCH_RATE_SESSIONS, comma-separated)
	RatePin       bool            // generator and server on separate CPUs ($BENCH_RATE_PIN, default 1; measure_rate.go)
	RateGSO       bool            // the generator sends a burst as one GSO message ($BENCH_RATE_GSO=1)
	RateVethGRO   bool            // GRO (NAPI) on the server's veth ($BENCH_RATE_VETH_GRO=1), as a NIC does
	RateKinds     map[string]bool // the servers of the rate loads ($BENCH_RATE_KINDS; nil: all three)
	RateBacklog   int             // net.core.netdev_max_backlog during the rate loads ($BENCH_RATE_BACKLOG; 0: as is)
	Uclient       []uclientLoad
	AllocWorkers  int
	AllocDuration time.Duration
	HoldN         int
	HTTPClients   int
	HTTPDuration  time.Duration
	SigCalls      int
	ProfileSecs   int
}

// newPlan sizes the loads so that each uclient run sends for about 5–10 s
// on a 2-core machine (≈400 messages/s per session below saturation), and
// the whole run takes ≈10 min with 3 rounds. Quick divides everything by 5.
func newPlan(rounds int, quick bool) plan {
	p := plan{
		Rounds: rounds,
		Quick:  quick,
		Uclient: []uclientLoad{
			{Name: "u20", Sessions: 20, Messages: 3000, Bytes: 100},
			{Name: "u100", Sessions: 100, Messages: 2500, Bytes: 100},
			{Name: "u200", Sessions: 200, Messages: 2500, Bytes: 100},
			{Name: "u100x1000", Sessions: 100, Messages: 2000, Bytes: 1000},
		},
		AllocWorkers:  16,
		AllocDuration: 10 * time.Second,
		HoldN:         10000,
		HTTPClients:   16,
		HTTPDuration:  10 * time.Second,
		SigCalls:      300,
		ProfileSecs:   10,
		ProfileLoad:   1,
		RateStep:      2 * time.Second,
	}
	if quick {
		for i := range p.Uclient {
			p.Uclient[i].Messages /= 5
		}
		p.AllocDuration = 3 * time.Second
		p.HoldN = 2000
		p.HTTPDuration = 3 * time.Second
		p.SigCalls = 50
		p.ProfileSecs = 3
		p.RateStep = time.Second
	}
	return p
}

// binaries are the programs the run executes.
type binaries struct {
	icebox, turnserver, uclient, self, goTool string
}

// record is one measurement: one server, one load, one round.
type record struct {
	Round    int
	Server   string // icebox, coturn, or ceiling (the bare HTTP handler)
	Workload string
	V        map[string]float64
	Err      string // the measurement failed: no figures
	Warn     string // figures kept, but something went wrong (a few failed requests)
}

type runner struct {
	plan    plan
	bins    binaries
	sec     secrets
	ns      map[string]*netns // by server kind
	tmp     string
	started time.Time

	records []record
	buffers map[string]string // server kind → its socket buffers, from ss
	// rateSteps: each rate measurement's steps, for the report.
	rateSteps []string
	profile   *profileResult
}

func cmdRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	iceboxBin := fs.String("icebox", "bin/icebox", "icebox binary under test")
	outDir := fs.String("out", "bench/results", "directory of the reports")
	rounds := fs.Int("rounds", envInt("BENCH_ROUNDS", 0), "rounds (default 3, quick 1; $BENCH_ROUNDS)")
	quick := fs.Bool("quick", os.Getenv("BENCH_QUICK") == "1", "short smoke run: loads divided by 5 ($BENCH_QUICK=1)")
	keep := fs.Bool("keep", os.Getenv("BENCH_KEEP") == "1", "keep the temporary directory (server logs, uclient output)")
	only := fs.String("only", os.Getenv("BENCH_ONLY"), "comma-separated measurements to run, of hold, allocs, u20, u100, u200, u100x1000, veth, vethhold, rate, api, rtc, rtcframe, profile ($BENCH_ONLY; default all); a partial report is not latest.md")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds <= 0 {
		*rounds = 3
		if *quick {
			*rounds = 1
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("run needs root (network namespaces); try: sudo make bench")
	}
	bins, err := findBinaries(*iceboxBin)
	if err != nil {
		return err
	}
	// The servers inherit it: 10 000 relay sockets and then some.
	if err := raiseNoFile(uint64(newPlan(1, *quick).HoldN) + 4096); err != nil {
		return err
	}

	p := newPlan(*rounds, *quick)
	if name := os.Getenv("BENCH_PROFILE_LOAD"); name != "" {
		for i, l := range p.Uclient {
			if l.Name == name {
				p.ProfileLoad = i
			}
		}
	}
	p.RateBurst = envInt("BENCH_RATE_BURST", 1)
	p.RatePin = envInt("BENCH_RATE_PIN", 1) != 0
	p.RateGSO = envInt("BENCH_RATE_GSO", 0) != 0
	p.RateVethGRO = envInt("BENCH_RATE_VETH_GRO", 0) != 0
	p.RateBacklog = envInt("BENCH_RATE_BACKLOG", 0)
	if v := os.Getenv("BENCH_RATE_KINDS"); v != "" {
		p.RateKinds = map[string]bool{}
		for _, k := range strings.Split(v, ",") {
			p.RateKinds[strings.TrimSpace(k)] = true
		}
	}
	if v := os.Getenv("BENCH_RATE_SESSIONS"); v != "" {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 2 || n%2 != 0 {
				return fmt.Errorf("BENCH_RATE_SESSIONS: %q is not an even number ≥ 2", f)
			}
			p.RateSessions = append(p.RateSessions, n)
		}
	}
	if *only != "" {
		p.Only = map[string]bool{}
		for _, name := range strings.Split(*only, ",") {
			p.Only[strings.TrimSpace(name)] = true
		}
	}
	r := &runner{plan: p, bins: bins, ns: map[string]*netns{}, buffers: map[string]string{}, started: time.Now()}
	r.sec = secrets{TURN: rand.Text(), Alice: "alice-" + rand.Text(), Bob: "bob-" + rand.Text(), Admin: "admin-" + rand.Text()}
	r.tmp, err = os.MkdirTemp("", "icebox-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if *keep {
			fmt.Fprintf(os.Stderr, "bench: kept %s\n", r.tmp)
			return
		}
		os.RemoveAll(r.tmp)
	}()

	// Stop what was started and delete the namespaces, whatever happens.
	defer func() {
		stopAll()
		for _, ns := range r.ns {
			if err := ns.delete(); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", err)
			}
		}
	}()
	for _, kind := range []string{"icebox", "coturn"} {
		ns, err := newNetns(ctx, fmt.Sprintf("icebench-%d-%s", os.Getpid(), kind))
		if err != nil {
			return err
		}
		r.ns[kind] = ns
	}

	if err := r.runRounds(ctx); err != nil {
		return err
	}
	return r.writeReport(ctx, *outDir)
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil {
		return v
	}
	return def
}

func findBinaries(icebox string) (binaries, error) {
	var b binaries
	var err error
	if b.icebox, err = filepath.Abs(icebox); err != nil {
		return b, err
	}
	if _, err := os.Stat(b.icebox); err != nil {
		return b, fmt.Errorf("icebox binary: %w (make build)", err)
	}
	for _, t := range []struct {
		dst  *string
		name string
	}{{&b.turnserver, "turnserver"}, {&b.uclient, "turnutils_uclient"}} {
		if *t.dst, err = exec.LookPath(t.name); err != nil {
			return b, fmt.Errorf("%s not found: apt-get install coturn", t.name)
		}
	}
	for _, tool := range []string{"ip", "ss", "sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			return b, fmt.Errorf("%s not found: apt-get install iproute2 procps", tool)
		}
	}
	if b.self, err = os.Executable(); err != nil {
		return b, err
	}
	b.goTool, _ = exec.LookPath("go") // only for `go tool pprof -top`
	return b, nil
}

// progress prints what the run is doing, with the time since it started.
func (r *runner) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench [%5.0fs] %s\n", time.Since(r.started).Seconds(), fmt.Sprintf(format, args...))
}

// runRounds runs every load against both servers, interleaved: in odd
// rounds icebox goes first, in even rounds coturn, so a drift of the machine
// over a round weighs on both alike.
func (r *runner) runRounds(ctx context.Context) error {
	for round := 1; round <= r.plan.Rounds; round++ {
		order := []string{"icebox", "coturn"}
		if round%2 == 0 {
			order = []string{"coturn", "icebox"}
		}
		steps := []struct {
			name string
			fn   func(ctx context.Context, round int, kind string) record
		}{{"hold", r.measureHold}, {"allocs", r.measureAllocs}}
		for _, l := range r.plan.Uclient {
			steps = append(steps, struct {
				name string
				fn   func(ctx context.Context, round int, kind string) record
			}{l.Name, func(ctx context.Context, round int, kind string) record {
				return r.measureUclient(ctx, round, kind, l, false)
			}})
		}
		for _, st := range steps {
			if !r.plan.runs(st.name) {
				continue
			}
			for _, kind := range order {
				r.progress("round %d/%d: %s on %s", round, r.plan.Rounds, st.name, kind)
				rec := st.fn(ctx, round, kind)
				if err := ctx.Err(); err != nil {
					return err
				}
				r.add(rec)
			}
		}
		if r.plan.runs("veth") {
			for _, l := range r.plan.vethLoads() {
				for _, kind := range vethOrder(round) {
					r.progress("round %d/%d: %s on %s", round, r.plan.Rounds, vethLoad(l), kind)
					rec := r.measureVeth(ctx, round, kind, l)
					if err := ctx.Err(); err != nil {
						return err
					}
					r.add(rec)
				}
			}
		}
		if r.plan.runs("vethhold") {
			for _, kind := range vethOrder(round) {
				r.progress("round %d/%d: veth-hold on %s", round, r.plan.Rounds, kind)
				rec := r.measureVethHold(ctx, round, kind)
				if err := ctx.Err(); err != nil {
					return err
				}
				r.add(rec)
			}
		}
		if r.plan.runs("rate") {
			for _, n := range r.plan.rateSessions() {
				for _, kind := range r.plan.rateKinds(round) {
					r.progress("round %d/%d: %s on %s", round, r.plan.Rounds, rateLoad(n), kind)
					rec := r.measureRate(ctx, round, kind, n)
					if err := ctx.Err(); err != nil {
						return err
					}
					r.add(rec)
				}
			}
		}
		if r.plan.runs("api") {
			r.progress("round %d/%d: HTTP API and signaling on icebox, and the bare handler", round, r.plan.Rounds)
			for _, rec := range r.measureAPI(ctx, round) {
				r.add(rec)
			}
		}
		if r.plan.runs("rtc") {
			r.progress("round %d/%d: MatrixRTC /get_token on icebox, verification cache on and off", round, r.plan.Rounds)
			for _, rec := range r.measureRTC(ctx, round) {
				r.add(rec)
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if r.plan.runs("rtcframe") {
		r.progress("MatrixRTC: time from token to first decrypted frame (browser bed, go test %s)", rtcFramePkg)
		for _, rec := range r.measureRTCFrame(ctx) {
			r.add(rec)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	r.runGateway(ctx) // measure_gateway.go; BENCH_ONLY=gateway
	if r.plan.runs("profile") {
		r.progress("profile: icebox CPU profile during %s", r.plan.Uclient[r.plan.ProfileLoad].Name)
		r.runProfile(ctx)
	}
	return ctx.Err()
}

// runs reports whether the plan includes the named measurement.
func (p plan) runs(name string) bool { return p.Only == nil || p.Only[name] }

func (r *runner) add(rec record) {
	if rec.Err != "" {
		fmt.Fprintf(os.Stderr, "bench: round %d, %s on %s failed: %s\n", rec.Round, rec.Workload, rec.Server, rec.Err)
	}
	if rec.Warn != "" {
		fmt.Fprintf(os.Stderr, "bench: round %d, %s on %s: %s\n", rec.Round, rec.Workload, rec.Server, rec.Warn)
	}
	r.records = append(r.records, rec)
}
