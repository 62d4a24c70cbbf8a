//go:build linux

package main

// The measurements. Each starts a fresh server in its namespace, reads
// /proc before and after the load, runs the load generator inside the same
// namespace, and stops the server.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds of the generators: each stops by itself well before these.
const (
	uclientTimeout = 3 * time.Minute
	genTimeout     = 3 * time.Minute
)

// genEnv is the generators' environment: the secrets travel there, not on
// the command line.
func (r *runner) genEnv() []string {
	return append(os.Environ(),
		"BENCH_TURN_SECRET="+r.sec.TURN,
		"BENCH_TOKEN="+r.sec.Alice,
		"BENCH_ALICE_TOKEN="+r.sec.Alice,
		"BENCH_BOB_TOKEN="+r.sec.Bob,
		"BENCH_ADMIN_TOKEN="+r.sec.Admin,
	)
}

// runGen runs a generator subcommand of this binary in ns and decodes the
// last line of its output as JSON into v.
func (r *runner) runGen(ctx context.Context, ns *netns, v any, args ...string) error {
	return r.runGenOn(ctx, ns, "", v, args...)
}

// runGenOn is runGen with the generator pinned to cpus (taskset -c; ""
// anywhere).
func (r *runner) runGenOn(ctx context.Context, ns *netns, cpus string, v any, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, genTimeout)
	defer cancel()
	cmd := ns.command(ctx, r.bins.self, args...)
	if cpus != "" {
		cmd = ns.command(ctx, "taskset", append([]string{"-c", cpus, r.bins.self}, args...)...)
	}
	cmd.Env = r.genEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if jerr := json.Unmarshal([]byte(lines[len(lines)-1]), v); jerr != nil {
		return fmt.Errorf("bench %s: %v; no result (%v); stderr: %s", args[0], err, jerr, tail(stderr.String(), 5))
	}
	if err != nil {
		return fmt.Errorf("bench %s: %v; stderr: %s", args[0], err, tail(stderr.String(), 5))
	}
	return nil
}

func (r *runner) start(ctx context.Context, kind string) (*server, error) {
	return startServer(ctx, kind, r.ns[kind], r.tmp, r.bins, r.sec)
}

func failed(round int, kind, workload string, err error) record {
	return record{Round: round, Server: kind, Workload: workload, Err: err.Error()}
}

// measureUclient runs one turnutils_uclient load. With profile, it also
// takes icebox's CPU profile meanwhile (the profile run, not a measurement).
func (r *runner) measureUclient(ctx context.Context, round int, kind string, l uclientLoad, profile bool) record {
	srv, err := r.start(ctx, kind)
	if err != nil {
		return failed(round, kind, l.Name, err)
	}
	defer srv.stop()
	socks0, err := srv.serverSockets(ctx)
	if err != nil {
		return failed(round, kind, l.Name, err)
	}
	s0, err := srv.sample()
	if err != nil {
		return failed(round, kind, l.Name, err)
	}

	uctx, cancel := context.WithTimeout(ctx, uclientTimeout)
	defer cancel()
	cmd := srv.ns.command(uctx, r.bins.uclient, l.args(r.sec.TURN)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return failed(round, kind, l.Name, err)
	}
	// Sample the namespace's datagram counter while the load runs, to find
	// when messages flowed (see activeWindow). flowing closes once 5 % of
	// the expected datagrams (3 per message) have arrived: uclient spends
	// seconds allocating first, and a profile should see the relaying.
	stopSampling := make(chan struct{})
	flowing := make(chan struct{})
	expected := 3 * int64(l.Sessions) * int64(l.Messages)
	var ats []time.Time
	var ins []int64
	var sampling sync.WaitGroup
	sampling.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		signaled := false
		for {
			if u, err := readUDP(srv.pid); err == nil {
				ats, ins = append(ats, time.Now()), append(ins, u.InDatagrams)
				if !signaled && u.InDatagrams-s0.udp.InDatagrams >= expected/20 {
					close(flowing)
					signaled = true
				}
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	})
	var prof sync.WaitGroup
	if profile {
		prof.Go(func() {
			select {
			case <-flowing:
				r.profile = r.takeProfile(ctx, srv)
			case <-stopSampling: // the load ended before it flowed
			}
		})
	}
	waitErr := cmd.Wait()
	close(stopSampling)
	sampling.Wait()
	prof.Wait()
	_ = os.WriteFile(filepath.Join(r.tmp, fmt.Sprintf("uclient-%s-%s-r%d.txt", l.Name, kind, round)), out.Bytes(), 0o644)
	if uctx.Err() != nil {
		return failed(round, kind, l.Name, fmt.Errorf("turnutils_uclient did not finish within %s", uclientTimeout))
	}
	if err := srv.alive(); err != nil {
		return failed(round, kind, l.Name, err)
	}
	s1, err := srv.sample()
	if err != nil {
		return failed(round, kind, l.Name, err)
	}
	if u, err := readUDP(srv.pid); err == nil {
		ats, ins = append(ats, time.Now()), append(ins, u.InDatagrams)
	}
	socks1, err := srv.serverSockets(ctx)
	if err != nil {
		return failed(round, kind, l.Name, err)
	}
	res, err := parseUclient(out.String())
	if err != nil {
		return failed(round, kind, l.Name, fmt.Errorf("%v (exit: %v); output:\n%s", err, waitErr, tail(out.String(), 10)))
	}
	window, err := activeWindow(ats, ins, 0.01, 0.99)
	if err != nil {
		return failed(round, kind, l.Name, err)
	}
	cpu := ticksToMicros(s1.ticks - s0.ticks)
	udp := s1.udp.sub(s0.udp)
	v := map[string]float64{
		"msgs_per_s":     0.98 * float64(res.Received) / window.Seconds(),
		"loss_pct":       res.LostPercent,
		"cpu_us_per_msg": cpu / float64(res.Received),
		"sent":           float64(res.Sent),
		"received":       float64(res.Received),
		"lost":           float64(res.Lost),
		"cpu_s":          cpu / 1e6,
		"window_s":       window.Seconds(),
		"ns_in_per_3":    float64(udp.InDatagrams) / 3,
		"rcvbuf_errors":  float64(udp.RcvbufErrors),
		"server_drops":   float64(sumDrops(socks1) - sumDrops(socks0)),
		"rtt_ms":         res.RTTms,
	}
	if res.Received == 0 {
		v["cpu_us_per_msg"] = math.NaN()
	}
	return record{Round: round, Server: kind, Workload: l.Name, V: v}
}

