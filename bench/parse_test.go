//go:build linux

package main

// The harness's parsers, on captured outputs. The harness itself (bench
// run) needs root, coturn and minutes; it never runs under go test.

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		want       int64
		wantErr    string
	}{
		{"plain", "9094 (turnserver) S 1 9094 9094 0 -1 4194560 1373 0 0 0 152 96 0 0 20 0 7 0 1069 0", 248, ""},
		{"spaces and parens in the name", "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0", 10, ""},
		{"truncated", "42 (x) R 1 2 3", 0, "fields after the command"},
		{"no command", "42 x R", 0, "no ')'"},
		{"not a number", "42 (x) R 1 42 42 0 -1 0 0 0 0 0 u 3 0", 0, "utime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tc.line))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseStatCPU(%q) = %d, %v; want an error containing %q", tc.line, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseStatCPU(%q) = %d, %v; want %d", tc.line, got, err, tc.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\ticebox\nVmPeak:\t 1259000 kB\nVmHWM:\t   48000 kB\nVmRSS:\t   46808 kB\nThreads:\t9\n"
	got, err := parseStatus([]byte(in))
	if err != nil || got != (memStatus{RSSKiB: 46808, HWMKiB: 48000}) {
		t.Fatalf("parseStatus = %+v, %v; want RSS 46808, HWM 48000", got, err)
	}
	if _, err := parseStatus([]byte("Name:\tx\nVmRSS:\t 1 kB\n")); err == nil {
		t.Error("parseStatus without VmHWM: no error")
	}
	if _, err := parseStatus([]byte("VmRSS:\t 1 MB\nVmHWM:\t 1 kB\n")); err == nil || !strings.Contains(err.Error(), "VmRSS") {
		t.Errorf("parseStatus with a unit other than kB: %v, want an error naming VmRSS", err)
	}
}

const snmp = `Ip: Forwarding DefaultTTL InReceives InHdrErrors
Ip: 1 64 186459 0
Icmp: InMsgs InErrors
Icmp: 21 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
Udp: 186396 21 0 186418 7 1 0 0 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors
UdpLite: 0 0 0 0 0 0 0 0 0
`

func TestParseSNMP(t *testing.T) {
	got, err := parseSNMP([]byte(snmp))
	want := udpCounters{InDatagrams: 186396, OutDatagrams: 186418, RcvbufErrors: 7, SndbufErrors: 1, NoPorts: 21}
	if err != nil || got != want {
		t.Fatalf("parseSNMP = %+v, %v; want %+v (UdpLite must not count)", got, err, want)
	}
	if d := got.sub(udpCounters{InDatagrams: 96, OutDatagrams: 18, RcvbufErrors: 7}); d.InDatagrams != 186300 || d.OutDatagrams != 186400 || d.RcvbufErrors != 0 {
		t.Errorf("sub = %+v", d)
	}
	if _, err := parseSNMP([]byte("Udp: InDatagrams NoPorts\nUdp: 1\n")); err == nil {
		t.Error("parseSNMP with a short value line: no error")
	}
	if _, err := parseSNMP([]byte("Udp: NoPorts\nUdp: 1\n")); err == nil || !strings.Contains(err.Error(), "InDatagrams") {
		t.Errorf("parseSNMP without InDatagrams: %v, want an error naming it", err)
	}
}

// uclientOut is the end of a real turnutils_uclient -y run (coturn 4.6.1).
const uclientOut = `0: : Total connect time is 2
0: : Total connect time is 2
8: : start_mclient: msz=200, tot_send_msgs=395064, tot_recv_msgs=308744, tot_send_bytes ~ 39506400, tot_recv_bytes ~ 30874400
9: : start_mclient: msz=16, tot_send_msgs=400000, tot_recv_msgs=313744, tot_send_bytes ~ 40000000, tot_recv_bytes ~ 31374400
40: : start_mclient: tot_send_msgs=400000, tot_recv_msgs=313744
40: : start_mclient: tot_send_bytes ~ 40000000, tot_recv_bytes ~ 31374400
40: : Total transmit time is 18
40: : Total lost packets 86256 (21.564000%), total send dropped 0 (0.000000%)
40: : Average round trip delay 72.114080 ms; min = 0 ms, max = 289 ms
40: : Average jitter 2.272416 ms; min = 0 ms, max = 437 ms
`

func TestParseUclient(t *testing.T) {
	got, err := parseUclient(uclientOut)
	want := uclientResult{Sent: 400000, Received: 313744, Lost: 86256, LostPercent: 21.564, TransmitSec: 18, RTTms: 72.11408, JitterMS: 2.272416}
	if err != nil || got != want {
		t.Fatalf("parseUclient = %+v, %v;\nwant %+v", got, err, want)
	}
	// Only progress lines (the run was cut short): no summary.
	progress := "8: : start_mclient: msz=200, tot_send_msgs=395064, tot_recv_msgs=308744, tot_send_bytes ~ 1, tot_recv_bytes ~ 1\n"
	if _, err := parseUclient(progress); err == nil || !strings.Contains(err.Error(), "summary") {
		t.Errorf("parseUclient(progress lines only): %v, want a missing-summary error", err)
	}
	none := "1: : start_mclient: tot_send_msgs=0, tot_recv_msgs=0\n1: : Total lost packets 0 (0.000000%)\n"
	if _, err := parseUclient(none); err == nil || !strings.Contains(err.Error(), "sent no message") {
		t.Errorf("parseUclient(nothing sent): %v, want a sent-no-message error", err)
	}
}

func TestActiveWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, m := range ms {
			ts = append(ts, t0.Add(time.Duration(m)*time.Millisecond))
		}
		return ts
	}
	// Idle for 2 s (allocating), 1000 datagrams a second for 4 s, idle for
	// 3 s (waiting for stragglers): the window is the 4 s in the middle,
	// minus the 1 % at each end.
	ats := at(0, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000)
	counts := []int64{100, 100, 100, 1100, 2100, 3100, 4100, 4100, 4100, 4100}
	got, err := activeWindow(ats, counts, 0.01, 0.99)
	if want := 3920 * time.Millisecond; err != nil || got != want {
		t.Fatalf("activeWindow = %v, %v; want %v", got, err, want)
	}
	if _, err := activeWindow(ats[:3], counts[:3], 0.01, 0.99); err == nil {
		t.Error("activeWindow of a counter that did not grow: no error")
	}
	if _, err := activeWindow(ats[:1], counts[:1], 0.01, 0.99); err == nil {
		t.Error("activeWindow of one sample: no error")
	}
}

