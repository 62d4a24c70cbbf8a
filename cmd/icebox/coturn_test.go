package main

// coturn's test clients (Debian package coturn: turnutils_uclient,
// turnutils_peer) against `icebox serve`: a TURN client nobody here wrote.

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const uclientTimeout = 60 * time.Second

// coturnTool finds one of coturn's tools. Without it the test fails under
// CI=true and skips elsewhere, saying what to install.
func coturnTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (%v); CI must install Debian's coturn package: apt-get install coturn", name, err)
	}
	t.Skip("install Debian's coturn package: apt-get install coturn")
	return ""
}

// startEchoPeer runs turnutils_peer on 127.0.0.1 and waits until it echoes.
// turnutils_peer binds the port it is given and the next one.
func startEchoPeer(t *testing.T, bin string) int {
	t.Helper()
	port := freePorts(t, 2)
	p := startProcess(t, bin, "-L", "127.0.0.1", "-p", strconv.Itoa(port))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("turnutils_peer output:\n%s", p.out.String())
		}
	})
	probe, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	if !exchange(func() error {
		_, err := probe.WriteTo([]byte("ping"), addr)
		return err
	}, probe, []byte("ping"), addr) {
		t.Fatalf("turnutils_peer on port %d does not echo (exited: %v); output:\n%s", port, p.exited(), p.out.String())
	}
	return port
}

var (
	reLost = regexp.MustCompile(`Total lost packets (\d+) \(([0-9.]+)%\)`)
	reMsgs = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
)

// uclientResult is what turnutils_uclient reports at its end.
type uclientResult struct {
	sent, received, lost int
}

func parseUclient(out string) (uclientResult, error) {
	var r uclientResult
	lost := reLost.FindAllStringSubmatch(out, -1)
	msgs := reMsgs.FindAllStringSubmatch(out, -1)
	if len(lost) == 0 || len(msgs) == 0 {
		return r, errors.New("no \"Total lost packets\" or \"tot_send_msgs\" summary in the output")
	}
	last := msgs[len(msgs)-1]
	r.sent, _ = strconv.Atoi(last[1])
	r.received, _ = strconv.Atoi(last[2])
	r.lost, _ = strconv.Atoi(lost[len(lost)-1][1])
	return r, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestCoturnClientThroughIcebox runs turnutils_uclient through icebox over
// UDP and TCP to a turnutils_peer echo peer, and client to client (relay to
// relay), and requires every message back and icebox's relay counters to
// have counted them.
func TestCoturnClientThroughIcebox(t *testing.T) {
	t.Parallel()
	uclient := coturnTool(t, "turnutils_uclient")
	peerBin := coturnTool(t, "turnutils_peer")

	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}))
	peerPort := strconv.Itoa(startEchoPeer(t, peerBin))

	// uclient's -W makes REST usernames "<now+86400>:<user>", without a kid:
	// the compat secret verifies them. Each run has its own user so that
	// allocations a previous run left behind do not count against it.
	for _, tc := range []struct {
		name string
		port int
		args []string
	}{
		{"udp", in.turnPort, []string{"-u", "alice", "-e", "127.0.0.1", "-r", peerPort}},
		{"tcp", in.turnTCPPort, []string{"-t", "-u", "alicetcp", "-e", "127.0.0.1", "-r", peerPort}},
		{"client-to-client", in.turnPort, []string{"-y", "-u", "bob"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := in.metrics(t)
			args := append([]string{"-W", testSecret}, tc.args...)
			args = append(args, "-X", "-c", "-m", "4", "-n", "200", "-l", "172", "-z", "5",
				"-p", strconv.Itoa(tc.port), "127.0.0.1")

			ctx, cancel := context.WithTimeout(context.Background(), uclientTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, uclient, args...)
			cmd.WaitDelay = time.Second
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if ctx.Err() != nil {
				t.Fatalf("turnutils_uclient %s did not finish within %s; output:\n%s",
					strings.Join(args, " "), uclientTimeout, tail(out.String(), 30))
			}
			if err != nil {
				t.Fatalf("turnutils_uclient %s: %v; output:\n%s", strings.Join(args, " "), err, tail(out.String(), 30))
			}
			res, err := parseUclient(out.String())
			if err != nil {
				t.Fatalf("turnutils_uclient: %v; output:\n%s", err, tail(out.String(), 30))
			}
			t.Logf("turnutils_uclient %s: sent %d, received %d, lost %d", tc.name, res.sent, res.received, res.lost)
			if res.sent == 0 || res.received == 0 || res.lost != 0 {
				t.Errorf("turnutils_uclient sent %d, received %d, lost %d; want messages sent and none lost; output:\n%s",
					res.sent, res.received, res.lost, tail(out.String(), 12))
			}

			// Every message crossed the relay once towards a peer and once
			// back from one (the echo peer, or the other client's relay).
			sent := float64(res.sent)
			after := in.waitMetrics(t, func(m map[string]float64) bool {
				return m[mToPeer]-before[mToPeer] >= sent && m[mFromPeer]-before[mFromPeer] >= sent
			})
			for _, m := range []string{mToPeer, mFromPeer} {
				if got := after[m] - before[m]; got < sent {
					t.Errorf("%s grew by %v during the run, want >= %d (messages sent)", m, got, res.sent)
				}
			}
			if got := sum(after, mAllocations) - sum(before, mAllocations); got < 4 {
				t.Errorf("%s grew by %v, want >= 4 (one per session)", mAllocations, got)
			}
		})
	}
}
