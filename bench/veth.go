//go:build linux

package main

// The relay across a veth pair (issue 20, the kernel path): turnutils_uclient
// -y in a client namespace, the server in its own, joined by a veth pair —
// not loopback, so icebox's kernel path (eBPF at tc ingress) can run. Three
// servers, interleaved: coturn, icebox relaying in user space, and icebox
// with turn.kernel_path: required. Both namespaces are made fresh for each
// measurement and deleted after it.
//
// CPU: the kernel path's work is softirq, not the server process's time.
// This kernel charges softirq either to /proc/stat's softirq column (with
// IRQ time accounting) or to the task it interrupts — here mostly
// uclient's sends, since veth delivers in the sender's context. The report
// therefore gives the server process's CPU, uclient's CPU, and the whole
// machine's softirq time, each per relayed message; on a machine shared
// with other work the last is an upper bound.

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	vethServerIP = "10.77.0.1"
	vethClientIP = "10.77.0.2"
	// kindKernel is icebox with the kernel path, in records and reports.
	kindKernel = "icebox-kernel"
)

// vethKinds are the servers of the veth measurement, in round 1's order.
var vethKinds = []string{"icebox", kindKernel, "coturn"}

// vethLoad names the veth variant of a uclient load.
func vethLoad(l uclientLoad) string { return "veth-" + l.Name }

// vethBed is a server namespace and a client namespace joined by veth.
type vethBed struct{ server, client *netns }

func newVethBed(ctx context.Context) (*vethBed, error) {
	suffix := strings.ToLower(rand.Text()[:6])
	s, err := newNetns(ctx, "ibv-s-"+suffix)
	if err != nil {
		return nil, err
	}
	c, err := newNetns(ctx, "ibv-c-"+suffix)
	if err != nil {
		_ = s.delete()
		return nil, err
	}
	b := &vethBed{server: s, client: c}
	for _, args := range [][]string{
		{"ip", "-n", s.name, "link", "add", "vbs", "type", "veth", "peer", "name", "vbc", "netns", c.name},
		{"ip", "-n", s.name, "addr", "add", vethServerIP + "/24", "dev", "vbs"},
		{"ip", "-n", c.name, "addr", "add", vethClientIP + "/24", "dev", "vbc"},
		{"ip", "-n", s.name, "link", "set", "vbs", "up"},
		{"ip", "-n", c.name, "link", "set", "vbc", "up"},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			b.delete()
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return b, nil
}

func (b *vethBed) delete() {
	for _, ns := range []*netns{b.client, b.server} {
		if err := ns.delete(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		}
	}
}

// vethIceboxConfig is iceboxConfig listening on the veth address too (the
// kernel path serves listeners bound to a specific address; loopback stays
// for the readiness checks) with relays on the veth address.
func vethIceboxConfig(stateDir string, s secrets, kernelPath string) string {
	cfg := iceboxConfig(stateDir, s)
	cfg = strings.Replace(cfg, fmt.Sprintf("udp: [%q]", turnAddr), fmt.Sprintf("udp: [%q, %q]", turnAddr, vethServerIP+":3478"), 1)
	cfg = strings.Replace(cfg, "bind_ip: 127.0.0.1", "bind_ip: "+vethServerIP, 1)
	return strings.Replace(cfg, "\nturn:\n", "\nturn:\n  kernel_path: "+kernelPath+"\n", 1)
}

// vethCoturnArgs is coturnArgs listening and relaying on the veth address
// too.
func vethCoturnArgs(dir string, s secrets) []string {
	return append(coturnArgs(dir, s), "-L", vethServerIP, "--relay-ip="+vethServerIP)
}

// startVethServer starts kind in ns; with cpus ("" none) pinned to those
// CPUs (taskset -c: every thread, from the start).
func startVethServer(ctx context.Context, kind string, ns *netns, tmp string, bins binaries, s secrets, cpus string) (*server, error) {
	dir, err := os.MkdirTemp(tmp, kind+"-veth-")
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	switch kind {
	case "icebox", kindKernel:
		mode := "off"
		if kind == kindKernel {
			mode = "required" // fail rather than measure user space twice
		}
		cfg := filepath.Join(dir, "icebox.yaml")
		if err := os.WriteFile(cfg, []byte(vethIceboxConfig(filepath.Join(dir, "state"), s, mode)), 0o600); err != nil {
			return nil, err
		}
		cmd = ns.command(context.Background(), bins.icebox, "serve", "--config", cfg)
		cmd.Env = serverEnv()
	case "coturn":
		cmd = ns.command(context.Background(), bins.turnserver, vethCoturnArgs(dir, s)...)
	default:
		return nil, fmt.Errorf("unknown server %q", kind)
	}
	if cpus != "" {
		// ip netns exec NS taskset -c CPUS PROGRAM ARGS: taskset execs the
		// server, so the PID stays the server's.
		args := append(slices.Clone(cmd.Args[:4]), "taskset", "-c", cpus)
		cmd.Args = append(args, cmd.Args[4:]...)
	}
	p, err := startProc(kind, cmd, filepath.Join(dir, kind+".out"))
	if err != nil {
		return nil, err
	}
	srvKind := kind
	if kind == kindKernel {
		srvKind = "icebox" // readiness: /readyz as well
	}
	srv := &server{proc: p, kind: srvKind, ns: ns, http: nsHTTPClient(ns)}
	if err := srv.waitReady(ctx); err != nil {
		srv.stop()
		return nil, fmt.Errorf("%s: %w; output:\n%s", kind, err, p.logTail())
	}
	return srv, nil
}

// machineSoftirq reads the softirq time of all CPUs (/proc/stat), in ticks.
func machineSoftirq() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq …
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	return strconv.ParseInt(f[7], 10, 64)
}

