package matrixtest_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// The invite as Element sends it, byte for byte: "version" is the string "1".
const callInvite = `{"call_id":"c1","party_id":"p1","version":"1","lifetime":60000,"offer":{"type":"offer","sdp":"v=0"}}`

// TestCallInviteRoundTrip is the harness's proof: two users on a real
// Dendrite, a room between them, and an m.call.invite from one reaching the
// other through /sync with its content intact.
func TestCallInviteRoundTrip(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	if got, want := hs.ServerName(), "localhost"; got != want {
		t.Errorf("ServerName() = %q, want %q", got, want)
	}
	if u, err := url.Parse(hs.URL()); err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" {
		t.Errorf("URL() = %q, want http://127.0.0.1:PORT", hs.URL())
	}

	alice, aliceToken, _ := hs.Register(t, "alice", "alice-password", false)
	bob, _, bobDevice := hs.Register(t, "Bob", "bob-password", true)
	if want := "@alice:localhost"; alice != want {
		t.Errorf("Register(alice) user ID = %q, want %q", alice, want)
	}
	if want := "@bob:localhost"; bob != want {
		t.Errorf("Register(Bob) user ID = %q, want %q (Dendrite lower-cases)", bob, want)
	}
	// Bob syncs on a device of his own, as the bridge will.
	bobToken, bobLoginDevice := hs.Login(t, bob, "bob-password")
	if bobLoginDevice == "" || bobLoginDevice == bobDevice {
		t.Errorf("Login device ID = %q, want a new one (registration's is %q)", bobLoginDevice, bobDevice)
	}

	var created struct {
		RoomID string `json:"room_id"`
	}
	call(t, hs, http.MethodPost, "/_matrix/client/v3/createRoom", aliceToken,
		map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob}}, &created)
	room := url.PathEscape(created.RoomID)
	call(t, hs, http.MethodPost, "/_matrix/client/v3/rooms/"+room+"/join", bobToken, map[string]any{}, nil)

	// An initial sync first, so the invite below arrives on a live long-poll.
	var initial syncResponse
	call(t, hs, http.MethodGet, "/_matrix/client/v3/sync?timeout=0", bobToken, nil, &initial)

	sent := time.Now()
	var sendResp struct {
		EventID string `json:"event_id"`
	}
	call(t, hs, http.MethodPut, "/_matrix/client/v3/rooms/"+room+"/send/m.call.invite/txn-c1", aliceToken,
		json.RawMessage(callInvite), &sendResp)

	ev := waitForEvent(t, hs, bobToken, initial.NextBatch, created.RoomID, sendResp.EventID)
	t.Logf("m.call.invite delivered through /sync in %v", time.Since(sent).Round(time.Millisecond))
	if ev.Type != "m.call.invite" || ev.Sender != alice {
		t.Errorf("event type %q from %q, want m.call.invite from %q", ev.Type, ev.Sender, alice)
	}
	var content map[string]json.RawMessage
	if err := json.Unmarshal(ev.Content, &content); err != nil {
		t.Fatalf("content %s: %v", ev.Content, err)
	}
	for field, want := range map[string]string{
		"version":  `"1"`, // a string, not the number 1
		"call_id":  `"c1"`,
		"party_id": `"p1"`,
		"lifetime": `60000`,
		"offer":    `{"sdp":"v=0","type":"offer"}`, // canonical JSON: Dendrite sorts keys
	} {
		if got := canonical(t, content[field]); got != want {
			t.Errorf("content.%s = %s, want %s", field, got, want)
		}
	}
}

// TestWithConfigTURN sets Dendrite's TURN settings through WithConfig and
// checks /voip/turnServer hands out Synapse-style HMAC credentials.
func TestWithConfigTURN(t *testing.T) {
	const secret = "turn-test-secret"
	hs := matrixtest.StartDendrite(t,
		matrixtest.WithConfig("client_api.turn.turn_uris", []string{"turn:127.0.0.1:3478?transport=udp"}),
		matrixtest.WithConfig("client_api.turn.turn_shared_secret", secret),
		matrixtest.WithConfig("client_api.turn.turn_user_lifetime", "1h"),
	)
	user, token, _ := hs.Register(t, "carol", "carol-password", false)
	var turn struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		URIs     []string `json:"uris"`
		TTL      int      `json:"ttl"`
	}
	call(t, hs, http.MethodGet, "/_matrix/client/v3/voip/turnServer", token, nil, &turn)
	if len(turn.URIs) != 1 || turn.URIs[0] != "turn:127.0.0.1:3478?transport=udp" {
		t.Errorf("uris = %q, want [turn:127.0.0.1:3478?transport=udp]", turn.URIs)
	}
	if !regexp.MustCompile(`^[0-9]+:` + regexp.QuoteMeta(user) + `$`).MatchString(turn.Username) {
		t.Errorf("username = %q, want EXPIRY:%s", turn.Username, user)
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(turn.Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); turn.Password != want {
		t.Errorf("password = %q, want base64(HMAC-SHA1(secret, username)) = %q", turn.Password, want)
	}
	if turn.TTL != 3600 {
		t.Errorf("ttl = %d, want 3600", turn.TTL)
	}
}

// TestInstallScriptPinsSameVersion keeps scripts/install-dendrite.sh and
// DendriteVersion in step.
func TestInstallScriptPinsSameVersion(t *testing.T) {
	script, err := os.ReadFile("../../../scripts/install-dendrite.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^DENDRITE_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("scripts/install-dendrite.sh has no DENDRITE_VERSION= line")
	}
	if got := string(m[1]); got != matrixtest.DendriteVersion {
		t.Errorf("install-dendrite.sh pins %s, matrixtest.DendriteVersion is %s", got, matrixtest.DendriteVersion)
	}
}

type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []roomEvent `json:"events"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type roomEvent struct {
	Type    string          `json:"type"`
	EventID string          `json:"event_id"`
	Sender  string          `json:"sender"`
	Content json.RawMessage `json:"content"`
}

// waitForEvent long-polls /sync from since until eventID shows up in room's
// timeline, for at most 15 s.
func waitForEvent(t *testing.T, hs *matrixtest.Homeserver, token, since, room, eventID string) roomEvent {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var resp syncResponse
		call(t, hs, http.MethodGet, "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(since), token, nil, &resp)
		for _, ev := range resp.Rooms.Join[room].Timeline.Events {
			if ev.EventID == eventID {
				return ev
			}
		}
		since = resp.NextBatch
	}
	t.Fatalf("event %s not seen in %s by /sync within 15 s", eventID, room)
	return roomEvent{}
}

// canonical re-encodes a JSON value with sorted keys, as Matrix servers
// return event content; a string stays a string and a number a number.
func canonical(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	if raw == nil {
		return "<absent>"
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// call sends a client-server API request with net/http and decodes the 200
// response into out (when not nil).
func call(t *testing.T, hs *matrixtest.Homeserver, method, path, token string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, hs.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, strings.SplitN(path, "?", 2)[0], err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}
