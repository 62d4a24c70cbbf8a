// Package web is icebox's embedded web UI: plain HTML, CSS and JavaScript
// (no bundler, nothing fetched from elsewhere) compiled into the binary with
// go:embed and served under /ui/ by the HTTP API when http.ui is on.
//
// Pages: /ui/ (an index), /ui/ice-test (gathers candidates against the ICE
// servers icebox hands out and runs a relay-only call inside the page),
// /ui/call (a two-person call over icebox's WebSocket signaling and TURN
// relay) and /ui/status (live allocations, calls, relayed bandwidth, Matrix
// and keyring state; admin token). The pages themselves are public and hold
// no secret: each asks for an API token, keeps it in sessionStorage and sends
// it with the API requests it makes.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// Prefix is where the UI is mounted.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every UI response: scripts, styles and
// everything else only from icebox itself (no inline script or style), API
// calls to the same origin and WebSockets (the signaling socket), media from
// the page's own streams.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " +
	"media-src 'self' blob: mediastream:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// pages maps the page names under Prefix to their files.
var pages = map[string]string{
	"":         "index.html",
	"ice-test": "ice-test.html",
	"call":     "call.html",
	"status":   "status.html",
}

// contentTypes are set explicitly: the host's mime.types must not decide
// what a script is served as (with nosniff, a wrong type breaks the page).
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// file is one embedded file, read once.
type file struct {
	body        []byte
	contentType string
	etag        string
}

// Handler serves the UI. Mount it at Prefix (it expects the full request
// path); GET and HEAD only.
type Handler struct {
	files map[string]file // by name under static/
}

var _ http.Handler = (*Handler)(nil)

// New reads the embedded files.
func New() (*Handler, error) {
	h := &Handler{files: map[string]file{}}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := contentTypes[path.Ext(p)]
		if !ok {
			return nil // not served
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		h.files[strings.TrimPrefix(p, "static/")] = file{
			body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`,
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// Names lists the served paths under Prefix: pages, then assets (tests).
func (h *Handler) Names() []string {
	var out []string
	for p := range pages {
		out = append(out, Prefix+p)
	}
	for name := range h.files {
		if path.Ext(name) != ".html" {
			out = append(out, Prefix+name)
		}
	}
	return out
}

// ServeHTTP serves a page or an asset with the security headers.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	// Camera and microphone for the call demo only, on this origin.
	hdr.Set("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	f, ok := h.lookup(r.URL.Path)
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	hdr.Set("Content-Type", f.contentType)
	// Revalidate every time (cheap with the ETag): a new icebox version
	// must not run against a cached script of the old one.
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// lookup maps a request path to a file: a page name (no extension) or an
// asset name, directly under Prefix.
func (h *Handler) lookup(p string) (file, bool) {
	name, ok := strings.CutPrefix(p, Prefix)
	if !ok || strings.Contains(name, "/") {
		return file{}, false
	}
	if page, ok := pages[name]; ok {
		name = page
	} else if path.Ext(name) == ".html" {
		return file{}, false // pages are served by their names only
	}
	f, ok := h.files[name]
	return f, ok
}
