package config

import (
	"slices"
	"testing"
	"time"
)

func TestDiffNamesChangedKeys(t *testing.T) {
	a := Default()
	if d := Diff(a, Default()); len(d) != 0 {
		t.Fatalf("Diff(Default, Default) = %q, want none", d)
	}
	b := Default()
	b.TURN.DeniedPeers = []string{"198.51.100.7"}
	b.TURN.Quotas.MaxBPSPerUser = 1e6
	b.HTTP.Listen = "127.0.0.1:9999"
	b.Auth.JWT.HS256Secret = "0123456789abcdef0123456789abcdef"
	b.MatrixRTC.LiveKit.Managed.Port = 7990
	b.Log.Level = "debug"
	b.Credentials.TTL = time.Hour
	b.HTTP.CORS.AllowedOrigins = nil // empty both ways: no change
	want := []string{"log.level", "turn.denied_peers", "turn.quotas.max_bps_per_user", "credentials.ttl",
		"http.listen", "auth.jwt.hs256_secret", "matrixrtc.livekit.managed.port"}
	if got := Diff(a, b); !slices.Equal(got, want) {
		t.Fatalf("Diff = %q\nwant   %q", got, want)
	}
	live, restart := Changes(a, b)
	if wantLive := []string{"log.level", "turn.denied_peers", "turn.quotas.max_bps_per_user", "auth.jwt.hs256_secret"}; !slices.Equal(live, wantLive) {
		t.Errorf("live = %q, want %q", live, wantLive)
	}
	if wantRestart := []string{"credentials.ttl", "http.listen", "matrixrtc.livekit.managed.port"}; !slices.Equal(restart, wantRestart) {
		t.Errorf("restart = %q, want %q", restart, wantRestart)
	}
	// The running configuration after applying the live keys differs from
	// the file in the restart keys only.
	running := WithKeys(a, b, live)
	if got := Diff(running, b); !slices.Equal(got, restart) {
		t.Errorf("Diff(WithKeys(a, b, live), b) = %q, want the restart keys %q", got, restart)
	}
}

func TestCORSValidation(t *testing.T) {
	for _, tc := range []struct {
		origins []string
		ok      bool
	}{
		{[]string{"https://app.example.org", "http://localhost:5173"}, true},
		{[]string{"*"}, true},
		{[]string{"*", "https://app.example.org"}, false},
		{[]string{"https://app.example.org/"}, false},
		{[]string{"app.example.org"}, false},
		{[]string{"ftp://app.example.org"}, false},
		{[]string{"https://*.example.org"}, false},
		{[]string{"https://App.example.org"}, false},
	} {
		c := Default()
		c.HTTP.CORS.AllowedOrigins = tc.origins
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("allowed_origins %q: Validate() = %v, want ok=%v", tc.origins, err, tc.ok)
		}
	}
}
