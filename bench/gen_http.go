//go:build linux

package main

// HTTP API load: N clients, each on its own keep-alive connection, GET one
// URL back to back for a fixed duration; and the ceiling, a bare net/http
// handler that checks the bearer token and returns a fixed JSON body (the
// body icebox returned), run on the same machine and measured the same way.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// httpResult is what `bench httpload` prints.
type httpResult struct {
	Requests   int64   `json:"requests"` // 200 responses
	Errors     int64   `json:"errors"`   // transport errors and other statuses
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	P999us     float64 `json:"p999_us"`
	BodyBytes  int     `json:"body_bytes"`
}

func cmdHTTPLoad(args []string) error {
	fs := flag.NewFlagSet("httpload", flag.ContinueOnError)
	url := fs.String("url", "http://"+httpAddr+"/calls/ice_servers", "URL to GET")
	token := fs.String("token", "", "bearer token (or $BENCH_TOKEN)")
	clients := fs.Int("clients", 16, "concurrent keep-alive clients")
	duration := fs.Duration("duration", 10*time.Second, "how long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	tok := *token
	if tok == "" {
		tok = os.Getenv("BENCH_TOKEN")
	}
	req, err := http.NewRequest(http.MethodGet, *url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return printJSON(httpLoad(*clients, *duration, func(client *http.Client, _ int) (int, error) {
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return int(n), err
	}))
}

// httpLoad runs one request after another from each of clients keep-alive
// clients until duration has passed: request i of client c is do(client,
// c+i*clients). It returns the latency percentiles of the requests that
// succeeded, the errors and the largest body do reported.
func httpLoad(clients int, duration time.Duration, do func(client *http.Client, k int) (bodyBytes int, err error)) httpResult {
	type worker struct {
		lat       []time.Duration
		errs      int64
		firstErr  string
		bodyBytes int
	}
	ws := make([]*worker, clients)
	start := time.Now()
	deadline := start.Add(duration)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 1<<16)}
		ws[i] = w
		tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for k := i; time.Now().Before(deadline); k += clients {
				t0 := time.Now()
				n, err := do(client, k)
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					continue
				}
				w.bodyBytes = max(w.bodyBytes, n)
				w.lat = append(w.lat, time.Since(t0))
			}
		})
	}
	wg.Wait()
	res := httpResult{Seconds: time.Since(start).Seconds()}
	var all []time.Duration
	for _, w := range ws {
		all = append(all, w.lat...)
		res.Errors += w.errs
		if res.FirstError == "" {
			res.FirstError = w.firstErr
		}
		res.BodyBytes = max(res.BodyBytes, w.bodyBytes)
	}
	slices.Sort(all)
	res.Requests = int64(len(all))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	res.P50us, res.P99us, res.P999us = us(percentile(all, 50)), us(percentile(all, 99)), us(percentile(all, 99.9))
	return res
}

// cmdCeiling serves GET on every path: 401 without "Authorization: Bearer
// <token>", else the body file as application/json. It runs until SIGTERM.
func cmdCeiling(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ContinueOnError)
	listen := fs.String("listen", httpAddr, "listen address")
	bodyFile := fs.String("body", "", "file with the JSON body to return")
	token := fs.String("token", "", "bearer token (or $BENCH_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		return err
	}
	want := "Bearer " + *token
	if *token == "" {
		want = "Bearer " + os.Getenv("BENCH_TOKEN")
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != want {
				http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}),
	}
	return serveUntilSignal(srv, l)
}

// raiseNoFile makes sure this process (and the children it starts) may open
// n files: the soft limit is raised to the hard limit, and the hard limit
// to n when it is lower and we may (CAP_SYS_RESOURCE; a container's root
// often may not). It fails only if n files stay out of reach.
func raiseNoFile(n uint64) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Max < n {
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: n, Max: n}); err == nil {
			return nil
		}
	}
	lim.Cur = lim.Max
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	if lim.Max < n {
		return fmt.Errorf("RLIMIT_NOFILE is at most %d here, %d needed", lim.Max, n)
	}
	return nil
}

// serveUntilSignal serves srv on l until SIGTERM or SIGINT, then shuts it
// down (within 2 s: the harness only waits for the exit).
func serveUntilSignal(srv *http.Server, l net.Listener) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown) // the harness only waits for the exit
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
