//go:build linux

package main

// What the kernel says about a server process: CPU time and resident memory
// from /proc/<pid>, and the UDP counters of its network namespace from
// /proc/<pid>/net/snmp (per namespace, not per process: the load generator
// runs in the same namespace, so its own datagrams count too).

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports; sysconf(_SC_CLK_TCK)
// would need cgo.
const clockTicks = 100

// cpuTicks returns utime+stime of pid (all its threads) in clock ticks.
func cpuTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(data)
}

// parseStatCPU reads utime (field 14) and stime (field 15) of a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and
// may hold spaces, so fields are counted after the last ')'.
func parseStatCPU(data []byte) (int64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("proc stat: no ')' in %q", data)
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state): utime is field 14, f[11]; stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the command, want at least 13", len(f))
	}
	utime, err := strconv.ParseInt(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: utime %q: %w", f[11], err)
	}
	stime, err := strconv.ParseInt(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("proc stat: stime %q: %w", f[12], err)
	}
	return utime + stime, nil
}

// ticksToMicros converts clock ticks to microseconds.
func ticksToMicros(t int64) float64 { return float64(t) * 1e6 / clockTicks }

// memStatus is the resident memory of a process, in KiB.
type memStatus struct {
	RSSKiB int64 // VmRSS
	HWMKiB int64 // VmHWM, the peak of VmRSS
}

func readMem(pid int) (memStatus, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	return parseStatus(data)
}

// parseStatus reads VmRSS and VmHWM ("VmRSS:\t  12345 kB") from
// /proc/<pid>/status.
func parseStatus(data []byte) (memStatus, error) {
	var m memStatus
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.RSSKiB
		case "VmHWM":
			dst = &m.HWMKiB
		default:
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("proc status: %s: %q, want \"<n> kB\"", key, val)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("proc status: %s: %w", key, err)
		}
		*dst = n
		found++
	}
	if found != 2 {
		return m, fmt.Errorf("proc status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// udpCounters are the Udp counters of /proc/<pid>/net/snmp that the report
// uses.
type udpCounters struct {
	InDatagrams, OutDatagrams, RcvbufErrors, SndbufErrors, NoPorts int64
}

func (c udpCounters) sub(o udpCounters) udpCounters {
	return udpCounters{
		InDatagrams:  c.InDatagrams - o.InDatagrams,
		OutDatagrams: c.OutDatagrams - o.OutDatagrams,
		RcvbufErrors: c.RcvbufErrors - o.RcvbufErrors,
		SndbufErrors: c.SndbufErrors - o.SndbufErrors,
		NoPorts:      c.NoPorts - o.NoPorts,
	}
}

func readUDP(pid int) (udpCounters, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/snmp", pid))
	if err != nil {
		return udpCounters{}, err
	}
	return parseSNMP(data)
}

// parseSNMP reads the "Udp:" header and value lines of /proc/net/snmp.
func parseSNMP(data []byte) (udpCounters, error) {
	var header, values []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if header == nil {
			header = f[1:]
		} else {
			values = f[1:]
			break
		}
	}
	if header == nil || len(values) != len(header) {
		return udpCounters{}, fmt.Errorf("net/snmp: no Udp header and value lines")
	}
	m := make(map[string]int64, len(header))
	for i, name := range header {
		n, err := strconv.ParseInt(values[i], 10, 64)
		if err != nil {
			return udpCounters{}, fmt.Errorf("net/snmp: Udp %s: %w", name, err)
		}
		m[name] = n
	}
	for _, name := range []string{"InDatagrams", "OutDatagrams", "RcvbufErrors", "SndbufErrors", "NoPorts"} {
		if _, ok := m[name]; !ok {
			return udpCounters{}, fmt.Errorf("net/snmp: no Udp %s", name)
		}
	}
	return udpCounters{
		InDatagrams:  m["InDatagrams"],
		OutDatagrams: m["OutDatagrams"],
		RcvbufErrors: m["RcvbufErrors"],
		SndbufErrors: m["SndbufErrors"],
		NoPorts:      m["NoPorts"],
	}, nil
}
