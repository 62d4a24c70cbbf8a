//go:build linux

package main

// The MatrixRTC authorization service under load: /get_token requests/s
// and latency with the OpenID verification cache on and off, in icebox's
// namespace, against the stand-in homeserver (bench userinfo).

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// rtcTokens is how many distinct users (OpenID tokens) the load cycles
// through: a few dozen people joining calls.
const rtcTokens = 64

// rtcConfig is icebox's matrixrtc section for the load: the stand-in
// homeserver by homeserver_urls, no full-access homeserver (so LiveKit is
// never asked to create a room, and need not run), the cache's TTL.
func rtcConfig(cacheTTL time.Duration) string {
	return fmt.Sprintf(`matrixrtc:
  enabled: true
  homeserver_urls: {%s: "http://%s"}   # the stand-in homeserver (bench userinfo)
  livekit: {url: "ws://127.0.0.1:7880", api_key: APIbench, api_secret: "bench-livekit-secret-0123456789abcdef"}   # never dialled
  verify_cache_ttl: %s
`, rtcServer, userinfoAddr, cacheTTL)
}

// measureRTC runs the /get_token load with the cache off and on (cached
// first in odd rounds).
func (r *runner) measureRTC(ctx context.Context, round int) []record {
	modes := []struct {
		workload string
		ttl      time.Duration
	}{{"get_token_cached", time.Minute}, {"get_token_uncached", 0}}
	if round%2 == 0 {
		modes[0], modes[1] = modes[1], modes[0]
	}
	var recs []record
	for _, m := range modes {
		recs = append(recs, r.tokenLoad(ctx, round, m.workload, m.ttl))
		if ctx.Err() != nil {
			break
		}
	}
	return recs
}

func (r *runner) tokenLoad(ctx context.Context, round int, workload string, ttl time.Duration) record {
	ns := r.ns["icebox"]
	cmd := ns.command(context.Background(), r.bins.self, "userinfo", "--listen", userinfoAddr)
	hs, err := startProc("userinfo", cmd, filepath.Join(r.tmp, "userinfo-"+workload+".out"))
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	defer hs.stop()
	hc := nsHTTPClient(ns)
	count := func() (int64, error) {
		resp, err := hc.Get("http://" + userinfoAddr + "/count")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return 0, err
		}
		return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	deadline := time.Now().Add(readyTimeout)
	for {
		if _, err := count(); err == nil {
			break
		}
		if hs.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return failed(round, "icebox", workload, fmt.Errorf("the stand-in homeserver did not answer; output:\n%s", hs.logTail()))
		}
		time.Sleep(20 * time.Millisecond) // polling for readiness, bounded by the deadline
	}

	srv, err := startServerWith(ctx, "icebox", ns, r.tmp, r.bins, r.sec, rtcConfig(ttl))
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	defer srv.stop()
	n0, err := count()
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	t0, err := cpuTicks(srv.pid)
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	var res httpResult
	err = r.runGen(ctx, ns, &res, "tokenload", "--url", "http://"+httpAddr+"/livekit/jwt/get_token",
		"--clients", strconv.Itoa(r.plan.HTTPClients), "--tokens", strconv.Itoa(rtcTokens), "--duration", r.plan.HTTPDuration.String())
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	t1, err := cpuTicks(srv.pid)
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	n1, err := count()
	if err != nil {
		return failed(round, "icebox", workload, err)
	}
	rec := record{Round: round, Server: "icebox", Workload: workload, V: map[string]float64{
		"rps":            float64(res.Requests) / res.Seconds,
		"p50_us":         res.P50us,
		"p99_us":         res.P99us,
		"p999_us":        res.P999us,
		"cpu_us_per_req": ticksToMicros(t1-t0) / float64(max(res.Requests, 1)),
		"errors":         float64(res.Errors),
		"hs_requests":    float64(n1 - n0),
	}}
	if res.Errors > 0 {
		rec.Warn = fmt.Sprintf("%d requests failed (first: %s)", res.Errors, res.FirstError)
	}
	return rec
}
