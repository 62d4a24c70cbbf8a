//go:build linux

package main

// The Markdown report: machine, versions, method, configurations, the
// summary (medians over rounds, ratios), every round's raw figures, errors
// and the profile.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// column is one figure of a raw table.
type column struct {
	key, header, format string
}

var (
	uclientCols = []column{
		{"msgs_per_s", "msgs/s", "%.0f"}, {"loss_pct", "loss %", "%.2f"}, {"cpu_us_per_msg", "CPU µs/msg", "%.2f"},
		{"sent", "sent", "%.0f"}, {"received", "received", "%.0f"}, {"lost", "lost", "%.0f"},
		{"cpu_s", "server CPU s", "%.2f"}, {"window_s", "window s", "%.2f"}, {"ns_in_per_3", "ns InDatagrams/3", "%.0f"},
		{"rcvbuf_errors", "ns RcvbufErrors", "%.0f"}, {"server_drops", "server socket drops", "%.0f"}, {"rtt_ms", "RTT ms", "%.2f"},
	}
	allocsCols = []column{
		{"allocs_per_s", "allocs/s", "%.0f"}, {"cpu_us_per_alloc", "CPU µs/alloc", "%.1f"},
		{"ok", "allocations", "%.0f"}, {"errors", "errors", "%.0f"}, {"cpu_s", "server CPU s", "%.2f"},
	}
	holdCols = []column{
		{"held", "held", "%.0f"}, {"errors", "errors", "%.0f"}, {"setup_s", "setup s", "%.2f"},
		{"rss_idle_mib", "RSS fresh MiB", "%.1f"}, {"rss_held_mib", "RSS held MiB", "%.1f"}, {"hwm_mib", "peak RSS MiB", "%.1f"},
		{"kib_per_alloc", "KiB/allocation", "%.2f"},
	}
	httpCols = []column{
		{"rps", "req/s", "%.0f"}, {"p50_us", "p50 µs", "%.0f"}, {"p99_us", "p99 µs", "%.0f"}, {"p999_us", "p99.9 µs", "%.0f"},
		{"cpu_us_per_req", "server CPU µs/req", "%.1f"}, {"errors", "errors", "%.0f"}, {"body_bytes", "body bytes", "%.0f"},
	}
	rtcCols = []column{
		{"rps", "req/s", "%.0f"}, {"p50_us", "p50 µs", "%.0f"}, {"p99_us", "p99 µs", "%.0f"}, {"p999_us", "p99.9 µs", "%.0f"},
		{"cpu_us_per_req", "server CPU µs/req", "%.1f"}, {"errors", "errors", "%.0f"}, {"hs_requests", "userinfo requests", "%.0f"},
	}
	rtcFrameCols = []column{
		{"connected_ms", "JWT → LiveKit connected ms", "%.0f"}, {"video_ms", "JWT → first decrypted video ms", "%.0f"},
		{"audio_ms", "JWT → first decrypted audio ms", "%.0f"},
	}
	sigCols = []column{
		{"calls", "calls", "%.0f"}, {"p50_us", "invite p50 µs", "%.0f"}, {"p99_us", "invite p99 µs", "%.0f"},
		{"max_us", "invite max µs", "%.0f"}, {"reply_p50", "initiate reply p50 µs", "%.0f"}, {"reply_p99", "reply p99 µs", "%.0f"},
		{"hangup_50", "hangup → CallHangup p50 µs", "%.0f"},
	}
)

// values of one figure over the rounds, for one server and workload.
func (r *runner) values(server, workload, key string) []float64 {
	var v []float64
	for _, rec := range r.records {
		if rec.Server == server && rec.Workload == workload && rec.V != nil {
			if x, ok := rec.V[key]; ok {
				v = append(v, x)
			}
		}
	}
	return v
}

func (r *runner) med(server, workload, key string) float64 {
	return median(r.values(server, workload, key))
}

func num(format string, x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf(format, x)
}

func ratioText(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", x)
}

// target is one of issue 7's goals on a summary row.
type target struct {
	text string
	met  func(icebox, coturn float64) bool
}

func ratioAtMost(limit float64) func(a, b float64) bool {
	return func(a, b float64) bool { return ratio(a, b) <= limit }
}

func ratioAtLeast(limit float64) func(a, b float64) bool {
	return func(a, b float64) bool { return ratio(a, b) >= limit }
}

