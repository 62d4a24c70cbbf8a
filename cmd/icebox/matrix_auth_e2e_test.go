package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// TestMatrixAuthAccessToken: a Matrix user fetches /calls/ice_servers with
// the access token their homeserver (a real Dendrite) gave them; a made-up
// token is refused, and so is bob's once he has logged out, within the
// configured cache time.
func TestMatrixAuthAccessToken(t *testing.T) {
	t.Parallel()
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", "service-password-123", false)
	serviceToken, device := hs.Login(t, service, "service-password-123")
	bob, _, _ := hs.Register(t, "bob", "bob-password-123", false)
	bobToken, _ := hs.Login(t, bob, "bob-password-123") // a device of his own, to log out

	const cache = time.Second
	env := []string{
		"MATRIX_ENABLED=true",
		"MATRIX_HOMESERVER_URL=" + hs.URL(),
		"MATRIX_SERVICE_USER=" + service,
		"MATRIX_ACCESS_TOKEN=" + serviceToken,
		"ICEBOX_MATRIX_DEVICE_ID=" + device,
		"ICEBOX_AUTH_MATRIX_TOKENS_CACHE=" + cache.String(),
		"ICEBOX_AUTH_MATRIX_TOKENS_NEGATIVE_CACHE=1s",
	}
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}), env...)

	code, body := httpGet(t, in.httpURL("/calls/ice_servers"), bobToken)
	if code != http.StatusOK {
		t.Fatalf("GET /calls/ice_servers with bob's Matrix token: %d %s", code, body)
	}
	var resp struct {
		ICEServers []struct {
			URLs     []string `json:"urls"`
			Username string   `json:"username"`
		} `json:"ice_servers"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("ice_servers body %s: %v", body, err)
	}
	var user string
	for _, s := range resp.ICEServers {
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") {
				user = s.Username
			}
		}
	}
	if !strings.HasSuffix(user, ":"+bob) {
		t.Errorf("TURN username %q, want it to end in :%s; body %s", user, bob, body)
	}
	if strings.Contains(string(body), bobToken) {
		t.Error("the response holds bob's access token")
	}

	code, body = httpGet(t, in.httpURL("/calls/ice_servers"), "mx_made_up_token_0123456789")
	if code != http.StatusUnauthorized {
		t.Errorf("made-up token: %d %s, want 401", code, body)
	}

	// Bob logs out: his token stops working within the cache time.
	bobClient := &matrixUser{hs: hs.URL(), token: bobToken}
	bobClient.do(t, http.MethodPost, "/_matrix/client/v3/logout", map[string]any{}, nil)
	loggedOut := time.Now()
	deadline := loggedOut.Add(cache + 5*time.Second)
	for {
		code, body = httpGet(t, in.httpURL("/calls/ice_servers"), bobToken)
		if code == http.StatusUnauthorized {
			break
		}
		if code != http.StatusOK {
			t.Fatalf("after logout: %d %s, want 200 (cached) or 401", code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's token still works %s after he logged out (cache %s)", time.Since(loggedOut), cache)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(string(body), bobToken) {
		t.Error("the 401 holds bob's access token")
	}
	t.Logf("bob's token refused %s after logout", time.Since(loggedOut).Round(time.Millisecond))
}
