package main

// `icebox check --config` with matrixrtc.enabled: the authorization
// service's /healthz and a real livekit-server (started here on loopback),
// passing, and each thing that breaks a call named with what to fix.

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/probe"
)

const (
	lkTestKey    = "APIcheck"
	lkTestSecret = "a-livekit-secret-of-at-least-32-bytes!"
)

// liveKitBinary finds livekit-server as scripts/install-livekit.sh installs
// it; without it the test fails under CI=true and skips elsewhere.
func liveKitBinary(t *testing.T) string {
	t.Helper()
	var candidates []string
	if dir := os.Getenv("LIVEKIT_BIN"); dir != "" {
		candidates = append(candidates, filepath.Join(dir, "livekit-server"))
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		gopath, _, _ := strings.Cut(strings.TrimSpace(string(out)), string(os.PathListSeparator))
		candidates = append(candidates, filepath.Join(gopath, "bin", "livekit-server"))
	}
	if p, err := exec.LookPath("livekit-server"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("livekit-server not found in %q; CI must run scripts/install-livekit.sh (make test-deps)", candidates)
	}
	t.Skip("livekit-server not found: run scripts/install-livekit.sh (make test-deps)")
	return ""
}

// startLiveKit runs livekit-server on 127.0.0.1 with one API key and
// returns its ws:// URL once it answers "OK" on /. It is killed, by its
// PID, at cleanup.
func startLiveKit(t *testing.T) string {
	t.Helper()
	bin := liveKitBinary(t)
	port, rtcTCP, rtcUDP := freePort(t), freePort(t), freePort(t)
	body := fmt.Sprintf(`port: %d
rtc:
  tcp_port: %d
  udp_port: %d
  use_external_ip: false
keys:
  %s: %s
logging:
  level: warn
`, port, rtcTCP, rtcUDP, lkTestKey, lkTestSecret)
	p := startProcess(t, bin, "--bind", "127.0.0.1", "--node-ip", "127.0.0.1", "--config-body", body)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("livekit-server output:\n%s", p.out.String())
		}
	})
	url := "http://" + loopback(port) + "/"
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get(url); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "OK" {
				return "ws://" + loopback(port)
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("livekit-server did not answer on %s; output:\n%s", url, p.out.String())
		}
		time.Sleep(50 * time.Millisecond) // polling the condition, bounded by the deadline
	}
}

// rtcBlock is the matrixrtc section of a test configuration.
func rtcBlock(lkURL, secret, publicURL string) string {
	s := fmt.Sprintf("matrixrtc:\n  enabled: true\n  livekit: {url: %q, api_key: %s, api_secret: %q}\n", lkURL, lkTestKey, secret)
	if publicURL != "" {
		s += fmt.Sprintf("  public_url: %q\n", publicURL)
	}
	return s
}