func (t *target) verdict(a, b float64) string {
	if t == nil {
		return ""
	}
	if math.IsNaN(a) || math.IsNaN(b) {
		return t.text + ": –"
	}
	if t.met(a, b) {
		return t.text + ": **met**"
	}
	return t.text + ": not met"
}

func (r *runner) summaryTable(b *strings.Builder) {
	b.WriteString("| measure (median over rounds) | icebox | coturn | icebox/coturn | issue 7 target |\n|---|---:|---:|---:|---|\n")
	row := func(label, workload, key, format string, t *target) {
		a, c := r.med("icebox", workload, key), r.med("coturn", workload, key)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", label, num(format, a), num(format, c), ratioText(ratio(a, c)), t.verdict(a, c))
	}
	for _, l := range r.plan.Uclient {
		what := fmt.Sprintf("%d sessions", l.Sessions)
		if l.Bytes != 100 {
			what = fmt.Sprintf("%d sessions, %d-byte messages", l.Sessions, l.Bytes)
		}
		var cpuT, rateT, lossT *target
		switch l.Name {
		case "u20", "u100":
			cpuT = &target{"≤ 0.90×", ratioAtMost(0.9)}
		case "u200":
			rateT = &target{"≥ 1.00×", ratioAtLeast(1.0)}
			lossT = &target{"≤ coturn's", func(a, b float64) bool { return a <= b }}
		}
		row(what+": relayed messages/s", l.Name, "msgs_per_s", "%.0f", rateT)
		row(what+": loss %", l.Name, "loss_pct", "%.2f", lossT)
		row(what+": server CPU µs per relayed message", l.Name, "cpu_us_per_msg", "%.2f", cpuT)
	}
	row(fmt.Sprintf("allocations/s (%d workers)", r.plan.AllocWorkers), "allocs", "allocs_per_s", "%.0f", &target{"≥ 1.20×", ratioAtLeast(1.2)})
	row("server CPU µs per allocation", "allocs", "cpu_us_per_alloc", "%.1f", nil)
	row(fmt.Sprintf("RSS with %d allocations held, MiB", r.plan.HoldN), "hold", "rss_held_mib", "%.1f", &target{"≤ 1.00×", ratioAtMost(1.0)})
	row("RSS fresh (no allocation), MiB", "hold", "rss_idle_mib", "%.1f", nil)
	row("RSS per held allocation, KiB", "hold", "kib_per_alloc", "%.2f", nil)

	b.WriteString("\n| HTTP API, signaling (icebox only; median over rounds) | icebox | bare Go handler (ceiling) | icebox/ceiling |\n|---|---:|---:|---:|\n")
	hrow := func(label, key, format string) {
		a, c := r.med("icebox", "http", key), r.med("ceiling", "http", key)
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", label, num(format, a), num(format, c), ratioText(ratio(a, c)))
	}
	hrow(fmt.Sprintf("`GET /calls/ice_servers` requests/s (%d keep-alive clients)", r.plan.HTTPClients), "rps", "%.0f")
	hrow("`GET /calls/ice_servers` p99 latency µs", "p99_us", "%.0f")
	hrow("server CPU µs per request", "cpu_us_per_req", "%.1f")
	fmt.Fprintf(b, "| WebSocket initiate → callee's `CallInvite`, p50 µs | %s | | |\n", num("%.0f", r.med("icebox", "siglat", "p50_us")))
	fmt.Fprintf(b, "| WebSocket initiate → callee's `CallInvite`, p99 µs | %s | | |\n", num("%.0f", r.med("icebox", "siglat", "p99_us")))

	fmt.Fprintf(b, "\n| MatrixRTC `POST /get_token` (%d keep-alive clients, %d users; median over rounds) | verification cached | not cached | cached/not |\n|---|---:|---:|---:|\n", r.plan.HTTPClients, rtcTokens)
	rrow := func(label, key, format string) {
		a, c := r.med("icebox", "get_token_cached", key), r.med("icebox", "get_token_uncached", key)
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", label, num(format, a), num(format, c), ratioText(ratio(a, c)))
	}
	rrow("requests/s", "rps", "%.0f")
	rrow("p50 latency µs", "p50_us", "%.0f")
	rrow("p99 latency µs", "p99_us", "%.0f")
	rrow("server CPU µs per request", "cpu_us_per_req", "%.1f")
	rrow("userinfo requests to the homeserver", "hs_requests", "%.0f")

	d, rl := rtcFrameWorkload(false), rtcFrameWorkload(true)
	fmt.Fprintf(b, "\n| MatrixRTC time from token (JWT from `/sfu/get`) to first decrypted frame, the joiner of a two-party E2EE call (%d joins direct, %d relay-forced) | direct | relay-forced (icebox's TURN) |\n|---|---:|---:|\n",
		len(r.values("icebox", d, "video_ms")), len(r.values("icebox", rl, "video_ms")))
	frow := func(label, key string, stat func([]float64) float64) {
		fmt.Fprintf(b, "| %s | %s | %s |\n", label, num("%.0f", stat(r.values("icebox", d, key))), num("%.0f", stat(r.values("icebox", rl, key))))
	}
	frow("first decrypted video frame, median ms", "video_ms", median)
	frow("first decrypted video frame, p90 ms", "video_ms", p90)
	frow("first decrypted audio, median ms", "audio_ms", median)
	frow("first decrypted audio, p90 ms", "audio_ms", p90)
	frow("LiveKit connected, median ms", "connected_ms", median)
}

