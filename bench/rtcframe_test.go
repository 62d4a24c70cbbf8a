//go:build linux

package main

import (
	"math"
	"testing"
)

// TestParseRTCFrames reads the last joiner's figures of each call from
// go test -v output (cmd/icebox's rtcFirstFrameLine), skipping the earlier
// joiners' lines and anything else.
func TestParseRTCFrames(t *testing.T) {
	out := `=== RUN   TestMatrixRTCFirstFrame/ff-direct-1
    rtc_call_test.go:65: rtc first frame: rtc-ff-direct-1-alice joined 1/2 relay=false: jwt→connected 653 ms, jwt→video 2102 ms, jwt→audio 1835 ms
    rtc_call_test.go:65: rtc first frame: rtc-ff-direct-1-bob joined 2/2 relay=false: jwt→connected 556 ms, jwt→video 655 ms, jwt→audio 656 ms
    rtc_call_test.go:65: rtc first frame: rtc-ff-relay-1-bob joined 2/2 relay=true: jwt→connected 445 ms, jwt→video -1 ms, jwt→audio 512 ms
--- PASS: TestMatrixRTCFirstFrame (23.31s)
`
	s := parseRTCFrames(out)
	if len(s) != 2 {
		t.Fatalf("parsed %d samples, want 2: %+v", len(s), s)
	}
	if s[0].relay || s[0].connected != 556 || s[0].video != 655 || s[0].audio != 656 {
		t.Errorf("direct sample %+v", s[0])
	}
	if !s[1].relay || !math.IsNaN(s[1].video) || s[1].audio != 512 {
		t.Errorf("relay sample %+v (video not seen must be NaN)", s[1])
	}
	if got := p90([]float64{5, 1, math.NaN(), 4, 2, 3, 6, 7, 8, 9, 10}); got != 9 {
		t.Errorf("p90 = %v, want 9", got)
	}
}