func (r *runner) measureAllocs(ctx context.Context, round int, kind string) record {
	srv, err := r.start(ctx, kind)
	if err != nil {
		return failed(round, kind, "allocs", err)
	}
	defer srv.stop()
	s0, err := srv.sample()
	if err != nil {
		return failed(round, kind, "allocs", err)
	}
	var res allocsResult
	err = r.runGen(ctx, srv.ns, &res, "allocs", "--server", turnAddr,
		"--workers", strconv.Itoa(r.plan.AllocWorkers), "--duration", r.plan.AllocDuration.String())
	if err != nil {
		return failed(round, kind, "allocs", err)
	}
	if err := srv.alive(); err != nil {
		return failed(round, kind, "allocs", err)
	}
	s1, err := srv.sample()
	if err != nil {
		return failed(round, kind, "allocs", err)
	}
	cpu := ticksToMicros(s1.ticks - s0.ticks)
	rec := record{Round: round, Server: kind, Workload: "allocs", V: map[string]float64{
		"allocs_per_s":     float64(res.OK) / res.Seconds,
		"cpu_us_per_alloc": cpu / float64(res.OK),
		"ok":               float64(res.OK),
		"errors":           float64(res.Errors),
		"cpu_s":            cpu / 1e6,
	}}
	if res.Errors > 0 {
		rec.Warn = fmt.Sprintf("%d Allocates failed (first: %s)", res.Errors, res.FirstError)
	}
	return rec
}

// measureHold reads the server's memory when fresh and with HoldN
// allocations held open by `bench hold`.
func (r *runner) measureHold(ctx context.Context, round int, kind string) record {
	srv, err := r.start(ctx, kind)
	if err != nil {
		return failed(round, kind, "hold", err)
	}
	defer srv.stop()
	return r.hold(ctx, round, kind, "hold", srv, srv.ns, turnAddr, "")
}

