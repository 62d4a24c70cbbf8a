//go:build linux

package main

// The rate at the loss point and the one-way latency across veth (issue
// 20), three ways: `bench relayrate` (gen_relayrate.go) in the client
// namespace against coturn, icebox in user space and icebox's kernel path,
// each in a fresh veth bed. After the run the allocations are still alive
// (the generator leaves without releasing them): the server's memory per
// allocation, and with the kernel path the memory of its eBPF maps
// (bpftool's bytes_memlock, which for these hash maps is what their
// entries use) per bound channel, are read then.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// rateSessions are the session counts of the rate measurement.
func (p plan) rateSessions() []int {
	if len(p.RateSessions) > 0 {
		return p.RateSessions
	}
	if p.Quick {
		return []int{20, 100}
	}
	return []int{20, 100, 1000}
}

func rateLoad(sessions int) string { return fmt.Sprintf("rate%d", sessions) }

// kernelMapNames are the kernel path's maps (bpf/relay.c).
var kernelMapNames = map[string]bool{"to_client": true, "to_peer": true, "alloc_counters": true, "stats": true, "scratch": true}

// kernelMapBytes sums bpftool's bytes_memlock over the kernel path's maps
// (one icebox runs at a time in the bench).
func kernelMapBytes(ctx context.Context) (float64, error) {
	out, err := exec.CommandContext(ctx, "bpftool", "-j", "map", "show").Output()
	if err != nil {
		return 0, fmt.Errorf("bpftool map show: %w", err)
	}
	var maps []struct {
		Name  string `json:"name"`
		Bytes int64  `json:"bytes_memlock"`
	}
	if err := json.Unmarshal(out, &maps); err != nil {
		return 0, fmt.Errorf("bpftool map show: %w", err)
	}
	var sum int64
	for _, m := range maps {
		if kernelMapNames[m.Name] {
			sum += m.Bytes
		}
	}
	return float64(sum), nil
}

func (r *runner) measureRate(ctx context.Context, round int, kind string, sessions int) record {
	name := rateLoad(sessions)
	bed, err := newVethBed(ctx)
	if err != nil {
		return failed(round, kind, name, err)
	}
	defer bed.delete()
	pin := r.plan.ratePin()
	if err := pin.apply(ctx, bed, r.plan.RateGSO, r.plan.RateVethGRO); err != nil {
		return failed(round, kind, name, err)
	}
	if r.plan.RateBacklog > 0 {
		restore, err := setBacklog(r.plan.RateBacklog)
		if err != nil {
			return failed(round, kind, name, err)
		}
		defer restore()
	}
	srv, err := startVethServer(ctx, kind, bed.server, r.tmp, r.bins, r.sec, pin.server)
	if err != nil {
		return failed(round, kind, name, err)
	}
	defer srv.stop()
	idle, err := readMem(srv.pid)
	if err != nil {
		return failed(round, kind, name, err)
	}
	maps0 := math.NaN()
	if kind == kindKernel {
		if maps0, err = kernelMapBytes(ctx); err != nil {
			return failed(round, kind, name, err)
		}
	}
	args := []string{"relayrate", "--server", vethServerIP + ":3478", "--bind", vethClientIP,
		"--sessions", strconv.Itoa(sessions), "--step", r.plan.RateStep.String(), "--burst", strconv.Itoa(max(r.plan.RateBurst, 1)),
		"--server-pid", strconv.Itoa(srv.pid), "--gso=" + strconv.FormatBool(r.plan.RateGSO)}
	var res rateResult
	if err := r.runGenOn(ctx, bed.client, pin.gen, &res, args...); err != nil {
		return failed(round, kind, name, err)
	}
	if err := srv.alive(); err != nil {
		return failed(round, kind, name, err)
	}
	mem, err := readMem(srv.pid)
	if err != nil {
		return failed(round, kind, name, err)
	}
	v := map[string]float64{
		"knee_msgs_per_s": res.Knee,
		"kib_per_alloc":   float64(mem.RSSKiB-idle.RSSKiB) / float64(sessions),
		"setup_s":         res.SetupSecs,
		"steps":           float64(len(res.Steps)),
		"p50_us":          math.NaN(), "p99_us": math.NaN(),
		"knee_p50_us": math.NaN(), "knee_p99_us": math.NaN(),
		"map_bytes_per_channel": math.NaN(),
	}
	if len(res.Steps) > 0 {
		// Latency at the first rate, the same offered load for all.
		v["p50_us"], v["p99_us"] = res.Steps[0].P50us, res.Steps[0].P99us
		v["low_rate"] = res.Steps[0].Offered
	}
	for _, k := range []string{"knee_gen_cpu", "knee_server_cpu", "knee_gen_core", "knee_server_core", "knee_server_softirq",
		"stop_gen_cpu", "stop_server_cpu", "stop_gen_core", "stop_server_core", "stop_server_softirq"} {
		v[k] = math.NaN()
	}
	for i, st := range res.Steps {
		if st.Offered == res.Knee {
			v["knee_p50_us"], v["knee_p99_us"] = st.P50us, st.P99us
			pin.cpuFigures(v, "knee_", st.CPU)
		}
		if i == len(res.Steps)-1 { // the step that ended the stepping
			pin.cpuFigures(v, "stop_", st.CPU)
		}
	}
	if kind == kindKernel {
		maps1, err := kernelMapBytes(ctx)
		if err != nil {
			return failed(round, kind, name, err)
		}
		v["map_bytes_per_channel"] = (maps1 - maps0) / float64(sessions)
	}
	steps := make([]string, 0, len(res.Steps))
	for _, st := range res.Steps {
		steps = append(steps, fmt.Sprintf("%.0f→%.0f/s %.2f%% p50 %.0fµs p99 %.0fµs CPU gen %.0f%% server %.0f%% busy %s softirq %s; drops gen %d server %d backlog %v",
			st.Offered, st.SentRate, st.LossPct, st.P50us, st.P99us, 100*st.CPU.Gen, 100*st.CPU.Server, percents(st.CPU.Busy),
			percents(st.CPU.Softirq), st.CPU.GenDrops, st.CPU.ServerDrops, st.CPU.BacklogDrops))
	}
	rec := record{Round: round, Server: kind, Workload: name, V: v}
	switch res.Limit {
	case "generator":
		rec.Warn = fmt.Sprintf("generator-bound: the generator offered at most %.0f msgs/s, without loss above 0.1 %%; the knee is higher", res.Knee)
	case "steps":
		rec.Warn = fmt.Sprintf("generator-bound: no loss above 0.1 %% up to the last rate, %.0f msgs/s; the knee is higher", res.Knee)
	}
	r.rateSteps = append(r.rateSteps, fmt.Sprintf("round %d %s %s (%s): %s", round, kind, name, res.Limit, strings.Join(steps, "; ")))
	return rec
}

