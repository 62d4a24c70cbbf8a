package matrix_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

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
	cut := matrixtest.HoldKeyUpload(t, hs.URL())

	cfg := encryptedConfig(t, hs, service, dir)
	cfg.HomeserverURL = cut.URL()
	first := newBridge(t, cfg, matrix.Timing{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx) }()
	select {
	case <-cut.Uploaded:
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
