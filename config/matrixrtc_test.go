package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMatrixRTCValidate(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte(strings.Repeat("s", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(dir, "private")
	if err := os.WriteFile(private, []byte(strings.Repeat("s", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := func() MatrixRTC {
		m := Default().MatrixRTC
		m.Enabled = true
		m.LiveKit = LiveKit{URL: "wss://sfu.example.org", APIKey: "APIkey", APISecret: strings.Repeat("x", 32)}
		return m
	}
	for _, tc := range []struct {
		name string
		edit func(*MatrixRTC)
		want string // "" = valid
	}{
		{"off needs nothing", func(m *MatrixRTC) { *m = Default().MatrixRTC }, ""},
		{"good", func(*MatrixRTC) {}, ""},
		{"secret file", func(m *MatrixRTC) { m.LiveKit.APISecret, m.LiveKit.APISecretFile = "", private }, ""},
		{"wildcard", func(m *MatrixRTC) { m.FullAccessHomeservers = []string{"*"} }, ""},
		{"no url", func(m *MatrixRTC) { m.LiveKit.URL = "" }, `matrixrtc.livekit.url: "" must be a ws:// or wss:// URL (required when matrixrtc.enabled)`},
		{"http url", func(m *MatrixRTC) { m.LiveKit.URL = "https://sfu" }, `matrixrtc.livekit.url: "https://sfu" must be a ws:// or wss:// URL`},
		{"no key", func(m *MatrixRTC) { m.LiveKit.APIKey = "" }, "matrixrtc.livekit.api_key: required when matrixrtc.enabled"},
		{"no secret", func(m *MatrixRTC) { m.LiveKit.APISecret = "" }, "matrixrtc.livekit.api_secret: required when matrixrtc.enabled"},
		{"short secret", func(m *MatrixRTC) { m.LiveKit.APISecret = "short" }, "matrixrtc.livekit.api_secret: must be at least 32 bytes"},
		{"both secrets", func(m *MatrixRTC) { m.LiveKit.APISecretFile = private }, "matrixrtc.livekit: api_secret and api_secret_file are both set; keep one"},
		{"open secret file", func(m *MatrixRTC) { m.LiveKit.APISecret, m.LiveKit.APISecretFile = "", open }, "is readable by others (mode 0644); chmod 600 it"},
		{"base path slash", func(m *MatrixRTC) { m.BasePath = "/rtc/" }, `matrixrtc.base_path: "/rtc/" must start with / and not end with /`},
		{"base path relative", func(m *MatrixRTC) { m.BasePath = "rtc" }, `matrixrtc.base_path: "rtc" must start with /`},
		{"wildcard and more", func(m *MatrixRTC) { m.FullAccessHomeservers = []string{"*", "a.org"} }, `matrixrtc.full_access_homeservers[0]: "*" is not a server name (or "*" alone)`},
		{"homeserver url with path", func(m *MatrixRTC) { m.HomeserverURLs = map[string]string{"a.org": "https://a.org/x"} }, `matrixrtc.homeserver_urls.a.org: "https://a.org/x" is not an http(s) base URL without a path`},
		{"lifetime", func(m *MatrixRTC) { m.JWTLifetime = 30 * time.Second }, "matrixrtc.jwt_lifetime: must be between 1m and 24h (got 30s)"},
		{"verify timeout", func(m *MatrixRTC) { m.VerifyTimeout = 0 }, "matrixrtc.verify_timeout: must be between 1s and 60s (got 0s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.edit(&m)
			v := &validator{}
			v.matrixRTC(&m)
			switch {
			case tc.want == "" && len(v.errs) > 0:
				t.Errorf("got %v, want valid", v.errs)
			case tc.want != "" && (len(v.errs) != 1 || !strings.Contains(v.errs[0].Error(), tc.want)):
				t.Errorf("got %v, want one error containing %q", v.errs, tc.want)
			}
		})
	}
	l := LiveKit{APISecretFile: private}
	if got, err := l.SecretValue(); err != nil || got != strings.Repeat("s", 40) {
		t.Errorf("SecretValue() = %q, %v; want the file's secret, trimmed", got, err)
	}
}

func TestMatrixRTCDiscoveryValidate(t *testing.T) {
	withToken := Matrix{Enabled: true, AccessToken: "tok"}
	for _, tc := range []struct {
		name string
		edit func(*MatrixRTC, *Matrix)
		want string // "" = valid
	}{
		{"defaults", func(*MatrixRTC, *Matrix) {}, ""},
		{"public url", func(m *MatrixRTC, _ *Matrix) { m.PublicURL = "https://icebox.example.org" }, ""},
		{"public url with prefix", func(m *MatrixRTC, _ *Matrix) { m.PublicURL = "https://example.org/icebox" }, ""},
		{"public url ws", func(m *MatrixRTC, _ *Matrix) { m.PublicURL = "wss://example.org" }, `matrixrtc.public_url: "wss://example.org" is not an http(s) URL`},
		{"public url no host", func(m *MatrixRTC, _ *Matrix) { m.PublicURL = "example.org" }, `matrixrtc.public_url: "example.org" is not an http(s) URL`},
		{"public url slash", func(m *MatrixRTC, _ *Matrix) { m.PublicURL = "https://example.org/" }, "without user, query, fragment or final /"},
		{"public url query", func(m *MatrixRTC, _ *Matrix) { m.PublicURL = "https://example.org?a=b" }, "without user, query, fragment or final /"},
		{"cache off", func(m *MatrixRTC, _ *Matrix) { m.VerifyCacheTTL = 0 }, ""},
		{"cache too long", func(m *MatrixRTC, _ *Matrix) { m.VerifyCacheTTL = time.Hour }, "matrixrtc.verify_cache_ttl: must be between 0s (no cache) and 5m0s (got 1h0m0s)"},
		{"cache negative", func(m *MatrixRTC, _ *Matrix) { m.VerifyCacheTTL = -time.Second }, "matrixrtc.verify_cache_ttl: must be between"},
		{"require joined with token", func(m *MatrixRTC, mx *Matrix) { m.RequireJoined, *mx = true, withToken }, ""},
		{"require joined without matrix", func(m *MatrixRTC, _ *Matrix) { m.RequireJoined = true }, "matrixrtc.require_joined: needs matrix.enabled"},
		{"require joined with password", func(m *MatrixRTC, mx *Matrix) {
			m.RequireJoined, *mx = true, Matrix{Enabled: true, Password: "pw"}
		}, "matrixrtc.require_joined: needs matrix.access_token or matrix.access_token_file"},
		{"off checks nothing", func(m *MatrixRTC, _ *Matrix) { m.Enabled, m.RequireJoined, m.PublicURL = false, true, "x" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Default().MatrixRTC
			m.Enabled = true
			mx := Default().Matrix
			tc.edit(&m, &mx)
			v := &validator{}
			v.matrixRTCDiscovery(&m, &mx)
			switch {
			case tc.want == "" && len(v.errs) > 0:
				t.Errorf("got %v, want valid", v.errs)
			case tc.want != "" && (len(v.errs) != 1 || !strings.Contains(v.errs[0].Error(), tc.want)):
				t.Errorf("got %v, want one error containing %q", v.errs, tc.want)
			}
		})
	}
	m := MatrixRTC{BasePath: "/livekit/jwt"}
	if got := m.ServiceURL(); got != "" {
		t.Errorf("ServiceURL() without public_url = %q, want \"\"", got)
	}
	m.PublicURL = "https://icebox.example.org"
	if got, want := m.ServiceURL(), "https://icebox.example.org/livekit/jwt"; got != want {
		t.Errorf("ServiceURL() = %q, want %q", got, want)
	}
}
