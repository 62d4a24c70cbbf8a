package matrixtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// KeyUploadHold is a reverse proxy in front of a homeserver that passes a
// device's first key upload (POST …/keys/upload with device_keys) on to
// the homeserver, then closes Uploaded and never answers it: the client
// waits until it gives the request up. Stopping the client then stops it
// exactly between the homeserver taking the device's keys and the client
// hearing so — what a node stopped, killed or cut from its database at
// that moment leaves behind. Every other request passes through.
type KeyUploadHold struct {
	// Uploaded is closed once the homeserver has the device's keys.
	Uploaded <-chan struct{}

	srv *httptest.Server
}

// URL is the homeserver's URL through the proxy.
func (h *KeyUploadHold) URL() string { return h.srv.URL }

// HoldKeyUpload starts a KeyUploadHold in front of homeserverURL; it
// stops at cleanup.
func HoldKeyUpload(t testing.TB, homeserverURL string) *KeyUploadHold {
	t.Helper()
	target, err := url.Parse(homeserverURL)
	if err != nil {
		t.Fatal(err)
	}
	uploaded := make(chan struct{})
	var once sync.Once
	proxy := httputil.NewSingleHostReverseProxy(target)
	h := &KeyUploadHold{Uploaded: uploaded}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/keys/upload") {
			proxy.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if !bytes.Contains(body, []byte(`"device_keys"`)) {
			r.Body = io.NopCloser(bytes.NewReader(body))
			proxy.ServeHTTP(w, r)
			return
		}
		// The upload goes through even though the client will give up.
		req, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), http.MethodPost, homeserverURL+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("matrixtest: the homeserver refused the device's keys: %s", resp.Status)
		}
		once.Do(func() { close(uploaded) })
		<-r.Context().Done()
	}))
	t.Cleanup(h.srv.Close)
	return h
}
