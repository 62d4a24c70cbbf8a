package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func newHandler(t *testing.T) *Handler {
	t.Helper()
	h, err := New()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, method, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestPagesAndAssets(t *testing.T) {
	h := newHandler(t)
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/ui/", "text/html; charset=utf-8", "<title>icebox</title>"},
		{"/ui/ice-test", "text/html; charset=utf-8", `<script src="ice-test.js" defer></script>`},
		{"/ui/call", "text/html; charset=utf-8", `<script src="call.js" defer></script>`},
		{"/ui/status", "text/html; charset=utf-8", `<script src="status.js" defer></script>`},
		{"/ui/common.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/ui/ice-test.js", "text/javascript; charset=utf-8", "iceTransportPolicy: 'relay'"},
		{"/ui/call.js", "text/javascript; charset=utf-8", "captureStream"},
		{"/ui/status.js", "text/javascript; charset=utf-8", "icebox_turn_relayed_bytes_total"},
		{"/ui/style.css", "text/css; charset=utf-8", "--accent"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp := get(t, h, http.MethodGet, tc.path)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if !strings.Contains(string(body), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			checkSecurityHeaders(t, resp)
			if resp.Header.Get("ETag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Errorf("ETag %q, Cache-Control %q; want an ETag and no-cache", resp.Header.Get("ETag"), resp.Header.Get("Cache-Control"))
			}
			// Revalidation with the ETag costs no body.
			again := get(t, h, http.MethodGet, tc.path, "If-None-Match", resp.Header.Get("ETag"))
			if again.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match: status %d, want 304", again.StatusCode)
			}
		})
	}
}

func checkSecurityHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "connect-src 'self' ws: wss:", "object-src 'none'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy %q allows inline or eval", csp)
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q, want nosniff", got)
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options %q, want DENY", got)
	}
}

func TestNotFound(t *testing.T) {
	h := newHandler(t)
	for _, p := range []string{"/ui/nope", "/ui/index.html", "/ui/call.html", "/ui/static/common.js", "/ui/../web.go", "/ui/web.go", "/other"} {
		resp := get(t, h, http.MethodGet, p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
		checkSecurityHeaders(t, resp)
	}
	resp := get(t, h, http.MethodPost, "/ui/")
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/: status %d, Allow %q; want 405 and GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp := get(t, h, http.MethodHead, "/ui/call"); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /ui/call: status %d, want 200", resp.StatusCode)
	}
}

// TestNoInlineScriptOrStyle keeps the pages within the CSP: no inline
// script, no event handler attributes, no style attributes, nothing loaded
// from another origin.
func TestNoInlineScriptOrStyle(t *testing.T) {
	h := newHandler(t)
	inline := regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|\son[a-z]+\s*=|\sstyle\s*=|<style|javascript:`)
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`)
	for _, p := range h.Names() {
		resp := get(t, h, http.MethodGet, p)
		body, _ := io.ReadAll(resp.Body)
		if !strings.HasSuffix(resp.Header.Get("Content-Type"), "html; charset=utf-8") {
			if strings.Contains(string(body), "setAttribute('style'") || strings.Contains(string(body), "innerHTML") {
				t.Errorf("%s sets style attributes or innerHTML (CSP and XSS)", p)
			}
			continue
		}
		if m := inline.FindString(string(body)); m != "" {
			t.Errorf("%s has inline script or style: %q", p, m)
		}
		if m := external.FindString(string(body)); m != "" {
			t.Errorf("%s loads from another origin: %q", p, m)
		}
	}
}
