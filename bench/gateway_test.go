//go:build linux

package main

import "testing"

// TestParseGatewayLoad reads the figures of the gateway's load test lines
// (signaling/matrixrtc/gateway/load_test.go) out of go test -v output.
func TestParseGatewayLoad(t *testing.T) {
	out := `=== RUN   TestGatewayLoad/legs=1
2026/12/03 16:27:56 pion.pc: "level"=0 "msg"="ICE connection state changed: closed"
    load_test.go:572: gateway load: legs=1 window_s=10.0 packets=1842 gw_us_per_pkt=171.68 up_p50_ms=20.48 direct_p99_ms=NaN bad_frames=0
    load_test.go:572: gateway load: legs=20 window_s=10.0 packets=34861 gw_us_per_pkt=50.24 heap_kib_per_leg=7722
--- PASS: TestGatewayLoad (28.20s)
`
	res := parseGatewayLoad(out)
	if len(res) != 2 {
		t.Fatalf("got %d leg counts: %v", len(res), res)
	}
	if v := res[1]; v["packets"] != 1842 || v["gw_us_per_pkt"] != 171.68 || v["up_p50_ms"] != 20.48 || v["bad_frames"] != 0 {
		t.Errorf("legs=1: %v", v)
	}
	if v := res[20]; v["heap_kib_per_leg"] != 7722 || v["window_s"] != 10 {
		t.Errorf("legs=20: %v", v)
	}
}
