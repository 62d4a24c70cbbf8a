//go:build linux

package main

// The MatrixRTC /get_token load: a stand-in homeserver that answers OpenID
// userinfo at once (so the figures are icebox's own cost, not a
// homeserver's), and N keep-alive clients POSTing /get_token with a pool
// of OpenID tokens, one request after another for a fixed duration.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	userinfoAddr = "127.0.0.1:8448"
	rtcServer    = "bench.icebox.test" // the Matrix server name of the load's users
	rtcTokenPfx  = "bench-openid-"     // a token is this and the user's number
)

// cmdUserinfo serves /_matrix/federation/v1/openid/userinfo: token
// rtcTokenPfx+N is @uN:rtcServer, anything else is refused as Synapse
// refuses an unknown token. GET /count says how many userinfo requests it
// answered (the harness's check that the cache works). Runs until SIGTERM.
func cmdUserinfo(args []string) error {
	fs := flag.NewFlagSet("userinfo", flag.ContinueOnError)
	listen := fs.String("listen", userinfoAddr, "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var n atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_matrix/federation/v1/openid/userinfo", func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		num, ok := strings.CutPrefix(r.URL.Query().Get("access_token"), rtcTokenPfx)
		if _, err := strconv.Atoi(num); !ok || err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN_TOKEN","error":"Access Token unknown or expired"}`)
			return
		}
		fmt.Fprintf(w, `{"sub":"@u%s:%s"}`, num, rtcServer)
	})
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d\n", n.Load())
	})
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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

// getTokenBody is a /get_token request of user n for the load's room.
func getTokenBody(n int) []byte {
	uid := fmt.Sprintf("@u%d:%s", n, rtcServer)
	b, _ := json.Marshal(map[string]any{
		"room_id": "!bench:" + rtcServer, "slot_id": "m.call#ROOM",
		"openid_token": map[string]any{"access_token": rtcTokenPfx + strconv.Itoa(n), "token_type": "Bearer",
			"matrix_server_name": rtcServer, "expires_in": 3600},
		"member": map[string]string{"id": "member-" + strconv.Itoa(n), "claimed_user_id": uid, "claimed_device_id": "BENCH"},
	})
	return b
}

// cmdTokenLoad POSTs /get_token from N keep-alive clients for a duration;
// client i cycles through the tokens i, i+N, i+2N… below --tokens, so every
// token is asked for again and again (what a cache can help with).
func cmdTokenLoad(args []string) error {
	fs := flag.NewFlagSet("tokenload", flag.ContinueOnError)
	url := fs.String("url", "http://"+httpAddr+"/livekit/jwt/get_token", "the /get_token URL")
	clients := fs.Int("clients", 16, "concurrent keep-alive clients")
	tokens := fs.Int("tokens", 64, "distinct OpenID tokens (users)")
	duration := fs.Duration("duration", 10*time.Second, "how long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tokens < *clients {
		return fmt.Errorf("--tokens %d < --clients %d", *tokens, *clients)
	}
	bodies := make([][]byte, *tokens)
	for i := range bodies {
		bodies[i] = getTokenBody(i)
	}
	type worker struct {
		lat      []time.Duration
		errs     int64
		firstErr string
	}
	ws := make([]*worker, *clients)
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 1<<15)}
		ws[i] = w
		tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for k := i; time.Now().Before(deadline); k += *clients {
				t0 := time.Now()
				resp, err := client.Post(*url, "application/json", bytes.NewReader(bodies[k%*tokens]))
				if err == nil {
					var out struct {
						JWT string `json:"jwt"`
					}
					err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != http.StatusOK || out.JWT == "") {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					w.errs++
					if w.firstErr == "" {
						w.firstErr = err.Error()
					}
					continue
				}
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
	}
	slices.Sort(all)
	res.Requests = int64(len(all))
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	res.P50us, res.P99us, res.P999us = us(percentile(all, 50)), us(percentile(all, 99)), us(percentile(all, 99.9))
	return printJSON(res)
}