var rateCols = []column{
	{"knee_msgs_per_s", "msgs/s at < 0.1 % loss", "%.0f"},
	{"p50_us", "p50 one-way µs (lowest rate)", "%.0f"}, {"p99_us", "p99 one-way µs (lowest rate)", "%.0f"},
	{"knee_p50_us", "p50 µs at the knee", "%.0f"}, {"knee_p99_us", "p99 µs at the knee", "%.0f"},
	{"kib_per_alloc", "server RSS KiB per allocation", "%.1f"}, {"map_bytes_per_channel", "eBPF map bytes per channel", "%.0f"},
	{"setup_s", "setup s", "%.1f"},
	{"stop_gen_core", "generator's core busy % at the stop step", "%.0f"}, {"stop_server_core", "server's core busy % at the stop step", "%.0f"},
	{"stop_gen_cpu", "generator process CPU % at the stop step", "%.0f"}, {"stop_server_cpu", "server process CPU % at the stop step", "%.0f"},
	{"stop_server_softirq", "softirq % of the server's core at the stop step", "%.0f"},
}

// rateSummary is the three-way table of the rate loads (medians).
func (r *runner) rateSummary(b *strings.Builder) {
	if !r.plan.runs("rate") {
		return
	}
	b.WriteString("## Across veth: the rate at the loss point and one-way latency (issue 20)\n\n")
	if r.plan.RateBurst > 1 {
		fmt.Fprintf(b, "Each session sends %d datagrams back to back before the next session's turn ($BENCH_RATE_BURST). ", r.plan.RateBurst)
	}
	fmt.Fprintf(b, "`bench relayrate` in a client namespace: N sessions (raw TURN, paired: each sends ChannelData to its partner's relay address, as uclient -y), the offered rate stepped up (%s per step) until a step loses more than 0.1 %%; the knee is the highest rate with ≤ 0.1 %% loss. ", r.plan.RateStep)
	b.WriteString("Latency: send time in the payload, read on arrival by the partner session in the same process (one clock), so one-way client → relay → client including both veth crossings. ")
	if pin := r.plan.ratePin(); pin.gen != "" {
		fmt.Fprintf(b, "The generator runs on CPU %s and the server on CPU %s (taskset; the veths' receive steering puts each side's softirq, the kernel path's included, on its side's CPU). ", pin.gen, pin.server)
		b.WriteString("The CPU rows say who ran out at the step that ended the stepping: the busy time of each side's core (its softirq and any other work on the machine included) and each process's own CPU. ")
	} else {
		b.WriteString("The generator shares the machine's cores with the server. ")
	}
	if r.plan.RateGSO {
		b.WriteString("The generator sends each burst as one GSO message, cut into datagrams as it leaves the client namespace. ")
	}
	if r.plan.RateVethGRO {
		b.WriteString("The server's veth does GRO (NAPI), as a NIC's driver does. ")
	}
	if r.plan.RateBacklog > 0 {
		fmt.Fprintf(b, "Each CPU's input backlog holds %d packets (net.core.netdev_max_backlog, during these loads only). ", r.plan.RateBacklog)
	}
	if g := os.Getenv("BENCH_ICEBOX_GRO"); g != "" {
		fmt.Fprintf(b, "icebox runs with `turn.udp_gro: %s`. ", g)
	}
	b.WriteString("Where the generator could not offer the next rate, the knee is marked ≥ (generator-bound). Medians over rounds; ratios to coturn.\n\n")
	b.WriteString("| load | measure | coturn | icebox | icebox kernel | icebox/coturn | kernel/coturn |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, n := range r.plan.rateSessions() {
		w := rateLoad(n)
		for _, c := range rateCols {
			co, ib, ik := r.med("coturn", w, c.key), r.med("icebox", w, c.key), r.med(kindKernel, w, c.key)
			cell := func(kind string, x float64) string {
				s := num(c.format, x)
				if c.key == "knee_msgs_per_s" && r.generatorBound(kind, w) {
					s = "≥ " + s
				}
				return s
			}
			fmt.Fprintf(b, "| %d sessions | %s | %s | %s | %s | %s | %s |\n", n, c.header,
				cell("coturn", co), cell("icebox", ib), cell(kindKernel, ik), ratioText(ib/co), ratioText(ik/co))
		}
	}
	b.WriteString("\n")
}

