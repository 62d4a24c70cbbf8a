package main

// `icebox matrixrtc well-known`: the .well-known/matrix/client fragment from
// the configuration or --public-url, and the errors that say what is
// missing.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rtcConfig writes a configuration with the MatrixRTC service on (extra is
// appended under matrixrtc:) and returns its path.
func rtcConfig(t *testing.T, enabled bool, extra string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := "state_dir: " + filepath.Join(dir, "state") + "\nmatrixrtc:\n" +
		"  enabled: " + map[bool]string{true: "true", false: "false"}[enabled] + "\n" +
		"  livekit: {url: \"ws://127.0.0.1:7880\", api_key: APIkey, api_secret: \"a-livekit-secret-of-at-least-32-bytes!\"}\n" + extra
	path := filepath.Join(dir, "icebox.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMatrixRTCWellKnown(t *testing.T) {
	t.Parallel()
	type foci struct {
		Foci []struct {
			Type string `json:"type"`
			URL  string `json:"livekit_service_url"`
		} `json:"org.matrix.msc4143.rtc_foci"`
	}
	for _, tc := range []struct {
		name     string
		enabled  bool
		extra    string
		args     []string
		wantURL  string // "" = an error
		wantCode int
		wantErr  string
	}{
		{name: "from the config", enabled: true, extra: "  public_url: https://icebox.example.org\n",
			wantURL: "https://icebox.example.org/livekit/jwt"},
		{name: "base path and prefix", enabled: true, extra: "  public_url: https://example.org/icebox\n  base_path: /rtc\n",
			wantURL: "https://example.org/icebox/rtc"},
		{name: "flag wins", enabled: true, extra: "  public_url: https://old.example.org\n", args: []string{"--public-url", "https://new.example.org"},
			wantURL: "https://new.example.org/livekit/jwt"},
		{name: "flag alone", enabled: true, args: []string{"--public-url", "https://icebox.example.org:8443"},
			wantURL: "https://icebox.example.org:8443/livekit/jwt"},
		{name: "no public url", enabled: true, wantCode: exitConfig,
			wantErr: "the public URL of icebox's HTTP API is not known: set matrixrtc.public_url in"},
		{name: "bad flag", enabled: true, args: []string{"--public-url", "icebox.example.org"}, wantCode: exitConfig,
			wantErr: `--public-url: "icebox.example.org" is not an http(s) URL`},
		{name: "service off", enabled: false, args: []string{"--public-url", "https://icebox.example.org"}, wantCode: exitConfig,
			wantErr: "matrixrtc.enabled is false in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := rtcConfig(t, tc.enabled, tc.extra)
			stdout, stderr, code := runIcebox(t, 30*time.Second, append([]string{"matrixrtc", "well-known", "--config", path}, tc.args...)...)
			if tc.wantURL == "" {
				if code != tc.wantCode || !strings.Contains(stderr, tc.wantErr) || stdout != "" {
					t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, stdout, stderr, tc.wantCode, tc.wantErr)
				}
				return
			}
			var got foci
			if err := json.Unmarshal([]byte(stdout), &got); err != nil || code != 0 {
				t.Fatalf("exit %d, stdout %q (%v), stderr %q", code, stdout, err, stderr)
			}
			if len(got.Foci) != 1 || got.Foci[0].Type != "livekit" || got.Foci[0].URL != tc.wantURL {
				t.Errorf("rtc_foci %+v, want one livekit focus at %s", got.Foci, tc.wantURL)
			}
		})
	}

	// No subcommand, or another one: the usage and exit 2.
	_, stderr, code := runIcebox(t, 30*time.Second, "matrixrtc")
	if code != exitConfig || !strings.Contains(stderr, "want a subcommand: well-known") {
		t.Errorf("icebox matrixrtc: exit %d, stderr %q", code, stderr)
	}
	// An http URL works (a test bed) but warns.
	_, stderr, code = runIcebox(t, 30*time.Second, "matrixrtc", "well-known", "--config", rtcConfig(t, true, ""), "--public-url", "http://127.0.0.1:8080")
	if code != 0 || !strings.Contains(stderr, "is not https") {
		t.Errorf("http public url: exit %d, stderr %q; want 0 and a warning", code, stderr)
	}
}