const ssOut = `State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess
UNCONN 0      0          127.0.0.1:19598      0.0.0.0:*    users:(("turnserver",pid=9094,fd=34))
	 skmem:(r0,rb131072,t0,tb131072,f0,w0,o0,bl0,d3)
UNCONN 0      0          127.0.0.1:3478       0.0.0.0:*    users:(("turnserver",pid=9094,fd=19))
	 skmem:(r0,rb4194304,t0,tb4194304,f4096,w0,o0,bl0,d10)
UNCONN 0      0          127.0.0.1:3478       0.0.0.0:*    users:(("turnserver",pid=9094,fd=18)) skmem:(r0,rb4194304,t0,tb4194304,f4096,w0,o0,bl0,d0)
UNCONN 0      0          127.0.0.5:51234      0.0.0.0:*    users:(("turnutils_uclie",pid=777,fd=3))
	 skmem:(r0,rb212992,t0,tb212992,f0,w0,o0,bl0,d99)
`

func TestParseSS(t *testing.T) {
	socks, err := parseSS(ssOut)
	if err != nil {
		t.Fatal(err)
	}
	want := []udpSocket{
		{Local: "127.0.0.1:19598", Port: 19598, PID: 9094, RcvBuf: 131072, SndBuf: 131072, Drops: 3},
		{Local: "127.0.0.1:3478", Port: 3478, PID: 9094, RcvBuf: 4194304, SndBuf: 4194304, Drops: 10},
		{Local: "127.0.0.1:3478", Port: 3478, PID: 9094, RcvBuf: 4194304, SndBuf: 4194304, Drops: 0},
		{Local: "127.0.0.5:51234", Port: 51234, PID: 777, RcvBuf: 212992, SndBuf: 212992, Drops: 99},
	}
	if len(socks) != len(want) {
		t.Fatalf("parseSS: %d sockets %+v, want %d", len(socks), socks, len(want))
	}
	for i := range want {
		if socks[i] != want[i] {
			t.Errorf("socket %d = %+v, want %+v", i, socks[i], want[i])
		}
	}
	if got := sumDrops(socks[:3]); got != 13 {
		t.Errorf("sumDrops = %d, want 13", got)
	}
	if got, want := bufferSummary(socks[:3], 3478), "listener (:3478): 2 × rb 4194304 / tb 4194304; relay sockets: 1 × rb 131072 / tb 131072"; got != want {
		t.Errorf("bufferSummary =\n%s\nwant\n%s", got, want)
	}
	if _, err := parseSS("UNCONN 0 0 127.0.0.1:1 0.0.0.0:* users:((\"x\",pid=1,fd=3))\n"); err == nil {
		t.Error("parseSS without skmem: no error")
	}
}

func TestStats(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, nan, 1}, 3},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := median([]float64{nan}); !math.IsNaN(got) {
		t.Errorf("median(NaN) = %v, want NaN", got)
	}
	ds := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {99, 10}, {10, 1}, {100, 10}} {
		if got := percentile(ds, tc.p); got != tc.want {
			t.Errorf("percentile(1..10, %v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("percentile(nil) = %v, want 0", got)
	}
	if !math.IsNaN(ratio(1, 0)) || ratio(3, 2) != 1.5 {
		t.Error("ratio")
	}
}

func TestRestCredential(t *testing.T) {
	// base64(HMAC-SHA1(secret, username)), as coturn's --use-auth-secret checks it;
	// the expected value was computed independently (Python hmac).
	user, pass := restCredential("secret", "alice", time.Unix(1700000000, 0).Add(-24*time.Hour))
	if user != "1700000000:alice" || pass != "d8soP47RbdIKLDUOpnJPVQyq5Ts=" {
		t.Errorf("restCredential = %q, %q", user, pass)
	}
}

func TestRedact(t *testing.T) {
	s := secrets{TURN: "turn-s", Alice: "tok-a", Bob: "tok-b", Admin: "tok-c"}
	got := s.redact(iceboxConfig("/x", s) + strings.Join(coturnArgs("/d", s), " "))
	for _, secret := range []string{"turn-s", "tok-a", "tok-b", "tok-c", tokenHash("tok-a")} {
		if strings.Contains(got, secret) {
			t.Errorf("redacted text still holds %q", secret)
		}
	}
}