// measureVeth runs load l with uclient across the veth pair against kind.
func (r *runner) measureVeth(ctx context.Context, round int, kind string, l uclientLoad) record {
	name := vethLoad(l)
	bed, err := newVethBed(ctx)
	if err != nil {
		return failed(round, kind, name, err)
	}
	defer bed.delete()
	srv, err := startVethServer(ctx, kind, bed.server, r.tmp, r.bins, r.sec, "")
	if err != nil {
		return failed(round, kind, name, err)
	}
	defer srv.stop() // before the namespaces go (deferred calls run last first)
	s0, err := srv.sample()
	if err != nil {
		return failed(round, kind, name, err)
	}
	si0, err := machineSoftirq()
	if err != nil {
		return failed(round, kind, name, err)
	}
	args := l.args(r.sec.TURN)
	args[len(args)-1] = vethServerIP
	uctx, cancel := context.WithTimeout(ctx, uclientTimeout)
	defer cancel()
	cmd := bed.client.command(uctx, r.bins.uclient, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return failed(round, kind, name, err)
	}
	// The client namespace's datagram counter (uclient is its only
	// socket owner) dates the flow: with the kernel path no datagram
	// reaches the server's sockets.
	stop := make(chan struct{})
	var ats []time.Time
	var ins []int64
	var sampling sync.WaitGroup
	sampling.Go(func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			// Until `ip netns exec` has exec'd uclient, the PID's
			// counters are the root namespace's.
			if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid)); err == nil &&
				strings.HasPrefix(string(comm), "turnutils_uclie") {
				if u, err := readUDP(cmd.Process.Pid); err == nil {
					ats, ins = append(ats, time.Now()), append(ins, u.InDatagrams)
				}
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	waitErr := cmd.Wait()
	close(stop)
	sampling.Wait()
	_ = os.WriteFile(filepath.Join(r.tmp, fmt.Sprintf("uclient-%s-%s-r%d.txt", name, kind, round)), out.Bytes(), 0o644)
	if uctx.Err() != nil {
		return failed(round, kind, name, fmt.Errorf("turnutils_uclient did not finish within %s", uclientTimeout))
	}
	if err := srv.alive(); err != nil {
		return failed(round, kind, name, err)
	}
	s1, err := srv.sample()
	if err != nil {
		return failed(round, kind, name, err)
	}
	si1, err := machineSoftirq()
	if err != nil {
		return failed(round, kind, name, err)
	}
	res, err := parseUclient(out.String())
	if err != nil {
		return failed(round, kind, name, fmt.Errorf("%v (exit: %v); output:\n%s", err, waitErr, tail(out.String(), 10)))
	}
	window, err := activeWindow(ats, ins, 0.01, 0.99)
	if err != nil {
		return failed(round, kind, name, err)
	}
	msgs := float64(res.Received)
	serverUS := ticksToMicros(s1.ticks - s0.ticks)
	softirqUS := ticksToMicros(si1 - si0)
	clientUS := float64((cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Microseconds())
	v := map[string]float64{
		"msgs_per_s":         0.98 * msgs / window.Seconds(),
		"loss_pct":           res.LostPercent,
		"cpu_us_per_msg":     serverUS / msgs,
		"softirq_us_per_msg": softirqUS / msgs,
		"server_softirq_us":  (serverUS + softirqUS) / msgs,
		"client_us_per_msg":  clientUS / msgs,
		"received":           msgs,
		"lost":               float64(res.Lost),
		"window_s":           window.Seconds(),
		"rtt_ms":             res.RTTms,
	}
	if res.Received == 0 {
		for _, k := range []string{"cpu_us_per_msg", "softirq_us_per_msg", "server_softirq_us", "client_us_per_msg"} {
			v[k] = math.NaN()
		}
	}
	return record{Round: round, Server: kind, Workload: name, V: v}
}

// vethLoads are the uclient loads measured across veth: 100 and 200
// sessions (issue 20's targets).
func (p plan) vethLoads() []uclientLoad {
	var out []uclientLoad
	for _, l := range p.Uclient {
		if l.Name == "u100" || l.Name == "u200" {
			out = append(out, l)
		}
	}
	return out
}

// vethOrder rotates the servers by round, so none is always first.
func vethOrder(round int) []string {
	n := len(vethKinds)
	out := make([]string, n)
	for i := range n {
		out[i] = vethKinds[(i+round-1)%n]
	}
	return out
}

var vethCols = []column{
	{"msgs_per_s", "msgs/s", "%.0f"}, {"loss_pct", "loss %", "%.2f"},
	{"cpu_us_per_msg", "server CPU µs/msg", "%.2f"}, {"softirq_us_per_msg", "machine softirq µs/msg", "%.2f"},
	{"server_softirq_us", "server + softirq µs/msg", "%.2f"}, {"client_us_per_msg", "uclient CPU µs/msg", "%.2f"},
	{"received", "received", "%.0f"}, {"lost", "lost", "%.0f"}, {"window_s", "window s", "%.2f"}, {"rtt_ms", "RTT ms", "%.2f"},
}

// vethSummary is the three-way table of the veth loads (medians).
func (r *runner) vethSummary(b *strings.Builder) {
	loads := r.plan.vethLoads()
	if len(loads) == 0 || !r.plan.runs("veth") {
		return
	}
	b.WriteString("## Across veth: coturn, icebox in user space, icebox's kernel path (issue 20)\n\n")
	b.WriteString("turnutils_uclient -y in a client namespace, the server in another, joined by a veth pair (the kernel path needs a real device). ")
	b.WriteString("Medians over rounds; ratios to coturn. \"server + softirq\" adds the whole machine's softirq time per message, where the kernel path's work is accounted (an upper bound on a shared machine); uclient's CPU is shown because softirq may be charged to the sending task instead.\n\n")
	b.WriteString("| load | measure | coturn | icebox | icebox kernel | icebox/coturn | kernel/coturn |\n|---|---|---:|---:|---:|---:|---:|\n")
	for _, l := range loads {
		w := vethLoad(l)
		for _, c := range vethCols[:6] {
			co, ib, ik := r.med("coturn", w, c.key), r.med("icebox", w, c.key), r.med(kindKernel, w, c.key)
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", l.Name, c.header,
				num(c.format, co), num(c.format, ib), num(c.format, ik), ratioText(ib/co), ratioText(ik/co))
		}
	}
	b.WriteString("\n")
}

// vethRaw writes every round of the veth loads.
func (r *runner) vethRaw(b *strings.Builder) {
	if !r.plan.runs("veth") {
		return
	}
	for _, l := range r.plan.vethLoads() {
		fmt.Fprintf(b, "\n### Across veth: turnutils_uclient, %d sessions, %d × %d-byte messages each (%s)\n\n", l.Sessions, l.Messages, l.Bytes, vethLoad(l))
		r.rawTable(b, vethLoad(l), vethKinds, vethCols)
	}
}
