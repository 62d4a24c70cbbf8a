//go:build linux

package main

// Time from token to first decrypted frame (issue 16): the harness runs
// the MatrixRTC browser bed's TestMatrixRTCFirstFrame (cmd/icebox,
// rtc_firstframe_test.go: Chromium with matrix-js-sdk's MatrixRTC session
// and livekit-client's E2EE, icebox's /sfu/get, the real livekit-server,
// Dendrite) with `go test`, and parses the figures it logs. It is not a
// load, so it runs once, not per round: a handful of two-party joins
// direct, then as many with media forced through icebox's TURN.

import (
	"bufio"
	"context"
	"fmt"
	"math"
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
	// rtcFrameJoins is how many joins of each kind (direct, relay) a run
	// makes; quick: rtcFrameJoinsQuick. BENCH_RTC_FRAME_JOINS overrides.
	rtcFrameJoins      = 5
	rtcFrameJoinsQuick = 2
	// rtcFrameTimeout bounds the whole `go test` (build, bed, joins).
	rtcFrameTimeout = 15 * time.Minute
	// rtcFrameTest is the test the harness runs, and its package.
	rtcFrameTest = "^TestMatrixRTCFirstFrame$"
	rtcFramePkg  = "./cmd/icebox/"
)

// rtcFrameLine matches cmd/icebox's rtcFirstFrameLine.
var rtcFrameLine = regexp.MustCompile(`rtc first frame: (\S+) joined (\d+)/(\d+) relay=(true|false): jwt→connected (-?\d+) ms, jwt→video (-?\d+) ms, jwt→audio (-?\d+) ms`)

// rtcFrameSample is the last joiner's figures of one call, in ms (NaN:
// not seen).
type rtcFrameSample struct {
	relay                   bool
	connected, video, audio float64
}

// parseRTCFrames reads the last joiner's line of each call from go test's
// output (earlier joiners waited for the others to join: not the figure).
func parseRTCFrames(out string) []rtcFrameSample {
	var s []rtcFrameSample
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	ms := func(v string) float64 {
		x, err := strconv.ParseFloat(v, 64)
		if err != nil || x < 0 {
			return math.NaN()
		}
		return x
	}
	for sc.Scan() {
		m := rtcFrameLine.FindStringSubmatch(sc.Text())
		if m == nil || m[2] != m[3] {
			continue
		}
		s = append(s, rtcFrameSample{relay: m[4] == "true", connected: ms(m[5]), video: ms(m[6]), audio: ms(m[7])})
	}
	return s
}

// rtcFrameWorkload names the records of direct and relay-forced joins.
func rtcFrameWorkload(relay bool) string {
	if relay {
		return "rtc_first_frame_relay"
	}
	return "rtc_first_frame_direct"
}

// measureRTCFrame runs the browser bed's joins and returns one record per
// join (Round = the join's number). The go tool, Chromium and the page's
// bundle must be there (the test says what is missing when it skips).
func (r *runner) measureRTCFrame(ctx context.Context) []record {
	joins := rtcFrameJoins
	if r.plan.Quick {
		joins = rtcFrameJoinsQuick
	}
	if n := envInt("BENCH_RTC_FRAME_JOINS", 0); n > 0 {
		joins = n
	}
	fail := func(err error) []record {
		return []record{{Round: 1, Server: "icebox", Workload: rtcFrameWorkload(false), Err: err.Error()}}
	}
	goTool := os.Getenv("GO")
	if goTool == "" {
		goTool = r.bins.goTool
	}
	if goTool == "" {
		return fail(fmt.Errorf("no go tool on PATH (the browser bed runs as a Go test)"))
	}
	tags := os.Getenv("TAGS")
	if tags == "" {
		tags = "goolm"
	}
	ctx, cancel := context.WithTimeout(ctx, rtcFrameTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "test", "-tags", tags, "-count=1", "-timeout", rtcFrameTimeout.String(),
		"-run", rtcFrameTest, "-v", rtcFramePkg)
	cmd.Env = append(os.Environ(), "ICEBOX_BENCH_RTC_FIRST_FRAME="+strconv.Itoa(joins))
	out, err := cmd.CombinedOutput()
	logFile := filepath.Join(r.tmp, "rtc-first-frame.out")
	_ = os.WriteFile(logFile, out, 0o600)
	samples := parseRTCFrames(string(out))
	if err != nil || len(samples) == 0 {
		tail := string(out)
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		if err == nil {
			err = fmt.Errorf("no figures in the output (skipped?)")
		}
		return fail(fmt.Errorf("go test %s %s: %v; output's tail:\n%s", rtcFrameTest, rtcFramePkg, err, tail))
	}
	var recs []record
	count := map[bool]int{}
	for _, s := range samples {
		count[s.relay]++
		recs = append(recs, record{Round: count[s.relay], Server: "icebox", Workload: rtcFrameWorkload(s.relay), V: map[string]float64{
			"connected_ms": s.connected, "video_ms": s.video, "audio_ms": s.audio,
		}})
	}
	return recs
}

// p90 of xs by the nearest-rank method, NaN values left out; NaN for none.
func p90(xs []float64) float64 {
	v := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(v) == 0 {
		return math.NaN()
	}
	slices.Sort(v)
	rank := int(math.Ceil(0.9 * float64(len(v))))
	return v[max(1, min(rank, len(v)))-1]
}