func (r *runner) generatorBound(kind, workload string) bool {
	for _, rec := range r.records {
		if rec.Server == kind && rec.Workload == workload && strings.HasPrefix(rec.Warn, "generator-bound") {
			return true
		}
	}
	return false
}

// rateRaw writes every round of the rate loads and their steps.
func (r *runner) rateRaw(b *strings.Builder) {
	if !r.plan.runs("rate") {
		return
	}
	for _, n := range r.plan.rateSessions() {
		fmt.Fprintf(b, "\n### Across veth: rate steps, %d sessions (%s)\n\n", n, rateLoad(n))
		r.rawTable(b, rateLoad(n), vethKinds, rateCols)
	}
	b.WriteString("\nSteps (offered → sent msgs/s, loss, one-way latency):\n\n")
	for _, s := range r.rateSteps {
		fmt.Fprintf(b, "- %s\n", s)
	}
}

// measureVethHold holds the plan's idle allocations (10 000) across veth
// on kind: memory per allocation, and with the kernel path the memory of
// its maps (idle allocations have no channel: nothing of theirs enters
// the maps, whose fixed part is reported).
func (r *runner) measureVethHold(ctx context.Context, round int, kind string) record {
	bed, err := newVethBed(ctx)
	if err != nil {
		return failed(round, kind, "veth-hold", err)
	}
	defer bed.delete()
	srv, err := startVethServer(ctx, kind, bed.server, r.tmp, r.bins, r.sec, "")
	if err != nil {
		return failed(round, kind, "veth-hold", err)
	}
	defer srv.stop()
	rec := r.hold(ctx, round, kind, "veth-hold", srv, bed.client, vethServerIP+":3478", vethClientIP)
	if rec.Err == "" {
		rec.V["map_bytes"] = math.NaN()
		if kind == kindKernel {
			b, err := kernelMapBytes(ctx)
			if err != nil {
				return failed(round, kind, "veth-hold", err)
			}
			rec.V["map_bytes"] = b
		}
	}
	return rec
}

var vethHoldCols = []column{
	{"held", "allocations held", "%.0f"}, {"kib_per_alloc", "server RSS KiB per idle allocation", "%.1f"},
	{"rss_held_mib", "server RSS MiB, all held", "%.1f"}, {"map_bytes", "eBPF map bytes (all; idle allocations add none)", "%.0f"},
}

func (r *runner) vethHoldSummary(b *strings.Builder) {
	if !r.plan.runs("vethhold") {
		return
	}
	fmt.Fprintf(b, "## Across veth: %d idle allocations (issue 20)\n\n", r.plan.HoldN)
	b.WriteString("`bench hold` in the client namespace holds the allocations (no permission, no channel) while the server's RSS is read; the kernel path's maps (bpftool bytes_memlock) are read after. Medians over rounds; ratios to coturn.\n\n")
	b.WriteString("| measure | coturn | icebox | icebox kernel | icebox/coturn | kernel/coturn |\n|---|---:|---:|---:|---:|---:|\n")
	for _, c := range vethHoldCols {
		co, ib, ik := r.med("coturn", "veth-hold", c.key), r.med("icebox", "veth-hold", c.key), r.med(kindKernel, "veth-hold", c.key)
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", c.header, num(c.format, co), num(c.format, ib), num(c.format, ik), ratioText(ib/co), ratioText(ik/co))
	}
	b.WriteString("\n")
}

