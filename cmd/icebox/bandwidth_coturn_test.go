package main

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// countingPeer is a UDP echo peer that counts what reaches it and when.
type countingPeer struct {
	pc          net.PacketConn
	mu          sync.Mutex
	bytes       int64
	first, last time.Time
	done        chan struct{}
}

func startCountingPeer(t *testing.T) *countingPeer {
	t.Helper()
	p := &countingPeer{pc: listenPeer(t), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 2048)
		for {
			n, from, err := p.pc.ReadFrom(buf)
			if err != nil {
				return // closed at cleanup
			}
			now := time.Now()
			p.mu.Lock()
			if p.first.IsZero() {
				p.first = now
			}
			p.last = now
			p.bytes += int64(n)
			p.mu.Unlock()
			_, _ = p.pc.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() { p.pc.Close(); <-p.done })
	return p
}

func (p *countingPeer) reset() {
	p.mu.Lock()
	p.bytes, p.first, p.last = 0, time.Time{}, time.Time{}
	p.mu.Unlock()
}

// bps is the rate at which bytes reached the peer, first to last.
func (p *countingPeer) bps() (float64, int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.last.Sub(p.first).Seconds()
	if d <= 0 {
		return 0, p.bytes
	}
	return float64(p.bytes) * 8 / d, p.bytes
}

// TestCoturnClientBandwidthLimit: coturn's turnutils_uclient sends 1000-byte
// messages every 2 ms (4 Mbit/s) through icebox with
// turn.quotas.max_bps_per_allocation at 2 Mbit/s, over channels (the fast
// path) and with Send indications (pion's path); the peer measures what
// arrives: within 10 % of the limit, and the drops are counted.
func TestCoturnClientBandwidthLimit(t *testing.T) {
	t.Parallel()
	uclient := coturnTool(t, "turnutils_uclient")
	const limit = 2_000_000
	cfg := testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret})
	cfg = strings.Replace(cfg, "    total: 1000\n",
		"    total: 1000\n    max_bps_per_allocation: "+strconv.Itoa(limit)+"\n    bandwidth_burst: 100ms\n", 1)
	in := startIcebox(t, cfg)
	peer := startCountingPeer(t)
	peerPort := strconv.Itoa(peer.pc.LocalAddr().(*net.UDPAddr).Port)

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"channels", nil},
		{"send indications", []string{"-s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer.reset()
			before := droppedBy(in.metrics(t), "allocation")
			args := append([]string{"-W", testSecret, "-u", "limited" + strconv.Itoa(len(tc.args)), "-e", "127.0.0.1", "-r", peerPort},
				tc.args...)
			args = append(args, "-X", "-c", "-m", "1", "-n", "1500", "-l", "1000", "-z", "2",
				"-p", strconv.Itoa(in.turnPort), "127.0.0.1")
			ctx, cancel := context.WithTimeout(context.Background(), uclientTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, uclient, args...)
			cmd.WaitDelay = time.Second
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("turnutils_uclient did not finish within %s; output:\n%s", uclientTimeout, tail(out.String(), 30))
			}
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v; output:\n%s", strings.Join(args, " "), err, tail(out.String(), 30))
			}
			res, _ := parseUclient(out.String())
			got, n := peer.bps()
			dropped := droppedBy(in.metrics(t), "allocation") - before
			t.Logf("turnutils_uclient sent %d messages of 1000 bytes; the peer got %d bytes at %.0f bit/s (limit %d, %+.1f %%); %v dropped by the limit",
				res.sent, n, got, limit, (got-limit)/limit*100, dropped)
			if got < 0.9*limit || got > 1.1*limit {
				t.Errorf("throughput %.0f bit/s, want %d ± 10 %%", got, limit)
			}
			if dropped == 0 {
				t.Error("no drop counted by the allocation limit")
			}
		})
	}
}
