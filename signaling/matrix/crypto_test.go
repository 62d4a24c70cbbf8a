package matrix_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

const servicePassword = "service-password-123"

// encryptedConfig is a bridge logging in with the service user's password,
// its device kept in dir.
func encryptedConfig(t *testing.T, hs *matrixtest.Homeserver, service, dir string) matrix.Config {
	t.Helper()
	return matrix.Config{
		HomeserverURL: hs.URL(), UserID: service, Password: servicePassword, Store: openStore(t),
		Encryption: &matrix.Encryption{Dir: dir, Require: true},
	}
}

// storedSession reads the session a password login kept.
func storedSession(t *testing.T, dir string) (deviceID, token string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "session.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		DeviceID    string `json:"device_id"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(raw, &s); err != nil || s.DeviceID == "" || s.AccessToken == "" {
		t.Fatalf("session.json = %s (%v)", raw, err)
	}
	return s.DeviceID, s.AccessToken
}

// crossSigned asks the homeserver whether device is signed by its user's
// self-signing key (what other users' clients check).
func crossSigned(t *testing.T, hs *matrixtest.Homeserver, token, user, device string) bool {
	t.Helper()
	var resp struct {
		DeviceKeys      map[string]map[string]struct{ Signatures map[string]map[string]string } `json:"device_keys"`
		SelfSigningKeys map[string]struct{ Keys map[string]string }                             `json:"self_signing_keys"`
		MasterKeys      map[string]struct{ Keys map[string]string }                             `json:"master_keys"`
	}
	api(t, hs.URL(), http.MethodPost, "/_matrix/client/v3/keys/query", token,
		map[string]any{"device_keys": map[string][]string{user: {}}}, &resp)
	if len(resp.MasterKeys[user].Keys) == 0 {
		return false
	}
	sigs := resp.DeviceKeys[user][device].Signatures[user]
	for keyID := range resp.SelfSigningKeys[user].Keys {
		if sigs[keyID] != "" {
			return true
		}
	}
	return false
}

// fileMode returns a file's permission bits.
func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// runUntilError runs a bridge that must refuse to start and returns its error.
func runUntilError(t *testing.T, tb *testBridge) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := tb.Run(ctx)
	if ctx.Err() != nil {
		t.Fatalf("Run did not give up within 60 s (err %v)", err)
	}
	return err
}

// TestEncryptedDeviceLifecycle: the first start logs in once (a new
// device), keeps the session, pickle key and recovery key 0600, and
// cross-signs the device; a restart is the same device with the same keys
// and signs nothing again; a store without its pickle key, or a lost
// crypto store, stops the bridge with what happened and what to do. No
// secret is ever logged.
//
// Not parallel: run's stop checks that no bridge goroutine is left in the
// whole process.
func TestEncryptedDeviceLifecycle(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", servicePassword, false)
	dir := filepath.Join(t.TempDir(), "matrix")

	first := newBridge(t, encryptedConfig(t, hs, service, dir), matrix.Timing{})
	stop := first.run(t)
	waitFor(t, 60*time.Second, "encryption to come up", func() bool { return matrix.EncryptionUp(first.Bridge) }, first.logs.String)
	stop()
	device, token := storedSession(t, dir)
	for _, f := range []string{"session.json", "pickle.key", "recovery.key", "crypto.db"} {
		if m := fileMode(t, filepath.Join(dir, f)); m&0o077 != 0 {
			t.Errorf("%s has mode %04o, want no access for group or others", f, m)
		}
	}
	if !crossSigned(t, hs, token, service, device) {
		t.Fatalf("device %s is not signed by the account's self-signing key", device)
	}
	recovery, err := os.ReadFile(filepath.Join(dir, "recovery.key"))
	if err != nil {
		t.Fatal(err)
	}

	second := newBridge(t, encryptedConfig(t, hs, service, dir), matrix.Timing{})
	stop = second.run(t)
	waitFor(t, 60*time.Second, "encryption to come up again", func() bool { return matrix.EncryptionUp(second.Bridge) }, second.logs.String)
	stop()
	if again, _ := storedSession(t, dir); again != device {
		t.Fatalf("restart: device %s, want the same device %s", again, device)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "recovery.key")); string(now) != string(recovery) {
		t.Fatal("restart made a new recovery key")
	}
	for _, line := range []string{"password login", "cross-signed", "new_store\":true"} {
		if strings.Contains(second.logs.String(), line) {
			t.Errorf("restart logged %q: it should reuse the device and its keys\n%s", line, second.logs.String())
		}
	}

	// The pickle key is gone but the store is there: unreadable, said so.
	pickle, err := os.ReadFile(filepath.Join(dir, "pickle.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "pickle.key")); err != nil {
		t.Fatal(err)
	}
	noPickle := newBridge(t, encryptedConfig(t, hs, service, dir), matrix.Timing{})
	if err := runUntilError(t, noPickle); err == nil || !strings.Contains(err.Error(), "pickle.key is missing but the crypto store") {
		t.Fatalf("Run without the pickle key = %v", err)
	}

	// The crypto store is lost while the homeserver keeps the device's keys.
	for _, f := range []string{"crypto.db", "crypto.db-wal", "crypto.db-shm"} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	lost := newBridge(t, encryptedConfig(t, hs, service, dir), matrix.Timing{})
	err = runUntilError(t, lost)
	if err == nil || !strings.Contains(err.Error(), "does not hold them") || !strings.Contains(err.Error(), "log in as a new device") {
		t.Fatalf("Run with a lost crypto store = %v, want the loss explained", err)
	}

	for _, tb := range []*testBridge{first, second, noPickle, lost} {
		logs := tb.logs.String()
		for name, secret := range map[string]string{
			"pickle key": strings.TrimSpace(string(pickle)), "recovery key": strings.TrimSpace(string(recovery)),
			"password": servicePassword, "access token": token,
		} {
			if strings.Contains(logs, secret) {
				t.Errorf("the %s appears in the bridge's log", name)
			}
		}
	}
}
