package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// TestDendriteTURNCredentialsWorkOnIcebox: a homeserver that shares
// icebox's compat secret (Dendrite's client_api.turn.turn_shared_secret)
// hands its users /voip/turnServer credentials that icebox's relay accepts.
func TestDendriteTURNCredentialsWorkOnIcebox(t *testing.T) {
	t.Parallel()
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}))
	hs := matrixtest.StartDendrite(t,
		matrixtest.WithConfig("client_api.turn.turn_shared_secret", testSecret),
		matrixtest.WithConfig("client_api.turn.turn_uris", []string{"turn:" + in.turnAddr() + "?transport=udp"}),
		matrixtest.WithConfig("client_api.turn.turn_user_lifetime", "1h"),
	)
	_, token, _ := hs.Register(t, "carol", "carol-password-123", false)
	carol := &matrixUser{hs: hs.URL(), token: token}
	var creds struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		URIs     []string `json:"uris"`
		TTL      int64    `json:"ttl"`
	}
	carol.do(t, http.MethodGet, "/_matrix/client/v3/voip/turnServer", nil, &creds)
	if !strings.HasSuffix(creds.Username, ":@carol:"+hs.ServerName()) || strings.Contains(creds.Username, ".") || creds.TTL <= 0 {
		t.Fatalf("Dendrite's TURN credentials = %+v; want a kid-less <expiry>:@carol:… username", creds)
	}
	a, err := allocate(t, "udp", in.turnAddr(), nil, creds.Username, creds.Password)
	if err != nil {
		t.Fatalf("icebox refused Dendrite's credentials: %v", err)
	}
	relayRoundTrip(t, a, listenPeer(t))
}
