//go:build linux

package main

// Relay throughput with coturn's own load client, turnutils_uclient, in
// client-to-client mode (-y): every session allocates a relay, pairs of
// sessions send each other ChannelData through their relays. One message
// therefore crosses the server twice (client → its relay → the partner's
// relay → partner), and the namespace sees it as three UDP receptions (the
// server's listener, the partner's relay socket, the partner client) and
// three sends.

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// uclientLoad is one turnutils_uclient configuration.
type uclientLoad struct {
	Name     string // key in the report
	Sessions int    // -m
	Messages int    // -n, per session
	Bytes    int    // -l
}

func (l uclientLoad) args(secret string) []string {
	return []string{
		"-W", secret, "-u", "bench", "-y", "-c", "-l", strconv.Itoa(l.Bytes), "-z", "1",
		"-m", strconv.Itoa(l.Sessions), "-n", strconv.Itoa(l.Messages),
		"-p", "3478", "127.0.0.1",
	}
}

// uclientResult is turnutils_uclient's own summary.
type uclientResult struct {
	Sent, Received int64   // tot_send_msgs, tot_recv_msgs: messages, over all sessions
	Lost           int64   // "Total lost packets"
	LostPercent    float64 // its percentage
	TransmitSec    int64   // "Total transmit time is", whole seconds
	RTTms          float64 // "Average round trip delay"
	JitterMS       float64 // "Average jitter"
}

var (
	reUcTotals   = regexp.MustCompile(`(?m)start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$`)
	reUcLost     = regexp.MustCompile(`Total lost packets (\d+) \(([0-9.]+)%\)`)
	reUcTransmit = regexp.MustCompile(`Total transmit time is (\d+)`)
	reUcRTT      = regexp.MustCompile(`Average round trip delay ([0-9.]+) ms`)
	reUcJitter   = regexp.MustCompile(`Average jitter ([0-9.]+) ms`)
)

// parseUclient reads the final summary of turnutils_uclient's output. The
// per-second progress lines carry "msz=" and are not totals.
func parseUclient(out string) (uclientResult, error) {
	var r uclientResult
	tot := reUcTotals.FindAllStringSubmatch(out, -1)
	lost := reUcLost.FindAllStringSubmatch(out, -1)
	if len(tot) == 0 || len(lost) == 0 {
		return r, errors.New(`turnutils_uclient: no "tot_send_msgs=…, tot_recv_msgs=…" or "Total lost packets" summary in its output`)
	}
	last := tot[len(tot)-1]
	r.Sent, _ = strconv.ParseInt(last[1], 10, 64)
	r.Received, _ = strconv.ParseInt(last[2], 10, 64)
	l := lost[len(lost)-1]
	r.Lost, _ = strconv.ParseInt(l[1], 10, 64)
	r.LostPercent, _ = strconv.ParseFloat(l[2], 64)
	if m := reUcTransmit.FindAllStringSubmatch(out, -1); len(m) > 0 {
		r.TransmitSec, _ = strconv.ParseInt(m[len(m)-1][1], 10, 64)
	}
	if m := reUcRTT.FindAllStringSubmatch(out, -1); len(m) > 0 {
		r.RTTms, _ = strconv.ParseFloat(m[len(m)-1][1], 64)
	}
	if m := reUcJitter.FindAllStringSubmatch(out, -1); len(m) > 0 {
		r.JitterMS, _ = strconv.ParseFloat(m[len(m)-1][1], 64)
	}
	if r.Sent <= 0 {
		return r, fmt.Errorf("turnutils_uclient sent no message (tot_send_msgs=%d)", r.Sent)
	}
	return r, nil
}

// activeWindow finds when traffic flowed, from samples of a cumulative
// counter: from the moment it first passed lo of its total growth to the
// moment it reached hi. turnutils_uclient spends seconds allocating before
// it sends and waits for stragglers after; neither is relay throughput.
// Between the samples the time is interpolated linearly.
func activeWindow(at []time.Time, counts []int64, lo, hi float64) (time.Duration, error) {
	if len(at) != len(counts) || len(at) < 2 {
		return 0, errors.New("active window: fewer than two samples")
	}
	base, total := counts[0], counts[len(counts)-1]-counts[0]
	if total <= 0 {
		return 0, errors.New("active window: the counter did not grow")
	}
	cross := func(frac float64) (time.Time, bool) {
		target := float64(base) + frac*float64(total)
		for i := 1; i < len(counts); i++ {
			if float64(counts[i]) >= target {
				prev, next := float64(counts[i-1]), float64(counts[i])
				f := 1.0
				if next > prev {
					f = (target - prev) / (next - prev)
				}
				span := at[i].Sub(at[i-1])
				return at[i-1].Add(time.Duration(f * float64(span))), true
			}
		}
		return time.Time{}, false
	}
	t0, ok0 := cross(lo)
	t1, ok1 := cross(hi)
	if !ok0 || !ok1 || !t1.After(t0) {
		return 0, errors.New("active window: samples too coarse")
	}
	return t1.Sub(t0), nil
}
