//go:build linux

package main

// The MatrixRTC /get_token load: a stand-in homeserver that answers OpenID
// userinfo at once (so the figures are icebox's own cost, not a
// homeserver's), and N keep-alive clients POSTing /get_token with a pool
// of OpenID tokens, one request after another for a fixed duration.

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
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
	return serveUntilSignal(srv, l)
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
	return printJSON(httpLoad(*clients, *duration, func(client *http.Client, k int) (int, error) {
		resp, err := client.Post(*url, "application/json", bytes.NewReader(bodies[k%*tokens]))
		if err != nil {
			return 0, err
		}
		var out struct {
			JWT string `json:"jwt"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&out)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && (resp.StatusCode != http.StatusOK || out.JWT == "") {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return 0, err
	}))
}
