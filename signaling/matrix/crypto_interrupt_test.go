package matrix_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// uploadCutter is a reverse proxy in front of the homeserver that lets the
// device's first key upload (the one with device_keys) through to the
// homeserver, then tells the test (uploaded) and never answers it: the
// start that sent it is stopped while the homeserver has the keys and
// before the client hears so — what a node stopped, killed or losing its
// database at that moment leaves behind.
type uploadCutter struct {
	srv      *httptest.Server
	uploaded chan struct{}
	once     sync.Once
}

func newUploadCutter(t *testing.T, homeserverURL string) *uploadCutter {
	t.Helper()
	target, err := url.Parse(homeserverURL)
	if err != nil {
		t.Fatal(err)
	}
	c := &uploadCutter{uploaded: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(target)
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		c.once.Do(func() { close(c.uploaded) })
		<-r.Context().Done() // the client gave up: it never hears the keys arrived
	}))
	t.Cleanup(c.srv.Close)
	return c
}

// serverSigningKey returns the ed25519 key the homeserver holds for the
// device ("" if none).
func serverSigningKey(t *testing.T, hs *matrixtest.Homeserver, token, user, device string) string {
	t.Helper()
	var resp struct {
		DeviceKeys map[string]map[string]struct{ Keys map[string]string } `json:"device_keys"`
	}
	api(t, hs.URL(), http.MethodPost, "/_matrix/client/v3/keys/query", token,
		map[string]any{"device_keys": map[string][]string{user: {device}}}, &resp)
	return resp.DeviceKeys[user][device].Keys["ed25519:"+device]
}

// TestEncryptionStartInterruptedAfterKeyUpload: a start stopped after the
// homeserver took the device's keys but before the crypto store marked
// the account as shared (the node stopped, or lost its database, at that
// moment) leaves a store whose account is the one on the homeserver. The
// next start must take it up — the same keys, now marked shared — and
// not refuse the device as one whose store was lost (mautrix's "olm
// account is not marked as shared, but there are keys on the server"),
// which made a node that took the Matrix lease over fail for good
// (TestNodeOneMatrixBridgePerDatabase, issue 18).
func TestEncryptionStartInterruptedAfterKeyUpload(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", servicePassword, false)
	dir := filepath.Join(t.TempDir(), "matrix")
	cut := newUploadCutter(t, hs.URL())

	cfg := encryptedConfig(t, hs, service, dir)
	cfg.HomeserverURL = cut.srv.URL
	first := newBridge(t, cfg, matrix.Timing{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	select {
	case <-cut.uploaded:
	case err := <-done:
		t.Fatalf("the first start ended before uploading its keys: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the first start uploaded no device keys within 60 s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the interrupted start: Run = %v, want nil after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel")
	}
	device, token := storedSession(t, dir)
	onServer := serverSigningKey(t, hs, token, service, device)
	if onServer == "" {
		t.Fatal("the homeserver has no keys of the device: the upload did not go through")
	}

	second := newBridge(t, encryptedConfig(t, hs, service, dir), matrix.Timing{})
	sctx, scancel := context.WithCancel(context.Background())
	defer scancel()
	sdone := make(chan error, 1)
	go func() { sdone <- second.Run(sctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for !matrix.EncryptionUp(second.Bridge) {
		select {
		case err := <-sdone:
			t.Fatalf("the next start refused the device whose keys it uploaded: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("encryption not up within 60 s:\n%s", second.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if again, _ := storedSession(t, dir); again != device {
		t.Fatalf("the next start is device %s, want %s", again, device)
	}
	if got := matrix.OwnSigningKey(second.Bridge); got != onServer {
		t.Fatalf("the next start's signing key %q, the homeserver's %q: not the account whose keys were uploaded", got, onServer)
	}
	scancel()
	select {
	case err := <-sdone:
		if err != nil {
			t.Fatalf("Run = %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel")
	}
}
