package node_test

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

// keyUploadHold is a reverse proxy in front of the homeserver for one
// node: it passes the device's first key upload (the one with
// device_keys) on to the homeserver, then says so (uploaded) and holds the
// answer until the node gives up the request. Stopping the node then
// stops its bridge's start exactly between the homeserver taking the
// device's keys and the crypto store recording that it did — the moment
// that once left the next node unable to run the bridge.
type keyUploadHold struct {
	srv      *httptest.Server
	uploaded chan struct{}
	once     sync.Once
}

func newKeyUploadHold(t *testing.T, homeserverURL string) *keyUploadHold {
	t.Helper()
	target, err := url.Parse(homeserverURL)
	if err != nil {
		t.Fatal(err)
	}
	h := &keyUploadHold{uploaded: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(target)
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
			t.Errorf("the homeserver refused the device's keys: %s", resp.Status)
		}
		h.once.Do(func() { close(h.uploaded) })
		<-r.Context().Done()
	}))
	t.Cleanup(h.srv.Close)
	return h
}