// hold has `bench hold` in genNS (source addresses bind; "": spread over
// 127/8) hold the plan's allocations on srv at addr and reads srv's memory.
func (r *runner) hold(ctx context.Context, round int, kind, workload string, srv *server, genNS *netns, addr, bind string) record {
	idle, err := readMem(srv.pid)
	if err != nil {
		return failed(round, kind, workload, err)
	}
	hctx, cancel := context.WithTimeout(ctx, genTimeout)
	defer cancel()
	args := []string{"hold", "--server", addr, "--n", strconv.Itoa(r.plan.HoldN)}
	if bind != "" {
		args = append(args, "--bind", bind)
	}
	cmd := genNS.command(hctx, r.bins.self, args...)
	cmd.Env = r.genEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return failed(round, kind, workload, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return failed(round, kind, workload, err)
	}
	if err := cmd.Start(); err != nil {
		return failed(round, kind, workload, err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait() // its result was read, or the failure is already reported
	}()
	lines := bufio.NewScanner(stdout)
	var held holdResult
	if !lines.Scan() || json.Unmarshal(lines.Bytes(), &held) != nil || held.Phase != "held" {
		return failed(round, kind, workload, fmt.Errorf("bench hold printed no \"held\" line; stderr: %s", tail(stderr.String(), 5)))
	}
	// Let the server settle (its last responses, a GC cycle) before reading.
	select {
	case <-time.After(2 * time.Second):
	case <-ctx.Done():
		return failed(round, kind, workload, ctx.Err())
	}
	if err := srv.alive(); err != nil {
		return failed(round, kind, workload, err)
	}
	mem, err := readMem(srv.pid)
	if err != nil {
		return failed(round, kind, workload, err)
	}
	if _, ok := r.buffers[kind]; !ok && workload == "hold" {
		if socks, err := srv.serverSockets(ctx); err == nil {
			r.buffers[kind] = bufferSummary(socks, 3478)
		}
	}
	stdin.Close()
	var released holdResult
	if lines.Scan() {
		_ = json.Unmarshal(lines.Bytes(), &released)
	}
	_, _ = io.Copy(io.Discard, stdout)
	rec := record{Round: round, Server: kind, Workload: workload, V: map[string]float64{
		"held":           float64(held.Held),
		"errors":         float64(held.Errors),
		"setup_s":        held.Seconds,
		"rss_idle_mib":   float64(idle.RSSKiB) / 1024,
		"rss_held_mib":   float64(mem.RSSKiB) / 1024,
		"hwm_mib":        float64(mem.HWMKiB) / 1024,
		"kib_per_alloc":  float64(mem.RSSKiB-idle.RSSKiB) / float64(max(held.Held, 1)),
		"release_s":      released.Seconds,
		"allocs_per_s_h": float64(held.Held) / held.Seconds,
	}}
	if held.Errors > 0 {
		rec.Warn = fmt.Sprintf("%d of %d Allocates failed (first: %s)", held.Errors, r.plan.HoldN, held.FirstError)
	}
	return rec
}

// measureAPI measures icebox's /calls/ice_servers and WebSocket signaling,
// and the bare handler serving the same body (the ceiling), in icebox's
// namespace, in alternating order.
func (r *runner) measureAPI(ctx context.Context, round int) []record {
	ns := r.ns["icebox"]
	bodyFile := filepath.Join(r.tmp, "ice_servers.json")
	var recs []record
	icebox := func() {
		srv, err := r.start(ctx, "icebox")
		if err != nil {
			recs = append(recs, failed(round, "icebox", "http", err))
			return
		}
		defer srv.stop()
		code, body, err := srv.httpGet(ctx, "/calls/ice_servers", r.sec.Alice)
		if err != nil || code != http.StatusOK {
			recs = append(recs, failed(round, "icebox", "http", fmt.Errorf("GET /calls/ice_servers: %d %v", code, err)))
			return
		}
		if err := os.WriteFile(bodyFile, body, 0o644); err != nil {
			recs = append(recs, failed(round, "icebox", "http", err))
			return
		}
		recs = append(recs, r.httpLoad(ctx, round, "icebox", ns, srv.pid))
		recs = append(recs, r.sigLatency(ctx, round, srv))
	}
	ceiling := func() {
		if _, err := os.Stat(bodyFile); err != nil {
			recs = append(recs, failed(round, "ceiling", "http", fmt.Errorf("no icebox body to serve: %w", err)))
			return
		}
		cmd := ns.command(context.Background(), r.bins.self, "ceiling", "--listen", httpAddr, "--body", bodyFile)
		cmd.Env = r.genEnv()
		p, err := startProc("ceiling", cmd, filepath.Join(r.tmp, "ceiling.out"))
		if err != nil {
			recs = append(recs, failed(round, "ceiling", "http", err))
			return
		}
		defer p.stop()
		srv := &server{proc: p, kind: "ceiling", ns: ns, http: nsHTTPClient(ns)}
		deadline := time.Now().Add(readyTimeout)
		for srv.httpStatus(ctx, "/", r.sec.Alice) != http.StatusOK {
			if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
				recs = append(recs, failed(round, "ceiling", "http", fmt.Errorf("the bare handler did not answer; output:\n%s", p.logTail())))
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		recs = append(recs, r.httpLoad(ctx, round, "ceiling", ns, p.pid))
	}
	if round%2 == 1 {
		icebox()
		ceiling()
	} else {
		// The body file is icebox's: keep it from an earlier round.
		ceiling()
		icebox()
	}
	return recs
}

func (r *runner) httpLoad(ctx context.Context, round int, kind string, ns *netns, pid int) record {
	t0, err := cpuTicks(pid)
	if err != nil {
		return failed(round, kind, "http", err)
	}
	var res httpResult
	err = r.runGen(ctx, ns, &res, "httpload", "--url", "http://"+httpAddr+"/calls/ice_servers",
		"--clients", strconv.Itoa(r.plan.HTTPClients), "--duration", r.plan.HTTPDuration.String())
	if err != nil {
		return failed(round, kind, "http", err)
	}
	t1, err := cpuTicks(pid)
	if err != nil {
		return failed(round, kind, "http", err)
	}
	rec := record{Round: round, Server: kind, Workload: "http", V: map[string]float64{
		"rps":            float64(res.Requests) / res.Seconds,
		"p50_us":         res.P50us,
		"p99_us":         res.P99us,
		"p999_us":        res.P999us,
		"cpu_us_per_req": ticksToMicros(t1-t0) / float64(max(res.Requests, 1)),
		"errors":         float64(res.Errors),
		"body_bytes":     float64(res.BodyBytes),
	}}
	if res.Errors > 0 {
		rec.Warn = fmt.Sprintf("%d requests failed (first: %s)", res.Errors, res.FirstError)
	}
	return rec
}

func (r *runner) sigLatency(ctx context.Context, round int, srv *server) record {
	var res sigResult
	if err := r.runGen(ctx, srv.ns, &res, "siglat", "--calls", strconv.Itoa(r.plan.SigCalls)); err != nil {
		return failed(round, "icebox", "siglat", err)
	}
	rec := record{Round: round, Server: "icebox", Workload: "siglat", V: map[string]float64{
		"calls":     float64(res.Calls),
		"p50_us":    res.InviteP50,
		"p99_us":    res.InviteP99,
		"max_us":    res.InviteMax,
		"reply_p50": res.ReplyP50,
		"reply_p99": res.ReplyP99,
		"hangup_50": res.HangupP50,
	}}
	if res.FirstError != "" {
		rec.Warn = fmt.Sprintf("stopped after %d of %d calls: %s", res.Calls, r.plan.SigCalls, res.FirstError)
	}
	return rec
}

// profileResult is icebox's CPU profile, taken in a separate, unmeasured
// run (profiling costs CPU).
type profileResult struct {
	Load string
	File string // path of the saved profile
	Top  string // go tool pprof -top
	Note string // why there is none
}

// runProfile runs the 100-session load once more on icebox while taking a
// CPU profile through its admin pprof endpoint, if it has one.
func (r *runner) runProfile(ctx context.Context) {
	l := r.plan.Uclient[r.plan.ProfileLoad]
	l.Messages *= 2 // so that the profile's seconds fall within the relaying
	rec := r.measureUclient(ctx, 0, "icebox", l, true)
	if r.profile == nil {
		r.profile = &profileResult{Load: l.Name, Note: "no profile: " + rec.Err}
	}
	r.profile.Load = fmt.Sprintf("%s (-m %d -n %d -l %d)", l.Name, l.Sessions, l.Messages, l.Bytes)
}

// takeProfile fetches /admin/debug/pprof/profile from icebox while the load
// runs.
func (r *runner) takeProfile(ctx context.Context, srv *server) *profileResult {
	code, _, err := srv.httpGet(ctx, "/admin/debug/pprof/goroutine?debug=1", r.sec.Admin)
	if err != nil || code != http.StatusOK {
		return &profileResult{Note: fmt.Sprintf("icebox has no usable /admin/debug/pprof endpoint (GET goroutine: %d %v); TODO: the relay engineer exposes one", code, err)}
	}
	code, body, err := srv.httpGet(ctx, fmt.Sprintf("/admin/debug/pprof/profile?seconds=%d", r.plan.ProfileSecs), r.sec.Admin)
	if err != nil || code != http.StatusOK {
		return &profileResult{Note: fmt.Sprintf("GET /admin/debug/pprof/profile: %d %v %s", code, err, tail(string(body), 3))}
	}
	file := filepath.Join(r.tmp, "icebox-cpu.pprof")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		return &profileResult{Note: err.Error()}
	}
	p := &profileResult{File: file}
	if r.bins.goTool == "" {
		p.Note = "no go command for `go tool pprof -top`"
		return p
	}
	out, err := exec.CommandContext(ctx, r.bins.goTool, "tool", "pprof", "-top", "-nodecount=35", file).CombinedOutput()
	if err != nil {
		p.Note = fmt.Sprintf("go tool pprof: %v", err)
	}
	p.Top = string(out)
	return p
}
