package node_test

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
)

// TestNodeMatrixRTC checks that matrixrtc.enabled mounts the authorization
// service under base_path, outside the API's authentication, and that it is
// absent by default.
func TestNodeMatrixRTC(t *testing.T) {
	get := func(t *testing.T, url string) int {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	off := nodetest.Start(t, nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret), node.Options{Logger: zerolog.Nop()})
	if got := get(t, "http://"+off.Addrs.HTTP+"/livekit/jwt/healthz"); got == http.StatusOK {
		t.Errorf("matrixrtc off: /livekit/jwt/healthz answers %d", got)
	}

	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.MatrixRTC.Enabled = true
	cfg.MatrixRTC.BasePath = "/rtc"
	cfg.MatrixRTC.LiveKit.URL = "wss://sfu.example.test"
	cfg.MatrixRTC.LiveKit.APIKey = "APIkey"
	cfg.MatrixRTC.LiveKit.APISecret = "a-livekit-secret-of-at-least-32-bytes!"
	on := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop()})
	base := "http://" + on.Addrs.HTTP + "/rtc"
	if got := get(t, base+"/healthz"); got != http.StatusOK {
		t.Errorf("/rtc/healthz: %d, want 200", got)
	}
	resp, err := http.Post(base+"/sfu/get", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("POST /rtc/sfu/get with a broken body: %d %v, want 400 with CORS", resp.StatusCode, resp.Header)
	}
}
