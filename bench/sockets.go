//go:build linux

package main

// The server's own UDP sockets as `ss -uanmp` shows them inside its
// namespace: their receive/send buffer sizes (what each server really got
// from the kernel, after its own setsockopt and the kernel's doubling and
// caps) and their drop counters. The namespace's RcvbufErrors also counts
// the load generator's sockets; the per-socket drops say which side lost.

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// udpSocket is one line of `ss -uanmp`.
type udpSocket struct {
	Local  string // "127.0.0.1:3478"
	Port   int
	PID    int
	RcvBuf int64 // skmem rb
	SndBuf int64 // skmem tb
	Drops  int64 // skmem d
}

// parseSS reads `ss -uanmp` output. A socket's skmem may be on the same
// line or on the next, indented, line (it depends on the terminal width).
func parseSS(out string) ([]udpSocket, error) {
	var joined []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.TrimSpace(line) == "", strings.HasPrefix(line, "State"):
		case (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) && len(joined) > 0:
			joined[len(joined)-1] += " " + strings.TrimSpace(line)
		default:
			joined = append(joined, line)
		}
	}
	var socks []udpSocket
	for _, line := range joined {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		s := udpSocket{Local: f[3]}
		if i := strings.LastIndexByte(s.Local, ':'); i >= 0 {
			s.Port, _ = strconv.Atoi(s.Local[i+1:])
		}
		if i := strings.Index(line, "pid="); i >= 0 {
			rest := line[i+len("pid="):]
			if j := strings.IndexAny(rest, ",)"); j >= 0 {
				s.PID, _ = strconv.Atoi(rest[:j])
			}
		}
		i := strings.Index(line, "skmem:(")
		if i < 0 {
			return nil, fmt.Errorf("ss: no skmem in %q (ss -m needed)", line)
		}
		mem := line[i+len("skmem:("):]
		if j := strings.IndexByte(mem, ')'); j >= 0 {
			mem = mem[:j]
		}
		for _, kv := range strings.Split(mem, ",") {
			// Each field is a name of letters followed by a number: rb4194304.
			k := strings.TrimRight(kv, "0123456789")
			n, err := strconv.ParseInt(kv[len(k):], 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rb":
				s.RcvBuf = n
			case "tb":
				s.SndBuf = n
			case "d":
				s.Drops = n
			}
		}
		socks = append(socks, s)
	}
	return socks, nil
}

// serverSockets lists the UDP sockets of the server process.
func (s *server) serverSockets(ctx context.Context) ([]udpSocket, error) {
	out, err := s.ns.command(ctx, "ss", "-uanmp").Output()
	if err != nil {
		return nil, fmt.Errorf("ss -uanmp: %w", err)
	}
	all, err := parseSS(string(out))
	if err != nil {
		return nil, err
	}
	var mine []udpSocket
	for _, sk := range all {
		if sk.PID == s.pid {
			mine = append(mine, sk)
		}
	}
	return mine, nil
}

// sumDrops adds the drop counters of socks.
func sumDrops(socks []udpSocket) int64 {
	var n int64
	for _, s := range socks {
		n += s.Drops
	}
	return n
}

// bufferSummary describes the buffer sizes of the listener sockets (port
// listenPort) and of the others (relays), e.g. "listener: 2 × rb 4194304 /
// tb 4194304; relays: 10000 × rb 212992 / tb 212992".
func bufferSummary(socks []udpSocket, listenPort int) string {
	type key struct{ rb, tb int64 }
	count := func(listener bool) string {
		m := map[key]int{}
		for _, s := range socks {
			if (s.Port == listenPort) == listener {
				m[key{s.RcvBuf, s.SndBuf}]++
			}
		}
		if len(m) == 0 {
			return "none"
		}
		keys := slices.SortedFunc(maps.Keys(m), func(a, b key) int { return m[b] - m[a] })
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%d × rb %d / tb %d", m[k], k.rb, k.tb))
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("listener (:%d): %s; relay sockets: %s", listenPort, count(true), count(false))
}