// ratePinning places the rate loads on the machine's CPUs: the generator
// on one, the server — its process, and through the veth's receive
// steering (RPS) the softirq work of the packets it receives, where the
// kernel path runs — on another, and the client namespace's receive
// softirq on the generator's. Without it veth delivers a packet in the
// sender's context: the kernel path's work lands on the generator's CPU,
// and the two compete for both cores.
type ratePinning struct {
	gen, server       string // taskset -c lists; "" not pinned
	genCPU, serverCPU int
}

// ratePin is the plan's pinning: on with two CPUs or more unless
// BENCH_RATE_PIN=0 (the generator on CPU 0, the server on the last).
func (p plan) ratePin() ratePinning {
	n := runtime.NumCPU()
	if !p.RatePin || n < 2 {
		return ratePinning{genCPU: -1, serverCPU: -1}
	}
	return ratePinning{gen: "0", server: strconv.Itoa(n - 1), genCPU: 0, serverCPU: n - 1}
}

// apply sets the beds' receive steering (rps_cpus of each veth's queue)
// and, for a GSO generator, turns UDP segmentation offload off on the
// client's veth: the kernel then cuts the generator's bursts into
// datagrams as they leave the client namespace (on the generator's CPU),
// and the server receives plain datagrams, as from real clients.
//
// With vethGRO the server's veth does GRO (NAPI), as a NIC's driver does:
// a flow's datagrams that arrive together are coalesced for sockets that
// asked for it (UDP_GRO).
func (pin ratePinning) apply(ctx context.Context, bed *vethBed, gso, vethGRO bool) error {
	var cmds [][]string
	if pin.gen != "" {
		cmds = append(cmds,
			[]string{"ip", "netns", "exec", bed.server.name, "sh", "-c", fmt.Sprintf("echo %x > /sys/class/net/vbs/queues/rx-0/rps_cpus", 1<<pin.serverCPU)},
			[]string{"ip", "netns", "exec", bed.client.name, "sh", "-c", fmt.Sprintf("echo %x > /sys/class/net/vbc/queues/rx-0/rps_cpus", 1<<pin.genCPU)})
	}
	if gso {
		cmds = append(cmds, []string{"ip", "netns", "exec", bed.client.name, "ethtool", "-K", "vbc", "tx-udp-segmentation", "off"})
	}
	if vethGRO {
		cmds = append(cmds, []string{"ip", "netns", "exec", bed.server.name, "ethtool", "-K", "vbs", "gro", "on"})
	}
	for _, args := range cmds {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// cpuFigures puts a step's CPU into v under prefix, in percent of one
// core: the generator's and the server's processes, and the busy time of
// the core each was pinned to (softirq and any other work there included).
func (pin ratePinning) cpuFigures(v map[string]float64, prefix string, c stepCPU) {
	v[prefix+"gen_cpu"], v[prefix+"server_cpu"] = 100*c.Gen, 100*c.Server
	if pin.genCPU >= 0 && pin.serverCPU < len(c.Busy) {
		v[prefix+"gen_core"], v[prefix+"server_core"] = 100*c.Busy[pin.genCPU], 100*c.Busy[pin.serverCPU]
		v[prefix+"server_softirq"] = 100 * c.Softirq[pin.serverCPU]
	}
}

func percents(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("cpu%d %.0f%%", i, 100*x)
	}
	return strings.Join(parts, " ")
}

// rateKinds is vethOrder(round) less the servers $BENCH_RATE_KINDS leaves
// out.
func (p plan) rateKinds(round int) []string {
	var out []string
	for _, k := range vethOrder(round) {
		if p.RateKinds == nil || p.RateKinds[k] {
			out = append(out, k)
		}
	}
	return out
}

// backlogSysctl is the length of each CPU's input backlog: with receive
// steering, the queue between the CPU a packet arrives on and the one
// that processes it (a NIC's ring plays this part on real hardware).
const backlogSysctl = "/proc/sys/net/core/netdev_max_backlog"

// setBacklog sets the machine's netdev_max_backlog to n and returns a
// function that puts the old value back.
func setBacklog(n int) (func(), error) {
	old, err := os.ReadFile(backlogSysctl)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(backlogSysctl, []byte(strconv.Itoa(n)), 0o644); err != nil {
		return nil, fmt.Errorf("netdev_max_backlog: %w", err)
	}
	return func() { _ = os.WriteFile(backlogSysctl, old, 0o644) }, nil
}