// writeCheckConfig writes the running icebox's configuration with its
// real HTTP port and another matrixrtc section, for `icebox check --config`
// only.
func writeCheckConfig(t *testing.T, in *instance, rtc string) string {
	t.Helper()
	b, err := os.ReadFile(in.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	base, _, _ := strings.Cut(string(b), "matrixrtc:\n")
	base = strings.ReplaceAll(base, "127.0.0.1:"+fileHTTPPort, loopback(in.httpPort))
	path := filepath.Join(t.TempDir(), "check.yaml")
	if err := os.WriteFile(path, []byte(base+rtc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// rtcResults picks the healthz and LiveKit results from a report.
func rtcResults(t *testing.T, rep *probe.Report) (health, lk *probe.Result) {
	t.Helper()
	for _, r := range rep.Results {
		switch {
		case strings.HasSuffix(r.URL, "/healthz"):
			health = r
		case strings.HasPrefix(r.URL, "ws"):
			lk = r
		}
	}
	if health == nil || lk == nil {
		t.Fatalf("results %+v: want a /healthz and a LiveKit result", rep.Results)
	}
	return health, lk
}

func TestCheckMatrixRTC(t *testing.T) {
	t.Parallel()
	lkURL := startLiveKit(t)
	dir := t.TempDir()
	in := startIcebox(t, testConfig(filepath.Join(dir, "state"), cfgOpts{secret: testSecret})+rtcBlock(lkURL, lkTestSecret, ""))
	public := "http://" + loopback(in.httpPort)

	t.Run("passes on the local listener", func(t *testing.T) {
		rep, code, _ := runCheck(t, lkTestSecret, "--config", writeCheckConfig(t, in, rtcBlock(lkURL, lkTestSecret, "")))
		health, lk := rtcResults(t, rep)
		if code != 0 || !rep.OK || len(rep.Results) != 2 || !health.OK() || !lk.OK() {
			t.Fatalf("exit %d ok %v; healthz %+v; livekit %+v", code, rep.OK, health, lk)
		}
		if len(lk.Steps) != 2 || lk.Steps[1].Name != "api_key" || lk.Steps[1].Status != probe.StatusOK {
			t.Errorf("livekit steps %+v, want reach and api_key ok", lk.Steps)
		}
	})

	t.Run("through the public URL, with TURN URLs, human table", func(t *testing.T) {
		cfg := writeCheckConfig(t, in, rtcBlock(lkURL, lkTestSecret, public))
		rep, code, _ := runCheck(t, lkTestSecret, "--config", cfg, "turn:"+in.turnAddr())
		health, _ := rtcResults(t, rep)
		if code != 0 || len(rep.Results) != 3 || health.URL != public+"/livekit/jwt/healthz" {
			t.Errorf("exit %d, %d results, healthz at %s", code, len(rep.Results), health.URL)
		}
		stdout, stderr, code := runIcebox(t, checkTimeout, "check", "--config", cfg)
		if code != 0 || !strings.Contains(stdout, "PASS: 2 of 2 passed") || strings.Contains(stdout+stderr, lkTestSecret) {
			t.Errorf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
		}
	})

	for _, tc := range []struct {
		name       string
		rtc        string
		healthOK   bool
		lkVerdict  probe.Verdict // "" = ok
		healthWant probe.Verdict
		hint       string // in the failing result's hint
	}{
		{name: "wrong secret", rtc: rtcBlock(lkURL, strings.Repeat("w", 40), ""), healthOK: true,
			lkVerdict: probe.VerdictLiveKitAuth, hint: "must be a pair in livekit-server's keys:"},
		{name: "livekit down", rtc: rtcBlock("ws://"+loopback(freePort(t)), lkTestSecret, ""), healthOK: true,
			lkVerdict: probe.VerdictRefused, hint: "livekit-server's port.signal"},
		{name: "not livekit", rtc: rtcBlock("ws://"+loopback(in.httpPort), lkTestSecret, ""), healthOK: true,
			lkVerdict: probe.VerdictNotLiveKit, hint: "must lead to livekit-server"},
		{name: "proxy path wrong", rtc: rtcBlock(lkURL, lkTestSecret, public+"/elsewhere"),
			healthWant: probe.VerdictHTTPStatus, hint: "the reverse proxy must pass matrixrtc.base_path (/elsewhere/livekit/jwt)"},
		{name: "service down", rtc: rtcBlock(lkURL, lkTestSecret, "http://"+loopback(freePort(t))),
			healthWant: probe.VerdictRefused, hint: "matrixrtc.public_url + matrixrtc.base_path + /healthz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeCheckConfig(t, in, tc.rtc)
			rep, code, _ := runCheck(t, lkTestSecret, "--config", cfg)
			health, lk := rtcResults(t, rep)
			if code != 1 || rep.OK {
				t.Errorf("exit %d ok %v, want 1 and false", code, rep.OK)
			}
			failing := lk
			if tc.healthOK != health.OK() || (!tc.healthOK && health.Verdict != tc.healthWant) {
				t.Errorf("healthz %s: %s, want ok=%v %s", health.Verdict, health.Message, tc.healthOK, tc.healthWant)
			}
			if tc.healthOK {
				if lk.Verdict != tc.lkVerdict {
					t.Errorf("livekit %s: %s, want %s", lk.Verdict, lk.Message, tc.lkVerdict)
				}
			} else {
				failing = health
				if !lk.OK() {
					t.Errorf("livekit %s: %s, want ok", lk.Verdict, lk.Message)
				}
			}
			if !strings.Contains(failing.Hint, tc.hint) {
				t.Errorf("hint %q, want it to say %q", failing.Hint, tc.hint)
			}
		})
	}

	t.Run("config without matrixrtc and no URL", func(t *testing.T) {
		cfg := writeCheckConfig(t, in, "")
		_, stderr, code := runIcebox(t, checkTimeout, "check", "--config", cfg)
		if code != exitConfig || !strings.Contains(stderr, "matrixrtc is not enabled in") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

// TestLocalHTTPBase: where `icebox check` asks the local listener.
func TestLocalHTTPBase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		h    config.HTTP
		want string
	}{
		{config.HTTP{Listen: "127.0.0.1:8080"}, "http://127.0.0.1:8080"},
		{config.HTTP{Listen: "0.0.0.0:8443", TLS: config.TLSFiles{CertFile: "c", KeyFile: "k"}}, "https://127.0.0.1:8443"},
		{config.HTTP{Listen: ":8080"}, "http://127.0.0.1:8080"},
		{config.HTTP{Listen: ":443", TLS: config.TLSFiles{ACME: true}}, "https://127.0.0.1:443"},
		{config.HTTP{Listen: "[::]:8080"}, "http://[::1]:8080"},
		{config.HTTP{Listen: "[2001:db8::1]:8080"}, "http://[2001:db8::1]:8080"},
	} {
		if got := localHTTPBase(tc.h); got != tc.want {
			t.Errorf("localHTTPBase(%+v) = %q, want %q", tc.h, got, tc.want)
		}
	}
}
