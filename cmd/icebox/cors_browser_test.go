package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestCORSInChromium: a page on another origin listed in
// http.cors.allowed_origins fetches /voip/turnServer with its token (the
// browser's preflight answered without one) and opens /ws, in Debian's
// Chromium; the same page on an origin not listed gets neither (the
// browser blocks the fetch, icebox refuses the socket).
func TestCORSInChromium(t *testing.T) {
	t.Parallel()
	dir := requireChromium(t, "CORS browser test", "e2e", func(dir string) string {
		if _, err := os.Stat(filepath.Join(dir, "node_modules/playwright-core/package.json")); err != nil {
			return "node_modules/playwright-core missing in web/e2e (npm ci there)"
		}
		return ""
	})
	// The page's server: one port, two origins (127.0.0.1 and localhost
	// differ in host).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	page := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><title>another origin</title>"))
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = page.Serve(ln) }()
	t.Cleanup(func() { _ = page.Close() })
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	allowed, other := "http://127.0.0.1:"+port, "http://localhost:"+port

	const token = "cors-browser-token-0123456789"
	sum := sha256.Sum256([]byte(token))
	cfg := testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}) +
		"  cors: {allowed_origins: [\"" + allowed + "\"]}\n" +
		"auth:\n  static_tokens: [{sha256: " + hex.EncodeToString(sum[:]) + ", user: alice}]\n"
	in := startIceboxProcess(t, cfg)

	cmd := exec.Command("node", filepath.Join(dir, "cors.js"), in.httpURL(""), allowed+"/", other+"/")
	cmd.Env = append(os.Environ(), "CORS_E2E_TOKEN="+token)
	done := make(chan struct{})
	var outBytes []byte
	var runErr error
	go func() { outBytes, runErr = cmd.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("node cors.js did not finish within 90s")
	}
	var res map[string]struct {
		Fetch any      `json:"fetch"`
		URIs  []string `json:"uris"`
		WS    string   `json:"ws"`
	}
	if err := json.Unmarshal(outBytes, &res); err != nil || runErr != nil {
		t.Fatalf("node cors.js: %v, %v; output %s", runErr, err, outBytes)
	}
	t.Logf("from %s: %+v; from %s: %+v", allowed, res[allowed+"/"], other, res[other+"/"])
	if r := res[allowed+"/"]; r.Fetch != float64(http.StatusOK) || len(r.URIs) == 0 || r.WS != "open" {
		t.Errorf("page on the allowed origin %s: fetch %v (uris %q), ws %q; want 200 with URIs, open", allowed, r.Fetch, r.URIs, r.WS)
	}
	if r := res[other+"/"]; r.Fetch == float64(http.StatusOK) || r.WS == "open" {
		t.Errorf("page on the origin %s not listed: fetch %v, ws %q; want both refused", other, r.Fetch, r.WS)
	}
}
