//go:build linux

package main

// The MatrixRTC gateway under load (issue 17): the harness runs the
// gateway package's TestGatewayLoad with `go test` (N bridged legs at
// once, each a pion client ↔ the gateway ↔ the real livekit-server ↔ a
// server-sdk-go member, Opus and VP8 both ways, end-to-end encrypted) and
// parses the "gateway load:" line it logs per leg count. The method is the
// test's (signaling/matrixrtc/gateway/load_test.go): CPU split by pprof
// goroutine label, latency via the gateway minus the direct SFU path, heap
// and goroutines per leg. Not a comparison with coturn: it runs once, not
// per round.

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const (
	gatewayTest    = "^TestGatewayLoad$"
	gatewayPkg     = "./signaling/matrixrtc/gateway/"
	gatewayTimeout = 10 * time.Minute
)

// gatewayLegs and the measurement window, full and quick
// (BENCH_GATEWAY_LEGS, BENCH_GATEWAY_SECONDS override).
var (
	gatewayLegs         = "1,20"
	gatewaySeconds      = 30
	gatewaySecondsQuick = 5
)

var gatewayLine = regexp.MustCompile(`gateway load: (legs=\d+ .*)$`)

// parseGatewayLoad reads the figures of each "gateway load:" line, by leg
// count.
func parseGatewayLoad(out string) map[int]map[string]float64 {
	res := map[int]map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m := gatewayLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		v := map[string]float64{}
		for _, f := range strings.Fields(m[1]) {
			key, val, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			if x, err := strconv.ParseFloat(val, 64); err == nil {
				v[key] = x
			}
		}
		if n, ok := v["legs"]; ok {
			res[int(n)] = v
		}
	}
	return res
}

func gatewayWorkload(legs int) string { return fmt.Sprintf("gateway_legs_%d", legs) }

// runGateway runs the gateway's load test, if the plan includes "gateway",
// and adds a record per leg count.
func (r *runner) runGateway(ctx context.Context) {
	if !r.plan.runs("gateway") {
		return
	}
	legs := gatewayLegs
	if s := os.Getenv("BENCH_GATEWAY_LEGS"); s != "" {
		legs = s
	}
	secs := gatewaySeconds
	if r.plan.Quick {
		secs = gatewaySecondsQuick
	}
	secs = envInt("BENCH_GATEWAY_SECONDS", secs)
	r.progress("MatrixRTC gateway: %s bridged E2EE legs, %d s each (go test %s)", legs, secs, gatewayPkg)
	fail := func(err error) {
		r.add(record{Round: 1, Server: "icebox", Workload: "gateway", Err: err.Error()})
	}
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = r.bins.goTool
	}
	if goTool == "" {
		fail(fmt.Errorf("no go tool on PATH (the gateway's load runs as a Go test)"))
		return
	}
	tags := os.Getenv("TAGS")
	if tags == "" {
		tags = "goolm"
	}
	ctx, cancel := context.WithTimeout(ctx, gatewayTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "test", "-tags", tags, "-count=1", "-timeout", gatewayTimeout.String(),
		"-run", gatewayTest, "-v", gatewayPkg)
	cmd.Env = append(os.Environ(), "ICEBOX_BENCH_GATEWAY="+legs, "ICEBOX_BENCH_GATEWAY_SECONDS="+strconv.Itoa(secs))
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(filepath.Join(r.tmp, "gateway-load.out"), out, 0o600)
	res := parseGatewayLoad(string(out))
	if err != nil || len(res) == 0 {
		tail := string(out)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		if err == nil {
			err = fmt.Errorf("no figures in the output (skipped?)")
		}
		fail(fmt.Errorf("go test %s %s: %v; output's tail:\n%s", gatewayTest, gatewayPkg, err, tail))
		return
	}
	for _, n := range slices.Sorted(maps.Keys(res)) {
		r.add(record{Round: 1, Server: "icebox", Workload: gatewayWorkload(n), V: res[n]})
	}
}

