package main

// Time from token to first decrypted frame (issue 16's benchmark): each
// page of a MatrixRTC call notes when /sfu/get answered its JWT and when
// its first remote encrypted video frame and audio were decoded
// (web/e2e-matrix/src/rtc.js, timing). The browser tests log it as a
// figure (rtcFirstFrameLine, never asserted); TestMatrixRTCFirstFrame
// repeats two-party joins for `make bench` (bench/measure_rtcframe.go
// parses the lines).

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// rtcFirstFrameEnv, a number of joins (1 to rtcFirstFrameMax), runs
// TestMatrixRTCFirstFrame; unset, it is skipped (the browser test logs the
// figure already; the bench asks for repetitions).
const (
	rtcFirstFrameEnv = "ICEBOX_BENCH_RTC_FIRST_FRAME"
	rtcFirstFrameMax = 20
)

// rtcTiming is what rtc.js's timing() reports: ms since the epoch, 0 = not
// seen.
type rtcTiming struct {
	JWTAt       int64 `json:"jwtAt"`
	ConnectedAt int64 `json:"connectedAt"`
	Video       int64 `json:"video"`
	Audio       int64 `json:"audio"`
}

// rtcFirstFrameLine is the logged figure's format, which the bench parses:
// page, its place in the join order, whether media was forced through
// TURN, then JWT → connected, → first decrypted video frame, → first
// decrypted audio, in ms (-1: not seen).
const rtcFirstFrameLine = "rtc first frame: %s joined %d/%d relay=%v: jwt→connected %d ms, jwt→video %d ms, jwt→audio %d ms"

// logFirstFrames logs each page's token → first decrypted frame times, in
// join order. The last joiner's is the figure: every other participant was
// publishing already, so it is what a user joining a call waits for
// (MatrixRTC keys included); earlier joiners waited for the others too.
func (b *rtcBed) logFirstFrames(t *testing.T, pages []rtcPage, relay bool) {
	t.Helper()
	since := func(from, to int64) int64 {
		if from == 0 || to == 0 {
			return -1
		}
		return to - from
	}
	for i, p := range pages {
		var tm rtcTiming
		if err := b.browser.try(t, p.name, "rtc.timing", &tm); err != nil {
			t.Logf("%s: no timing: %v", p.name, err)
			continue
		}
		t.Logf(rtcFirstFrameLine, p.name, i+1, len(pages), relay,
			since(tm.JWTAt, tm.ConnectedAt), since(tm.JWTAt, tm.Video), since(tm.JWTAt, tm.Audio))
	}
}

// TestMatrixRTCFirstFrame joins n two-party calls (n from
// ICEBOX_BENCH_RTC_FIRST_FRAME), each in a new encrypted room with new
// pages, first direct and then with media forced through icebox's TURN,
// and logs the token → first decrypted frame times of each (the second
// joiner's is the figure). Each call is checked as the browser test checks
// one; the times are figures only.
func TestMatrixRTCFirstFrame(t *testing.T) {
	v := os.Getenv(rtcFirstFrameEnv)
	if v == "" {
		t.Skip(rtcFirstFrameEnv + " unset: a benchmark (make bench, BENCH_ONLY=rtcframe)")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > rtcFirstFrameMax {
		t.Fatalf("%s=%q: want 1 to %d joins", rtcFirstFrameEnv, v, rtcFirstFrameMax)
	}
	b := newRTCBed(t)
	for _, relay := range []bool{false, true} {
		mode := "direct"
		if relay {
			mode = "relay"
		}
		for i := range n {
			name := fmt.Sprintf("ff-%s-%d", mode, i+1)
			t.Run(name, func(t *testing.T) { b.groupCall(t, name, 2, relay, false) })
			if t.Failed() {
				return
			}
		}
	}
}