func (r *runner) rawTable(b *strings.Builder, workload string, servers []string, cols []column) {
	b.WriteString("| round | server |")
	for _, c := range cols {
		b.WriteString(" " + c.header + " |")
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---:|", len(cols)) + "\n")
	for _, rec := range r.records {
		if rec.Workload != workload || !contains(servers, rec.Server) {
			continue
		}
		fmt.Fprintf(b, "| %d | %s |", rec.Round, rec.Server)
		for _, c := range cols {
			x, ok := rec.V[c.key]
			if !ok {
				x = math.NaN()
			}
			b.WriteString(" " + num(c.format, x) + " |")
		}
		b.WriteString("\n")
	}
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func (r *runner) writeReport(ctx context.Context, outDir string) error {
	var b strings.Builder
	now := time.Now().UTC()
	kind := "measured run"
	if r.plan.Quick {
		kind = "QUICK smoke run (BENCH_QUICK=1: loads divided by 5, figures not for comparison)"
	}
	if r.plan.Only != nil {
		kind = "PARTIAL " + kind + " (-only: some measurements left out)"
	}
	fmt.Fprintf(&b, "# icebox vs coturn — %s\n\n", now.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "%s, %d round(s), %s. Written by `make bench` (`bench/`); method in `bench/README.md`.\n\n",
		kind, r.plan.Rounds, time.Since(r.started).Round(time.Second))

	b.WriteString("## Summary\n\n")
	r.summaryTable(&b)
	b.WriteString("\nRatios are icebox/coturn of the medians: below 1 is better for CPU, loss and memory, above 1 for rates.\n\n")
	r.vethSummary(&b)
	r.rateSummary(&b)
	r.vethHoldSummary(&b)

	b.WriteString("## Machine and versions\n\n")
	for _, kv := range r.machine(ctx) {
		fmt.Fprintf(&b, "- %s: %s\n", kv[0], kv[1])
	}

	b.WriteString("\n## Method and definitions\n\n")
	b.WriteString(methodText(r.plan))

	b.WriteString("\n## Configuration\n\n")
	b.WriteString("Socket buffers as the kernel reports them (`ss -uanmp` in the namespace while the allocations of the memory test were held; rb/tb are the effective SO_RCVBUF/SO_SNDBUF, i.e. twice what was asked, capped by net.core.rmem_max/wmem_max unless forced):\n\n")
	for _, kind := range []string{"icebox", "coturn"} {
		fmt.Fprintf(&b, "- %s: %s\n", kind, orDash(r.buffers[kind]))
	}
	b.WriteString("\nicebox (`icebox serve --config icebox.yaml`; keys not shown keep their defaults, e.g. `turn.udp_sockets` and `turn.socket_buffer`):\n\n```yaml\n")
	b.WriteString(r.sec.redact(iceboxConfig("<temp dir>/state", r.sec)))
	b.WriteString("```\n\ncoturn:\n\n```sh\nturnserver " + r.sec.redact(strings.Join(coturnArgs("<temp dir>", r.sec), " ")) + "\n```\n")

	b.WriteString("\n## Commands\n\nEach runs inside the server's namespace (`ip netns exec <ns> …`), against a server started fresh for it. `bench` is this harness (`bin/icebox-bench`); secrets come from its environment.\n\n```sh\n")
	for _, l := range r.plan.Uclient {
		fmt.Fprintf(&b, "turnutils_uclient %s   # %s\n", r.sec.redact(strings.Join(l.args(r.sec.TURN), " ")), l.Name)
	}
	fmt.Fprintf(&b, "bench allocs --server %s --workers %d --duration %s\n", turnAddr, r.plan.AllocWorkers, r.plan.AllocDuration)
	fmt.Fprintf(&b, "bench hold --server %s --n %d   # holds until the harness has read the server's RSS\n", turnAddr, r.plan.HoldN)
	fmt.Fprintf(&b, "bench httpload --url http://%s/calls/ice_servers --clients %d --duration %s   # against icebox, then against: bench ceiling --body <icebox's body>\n", httpAddr, r.plan.HTTPClients, r.plan.HTTPDuration)
	fmt.Fprintf(&b, "bench siglat --calls %d\n", r.plan.SigCalls)
	fmt.Fprintf(&b, "bench userinfo --listen %s &   # stand-in homeserver; icebox gets the matrixrtc section below\n", userinfoAddr)
	fmt.Fprintf(&b, "bench tokenload --url http://%s/livekit/jwt/get_token --clients %d --tokens %d --duration %s\n```\n", httpAddr, r.plan.HTTPClients, rtcTokens, r.plan.HTTPDuration)
	b.WriteString("\nicebox's MatrixRTC section for the `/get_token` load (verify_cache_ttl 1m0s cached, 0s not):\n\n```yaml\n" + rtcConfig(time.Minute) + "```\n")

	b.WriteString("\n## Every round\n")
	for _, l := range r.plan.Uclient {
		fmt.Fprintf(&b, "\n### turnutils_uclient, %d sessions, %d × %d-byte messages each (%s)\n\n", l.Sessions, l.Messages, l.Bytes, l.Name)
		r.rawTable(&b, l.Name, []string{"icebox", "coturn"}, uclientCols)
	}
	r.vethRaw(&b)
	r.rateRaw(&b)
	fmt.Fprintf(&b, "\n### Allocations, %d workers for %s\n\n", r.plan.AllocWorkers, r.plan.AllocDuration)
	r.rawTable(&b, "allocs", []string{"icebox", "coturn"}, allocsCols)
	fmt.Fprintf(&b, "\n### Memory, %d allocations held\n\n", r.plan.HoldN)
	r.rawTable(&b, "hold", []string{"icebox", "coturn"}, holdCols)
	fmt.Fprintf(&b, "\n### `GET /calls/ice_servers`, %d keep-alive clients for %s\n\n", r.plan.HTTPClients, r.plan.HTTPDuration)
	r.rawTable(&b, "http", []string{"icebox", "ceiling"}, httpCols)
	fmt.Fprintf(&b, "\n### Signaling, %d calls\n\n", r.plan.SigCalls)
	r.rawTable(&b, "siglat", []string{"icebox"}, sigCols)
	fmt.Fprintf(&b, "\n### MatrixRTC `POST /get_token`, verification cached (verify_cache_ttl 1m), %d clients, %d users, %s\n\n", r.plan.HTTPClients, rtcTokens, r.plan.HTTPDuration)
	r.rawTable(&b, "get_token_cached", []string{"icebox"}, rtcCols)
	b.WriteString("\n### MatrixRTC `POST /get_token`, not cached (verify_cache_ttl 0s)\n\n")
	r.rawTable(&b, "get_token_uncached", []string{"icebox"}, rtcCols)
	b.WriteString("\n### MatrixRTC token → first decrypted frame, direct (round = join)\n\n")
	r.rawTable(&b, rtcFrameWorkload(false), []string{"icebox"}, rtcFrameCols)
	b.WriteString("\n### MatrixRTC token → first decrypted frame, relay-forced (round = join)\n\n")
	r.rawTable(&b, rtcFrameWorkload(true), []string{"icebox"}, rtcFrameCols)
	r.gatewayReport(&b) // measure_gateway.go

	var errs []string
	for _, rec := range r.records {
		for _, e := range []struct{ what, text string }{{"failed", rec.Err}, {"warning", rec.Warn}} {
			if e.text != "" {
				errs = append(errs, fmt.Sprintf("- round %d, %s on %s, %s: %s", rec.Round, rec.Workload, rec.Server, e.what, strings.ReplaceAll(e.text, "\n", " ⏎ ")))
			}
		}
	}
	if len(errs) > 0 {
		b.WriteString("\n## Errors\n\nA failed measurement has no figures and is left out of the medians; one with a warning keeps its figures.\n\n" + strings.Join(errs, "\n") + "\n")
	}

	b.WriteString("\n## Profile\n\n")
	stamp := now.Format("2006-01-02T150405Z")
	if r.plan.Quick {
		stamp += "-quick"
	}
	if r.plan.Only != nil {
		stamp += "-partial"
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	switch p := r.profile; {
	case p == nil:
		b.WriteString("No profile was taken.\n")
	case p.File == "":
		fmt.Fprintf(&b, "No profile: %s\n", p.Note)
	default:
		saved := filepath.Join(outDir, stamp+"-icebox-cpu.pprof")
		if data, err := os.ReadFile(p.File); err == nil {
			_ = os.WriteFile(saved, data, 0o644)
		}
		fmt.Fprintf(&b, "icebox CPU profile, %d s, taken during an extra (unmeasured) %s run through `/admin/debug/pprof/profile`; saved as `%s` (not committed). `go tool pprof -top`:\n\n```\n%s```\n",
			r.plan.ProfileSecs, p.Load, filepath.Base(saved), p.Top)
		if p.Note != "" {
			fmt.Fprintf(&b, "\n%s\n", p.Note)
		}
	}

	path := filepath.Join(outDir, stamp+".md")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: report %s\n", path)
	if !r.plan.Quick && r.plan.Only == nil {
		latest := filepath.Join(outDir, "latest.md")
		if err := os.WriteFile(latest, []byte(b.String()), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: report %s\n", latest)
	}
	fmt.Fprintln(os.Stderr)
	var sum strings.Builder
	r.summaryTable(&sum)
	fmt.Fprint(os.Stderr, sum.String())
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

// machine describes the machine and the programs under test.
func (r *runner) machine(ctx context.Context) [][2]string {
	var kv [][2]string
	add := func(k, v string) { kv = append(kv, [2]string{k, strings.TrimSpace(v)}) }
	add("CPU", cpuModel())
	add("cores", fmt.Sprint(runtime.NumCPU()))
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		add("kernel", unix.ByteSliceToString(u.Release[:])+" "+unix.ByteSliceToString(u.Machine[:]))
	}
	add("memory", memTotal())
	var sysctls []string
	for _, k := range []string{"rmem_max", "wmem_max", "rmem_default", "wmem_default", "netdev_max_backlog"} {
		if data, err := os.ReadFile("/proc/sys/net/core/" + k); err == nil {
			sysctls = append(sysctls, "net.core."+k+"="+strings.TrimSpace(string(data)))
		}
	}
	add("sysctls", strings.Join(sysctls, ", "))
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		add("load average at the end", string(data))
	}
	add("icebox", cmdOutput(ctx, r.bins.icebox, "version"))
	add("coturn", cmdOutput(ctx, r.bins.turnserver, "--version")+" (Debian package "+cmdOutput(ctx, "dpkg-query", "-W", "-f", "${Version}", "coturn")+")")
	goVer := "harness built with " + runtime.Version()
	if r.bins.goTool != "" {
		goVer = cmdOutput(ctx, r.bins.goTool, "version") + "; " + goVer
	}
	add("Go", goVer)
	add("state directory filesystem", fsType(r.tmp))
	return kv
}

func cmdOutput(ctx context.Context, name string, args ...string) string {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("? (%s: %v)", name, err)
	}
	return strings.TrimSpace(string(out))
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func memTotal() string {
	data, _ := os.ReadFile("/proc/meminfo")
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			var kib int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kib)
			return fmt.Sprintf("%.1f GiB", float64(kib)/(1<<20))
		}
	}
	return "?"
}

