package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKeyringRotationKeepsCallsRelaying(t *testing.T) {
	t.Parallel()
	const adminTok, aliceTok = "rotation-admin-token-0123", "rotation-alice-token-0123"
	tokens := func(tok, user string) string {
		sum := sha256.Sum256([]byte(tok))
		return hex.EncodeToString(sum[:]) + ":" + user
	}
	env := "ICEBOX_AUTH_STATIC_TOKENS=" + tokens(adminTok, "ops") + ":admin," + tokens(aliceTok, "alice")
	cfg := testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{}) // generated, so managed, keyring
	in := startIcebox(t, cfg, env)

	activeKID := func(in *instance) string {
		code, body := httpGet(t, in.httpURL("/calls/ice_servers"), aliceTok)
		if code != http.StatusOK {
			t.Fatalf("ice_servers: %d %s", code, body)
		}
		var resp struct {
			ICEServers []struct{ Username string } `json:"ice_servers"`
		}
		if err := json.Unmarshal(body, &resp); err != nil {
			t.Fatal(err)
		}
		for _, s := range resp.ICEServers {
			if s.Username != "" {
				return strings.SplitN(strings.SplitN(s.Username, ":", 2)[0], ".", 2)[1]
			}
		}
		t.Fatalf("no TURN credential in %s", body)
		return ""
	}
	if got := activeKID(in); got != "k1" {
		t.Fatalf("active kid before rotation = %s", got)
	}
	before := mintCreds(t, in.cfgPath, "alice") // k1
	alloc, err := allocate(t, "udp", in.turnAddr(), nil, before.Username, before.Password)
	if err != nil {
		t.Fatal(err)
	}
	peer := listenPeer(t)
	relayRoundTrip(t, alloc, peer)

	out, errOut, code := runIcebox(t, 10*time.Second, "keyring", "rotate", "--url", in.httpURL(""), "--token", adminTok)
	if code != 0 {
		t.Fatalf("keyring rotate: exit %d: %s %s", code, out, errOut)
	}
	var info struct {
		ActiveKID string `json:"active_kid"`
		Keys      []struct {
			KID      string     `json:"kid"`
			RetireAt *time.Time `json:"retire_at"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("rotate output %q: %v", out, err)
	}
	// k1 is the compat secret (homeservers may share it): a plain rotation
	// leaves it accepted, without a retirement date.
	if info.ActiveKID != "k2" || len(info.Keys) != 2 || info.Keys[1].KID != "k1" || info.Keys[1].RetireAt != nil {
		t.Fatalf("after rotate: %s", out)
	}
	// The live allocation keeps relaying; the old credential still allocates; new ones use k2.
	relayRoundTrip(t, alloc, peer)
	if _, err := allocate(t, "udp", in.turnAddr(), nil, before.Username, before.Password); err != nil {
		t.Fatalf("a k1 credential was refused right after the rotation: %v", err)
	}
	if got := activeKID(in); got != "k2" {
		t.Fatalf("active kid after rotation = %s", got)
	}

	// The rotation survives a restart.
	in.stop(t)
	again := startIcebox(t, cfg, env)
	if got := activeKID(again); got != "k2" {
		t.Fatalf("active kid after restart = %s, want k2", got)
	}
	out, _, code = runIcebox(t, 10*time.Second, "keyring", "list", "--url", again.httpURL(""), "--token", adminTok)
	if code != 0 || !strings.Contains(out, `"kid":"k1"`) {
		t.Fatalf("keyring list after restart: exit %d %s", code, out)
	}

	// Rotating the compat role too: k3 signs and verifies kid-less
	// usernames; k1 and k2 retire.
	out, errOut, code = runIcebox(t, 10*time.Second, "keyring", "rotate", "--compat", "--url", again.httpURL(""), "--token", adminTok)
	if code != 0 {
		t.Fatalf("keyring rotate --compat: exit %d: %s %s", code, out, errOut)
	}
	info.Keys = nil
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.ActiveKID != "k3" || len(info.Keys) != 3 || info.Keys[1].RetireAt == nil || info.Keys[2].RetireAt == nil ||
		!strings.Contains(out, `{"kid":"k3","compat":true}`) {
		t.Fatalf("after rotate --compat: %s", out)
	}
}

func TestKeyringRotateRefusedForConfiguredSecrets(t *testing.T) {
	t.Parallel()
	const adminTok = "rotation-admin-token-4567"
	sum := sha256.Sum256([]byte(adminTok))
	in := startIcebox(t, testConfig(filepath.Join(t.TempDir(), "state"), cfgOpts{secret: testSecret}),
		"ICEBOX_AUTH_STATIC_TOKENS="+hex.EncodeToString(sum[:])+":ops:admin")
	_, errOut, code := runIcebox(t, 10*time.Second, "keyring", "rotate", "--url", in.httpURL(""), "--token", adminTok)
	if code != 1 || !strings.Contains(errOut, "keyring_not_managed") {
		t.Fatalf("rotate with configured secrets: exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = runIcebox(t, 10*time.Second, "keyring", "rotate", "--url", in.httpURL(""))
	if code != 2 || !strings.Contains(errOut, "admin token") {
		t.Fatalf("rotate without a token: exit %d, stderr %q", code, errOut)
	}
}