// gatewayRows are the report's figures of the gateway, per leg count.
var gatewayRows = []struct{ label, key, format string }{
	{"frames forwarded / offered by the peers, in the window (< 1: the machine did not keep up)", "keep_up", "%.3f"},
	{"forwarded RTP packets/s (both ways, all legs)", "pkts_per_s", "%.0f"},
	{"gateway CPU µs per forwarded packet (E2EE included; GC shared pro rata)", "gw_us_per_pkt", "%.1f"},
	{"gateway CPU µs per forwarded packet, its labelled goroutines only", "gw_labelled_us_per_pkt", "%.1f"},
	{"whole test process CPU µs per forwarded packet (peers included)", "process_us_per_pkt", "%.1f"},
	{"gateway CPU, cores", "gw_cores", "%.3f"},
	{"CPU profile samples: gateway / peers / unlabelled", "samples", ""},
	{"Opus one-way via the gateway, up (client → member), p50 / p99 ms", "up", ""},
	{"Opus one-way via the gateway, down (member → client), p50 / p99 ms", "down", ""},
	{"Opus one-way direct (LiveKit participant → SFU → participant), p50 / p99 ms", "direct", ""},
	{"added by the gateway, up, p50 / p99 ms", "added_up", ""},
	{"added by the gateway, down, p50 / p99 ms", "added_down", ""},
	{"VP8 one-packet frames via the gateway, up / down, p50 ms", "vp8_via", ""},
	{"VP8 one-packet frames direct, p50 / p99 ms", "vp8_direct", ""},
	{"VP8: added by the gateway, up / down, p50 ms", "vp8_added", ""},
	{"Go heap per leg, KiB (upper bound)", "heap_kib_per_leg", "%.0f"},
	{"gateway goroutines per leg", "goroutines_per_leg", "%.1f"},
	{"frames dropped in the window / failed to decrypt at the peers", "drops", ""},
}

// gatewayReport writes the gateway's section of the report (nothing if it
// did not run).
func (r *runner) gatewayReport(b *strings.Builder) {
	var legs []int
	byLegs := map[int]map[string]float64{}
	for _, rec := range r.records {
		var n int
		if _, err := fmt.Sscanf(rec.Workload, "gateway_legs_%d", &n); err == nil && rec.V != nil {
			legs = append(legs, n)
			byLegs[n] = rec.V
		}
	}
	if len(legs) == 0 {
		return
	}
	b.WriteString("\n### MatrixRTC gateway: bridged legs at once (E2EE, real livekit-server; method in signaling/matrixrtc/gateway/load_test.go)\n\n| measure |")
	for _, n := range legs {
		fmt.Fprintf(b, " %d leg(s) |", n)
	}
	b.WriteString("\n|---|" + strings.Repeat("---:|", len(legs)) + "\n")
	for _, row := range gatewayRows {
		fmt.Fprintf(b, "| %s |", row.label)
		for _, n := range legs {
			v := byLegs[n]
			var cell string
			switch row.key {
			case "keep_up":
				cell = num("%.3f", v["frames"]/v["frames_offered"])
			case "pkts_per_s":
				cell = num("%.0f", v["packets"]/v["window_s"])
			case "samples":
				cell = fmt.Sprintf("%.0f / %.0f / %.0f", v["samples_gateway"], v["samples_peer"], v["samples_unlabelled"])
			case "up", "down", "direct", "added_up", "added_down":
				cell = num("%.1f", v[row.key+"_p50_ms"]) + " / " + num("%.1f", v[row.key+"_p99_ms"])
			case "vp8_via":
				cell = num("%.1f", v["vp8_up_p50_ms"]) + " / " + num("%.1f", v["vp8_down_p50_ms"])
			case "vp8_direct":
				cell = num("%.1f", v["vp8_direct_p50_ms"]) + " / " + num("%.1f", v["vp8_direct_p99_ms"])
			case "vp8_added":
				cell = num("%.1f", v["vp8_added_up_p50_ms"]) + " / " + num("%.1f", v["vp8_added_down_p50_ms"])
			case "drops":
				cell = fmt.Sprintf("%.0f / %.0f", v["dropped"], v["bad_frames"])
			default:
				x, ok := v[row.key]
				if !ok {
					cell = "–"
				} else {
					cell = num(row.format, x)
				}
			}
			fmt.Fprintf(b, " %s |", cell)
		}
		b.WriteString("\n")
	}
}