// fsType is the filesystem type of the mount holding path.
func fsType(path string) string {
	data, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "?"
	}
	best, typ := "", "?"
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mnt := f[1]
		if (path == mnt || strings.HasPrefix(path, strings.TrimSuffix(mnt, "/")+"/")) && len(mnt) > len(best) {
			best, typ = mnt, f[2]+" on "+mnt
		}
	}
	return typ
}

func methodText(p plan) string {
	return fmt.Sprintf(`- **Interleaved**: %d round(s); in each, every load runs on icebox and on coturn back to back (icebox first in odd
  rounds, coturn first in even ones). Every measurement starts the server fresh and stops it after. Figures are medians over
  the rounds; a failed measurement is left out.
- **Isolation**: each server runs in its own network namespace (loopback only) and is reached on 127.0.0.1:3478; the load
  generator runs inside the same namespace. Relay ports %d–%d, client ephemeral ports %d–%d (disjoint).
- **Server CPU** = utime+stime of the server process (/proc/<pid>/stat, all threads, 10 ms ticks) from just before the load
  generator starts to just after it exits. **RSS** = VmRSS of /proc/<pid>/status.
- **turnutils_uclient -y** (client to client): sessions pair up; each message goes client → server → the partner's relay
  (a second pass through the same server) → partner. A **relayed message** is one message delivered end to end
  (uclient's tot_recv_msgs); the server handles it as 2 receives and 2 sends (icebox counts it as 1 to_peer + 1
  from_peer packet). The namespace's UDP counters also count the clients' own sockets, so InDatagrams grows by 3 per
  message ("ns InDatagrams/3" cross-checks uclient's count).
- **msgs/s** = 0.98 × relayed messages / the time in which the namespace's InDatagrams went from 1 %% to 99 %% of its
  growth (uclient allocates for seconds before sending and waits for stragglers after; neither is throughput).
- **loss %%** = uclient's "Total lost packets" percentage. "ns RcvbufErrors" counts receive-buffer overflows of every
  socket in the namespace (server and clients); "server socket drops" sums the drop counters (ss skmem d) of the server's
  own sockets still open at the end.
- **CPU µs per relayed message** = server CPU over the whole uclient run (its allocations included) / relayed messages.
- **Allocations/s**: %d workers of pion's TURN client, each looping {new UDP socket, Allocate (401, then authenticated),
  close the relay (Refresh lifetime 0, not waiting for the answer), close the socket} for %s; allocations/s = successful
  Allocates / elapsed; CPU µs per allocation = server CPU / successful Allocates.
- **Memory**: %d allocations made by pion clients (one socket each, 32 at a time) and held; RSS read 2 s after the last one.
- **HTTP**: %d clients, one keep-alive connection each, GET /calls/ice_servers back to back for %s; the ceiling is a bare
  net/http handler that checks the bearer token and returns the very body icebox returned, in the same namespace.
- **Signaling**: alice and bob on WebSockets; alice sends the "initiate" command; latency = until bob's CallInvite arrives.
  Then alice hangs up and both wait for it; %d calls one after another. icebox's state is bbolt on the filesystem below
  (each transition is an fsync'd transaction).
- **MatrixRTC /get_token**: %d clients, one keep-alive connection each, POST /livekit/jwt/get_token back to back for %s,
  cycling through %d users' OpenID tokens; icebox verifies them at a stand-in homeserver in the same namespace that
  answers userinfo at once (bench userinfo), so "not cached" is icebox's own cost of a verification round trip on
  loopback — a real homeserver adds its lookup and, over federation, the network and TLS. No user has full access:
  no LiveKit room is created. "cached" keeps verifications for verify_cache_ttl 1m (the default).
- **MatrixRTC token → first decrypted frame**: go test -run TestMatrixRTCFirstFrame ./cmd/icebox/ (the MatrixRTC browser
  bed: Dendrite, icebox with /sfu/get, the real livekit-server, Chromium running matrix-js-sdk's MatrixRTC session and
  livekit-client with per-participant E2EE). Each join is a new two-party call in a new encrypted room; the figure is the
  second joiner's, from its JWT (/sfu/get answered) to the first remote video frame decoded (framesDecoded > 0) and the
  first audio decoded (samples not concealed) on an encrypted track, polled in the page every 20 ms; livekit-client drops
  frames it cannot decrypt, so decoded means decrypted. It includes LiveKit's signalling, ICE, DTLS, the MatrixRTC
  media keys' to-device delivery and the first keyframe. Relay-forced: iceTransportPolicy "relay", media through icebox's
  TURN with LiveKit's scoped credentials. Run once per bench (not per round); n joins of each kind.
`, p.Rounds, relayMin, relayMax, ephemeralMin, ephemeralMax, p.AllocWorkers, p.AllocDuration, p.HoldN, p.HTTPClients, p.HTTPDuration, p.SigCalls,
		p.HTTPClients, p.HTTPDuration, rtcTokens)
}
