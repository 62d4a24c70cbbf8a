package matrixtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
)

// Register creates a user through the shared-secret registration API that
// Dendrite copies from Synapse (GET then POST /_synapse/admin/v1/register) and
// returns the new user's ID, an access token and that token's device ID.
// Dendrite lower-cases localpart; a password needs at least 8 characters.
// Every user registered this way gets the device ID "shared_secret_registration":
// use Login for a second, distinct device.
func (hs *Homeserver) Register(t testing.TB, localpart, password string, admin bool) (userID, accessToken, deviceID string) {
	t.Helper()
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := hs.do(http.MethodGet, "/_synapse/admin/v1/register", "", nil, &nonce); err != nil {
		t.Fatalf("matrixtest: register %s: %v", localpart, err)
	}
	// Only these four fields are in the MAC. Synapse's optional user_type
	// would be a fifth; Dendrite does not know it, so do not send it.
	req := struct {
		Nonce    string `json:"nonce"`
		Username string `json:"username"`
		Password string `json:"password"`
		Admin    bool   `json:"admin"`
		MAC      string `json:"mac"`
	}{nonce.Nonce, localpart, password, admin, registrationMAC(hs.sharedSecret, nonce.Nonce, localpart, password, admin)}
	var resp struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if err := hs.do(http.MethodPost, "/_synapse/admin/v1/register", "", req, &resp); err != nil {
		t.Fatalf("matrixtest: register %s: %v", localpart, err)
	}
	if resp.UserID == "" || resp.AccessToken == "" {
		t.Fatalf("matrixtest: register %s: response without user_id or access_token: %+v", localpart, resp)
	}
	return resp.UserID, resp.AccessToken, resp.DeviceID
}

// registrationMAC is hex(HMAC-SHA1(secret, nonce NUL user NUL password NUL
// "admin"|"notadmin")), the MAC of Synapse's shared-secret registration.
func registrationMAC(secret, nonce, user, password string, admin bool) string {
	role := "notadmin"
	if admin {
		role = "admin"
	}
	mac := hmac.New(sha1.New, []byte(secret))
	for i, part := range []string{nonce, user, password, role} {
		if i > 0 {
			mac.Write([]byte{0})
		}
		mac.Write([]byte(part))
	}
	return hex.EncodeToString(mac.Sum(nil))
}

// Login logs user (a localpart or a full user ID) in with a password and
// returns a new access token and its new device ID.
func (hs *Homeserver) Login(t testing.TB, user, password string) (accessToken, deviceID string) {
	t.Helper()
	req := map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]string{"type": "m.id.user", "user": user},
		"password":   password,
	}
	var resp struct {
		AccessToken string `json:"access_token"`
		DeviceID    string `json:"device_id"`
	}
	if err := hs.do(http.MethodPost, "/_matrix/client/v3/login", "", req, &resp); err != nil {
		t.Fatalf("matrixtest: login %s: %v", user, err)
	}
	if resp.AccessToken == "" {
		t.Fatalf("matrixtest: login %s: response without access_token", user)
	}
	return resp.AccessToken, resp.DeviceID
}

// do sends a JSON request and decodes a 200 response into out.
func (hs *Homeserver) do(method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, hs.url+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hs.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: %w: %s", method, path, err, b)
	}
	return nil
}
