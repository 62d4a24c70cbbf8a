package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// TestNodeCallProtocolMatrixRTC runs the binary's node with Matrix on a
// real Dendrite and matrix.call_protocol: auto.
//
//   - The conversation's resolved protocol (GET /admin/conversations/{id})
//     is legacy while the room has no MatrixRTC call, and a call placed then
//     rings as before (201); it turns matrixrtc (live_call) once bob sends
//     his call membership as Element Call sends it: the bridge's sync feeds
//     the signaling service's RTCRooms.
//   - A call placed in it then (REST and WebSocket command) is refused with
//     409 matrixrtc_unsupported instead of going out as an m.call.invite
//     Element X cannot answer.
//   - A membership icebox's own device sent before it stopped (JoinRTC on
//     the first node) is emptied when the next node starts on the same
//     state_dir (issue 17 item 6).
func TestNodeCallProtocolMatrixRTC(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	svcToken, svcDevice := hs.Login(t, svcID, "icebox-password")
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	bobToken, bobDevice := hs.Login(t, bobID, "bob-password")

	const adminToken, aliceToken = "node-test-admin-token", "node-test-alice-token"
	opts := func() node.Options {
		auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{StaticTokens: []httpapi.StaticToken{
			{SHA256: sha256.Sum256([]byte(adminToken)), User: "admin", Admin: true},
			{SHA256: sha256.Sum256([]byte(aliceToken)), User: "alice"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel), Auth: auth}
	}
	stateDir := filepath.Join(t.TempDir(), "state")
	cfg := nodetest.Config(stateDir, testSecret)
	cfg.Matrix.Enabled = true
	cfg.Matrix.HomeserverURL = hs.URL()
	cfg.Matrix.ServiceUser = svcID
	cfg.Matrix.AccessToken = svcToken
	cfg.Matrix.DeviceID = svcDevice
	cfg.Matrix.CallProtocol = config.CallProtocolAuto
	cfg.Matrix.InviteWait = 0
	n := nodetest.Start(t, cfg, opts())
	base := "http://" + n.Addrs.HTTP

	type resolved struct {
		Protocol, Setting, Source, Reason string
		LiveRTC                           int `json:"live_rtc_members"`
	}
	var conv struct {
		RoomID   string   `json:"room_id"`
		Resolved resolved `json:"call_protocol_resolved"`
	}
	code, body := doReq(t, adminToken, http.MethodPut, base+"/admin/conversations/c1", `{"participants":["alice","`+bobID+`"]}`)
	if code != http.StatusOK || json.Unmarshal(body, &conv) != nil || conv.RoomID == "" {
		t.Fatalf("PUT conversation: %d %s", code, body)
	}
	room := conv.RoomID
	// bob accepts the invitation to the room icebox made (power 0 for
	// call memberships), so he may send his membership.
	poll(t, 20*time.Second, "bob joins the conversation's room", func() bool {
		code, _ := doReq(t, bobToken, http.MethodPost, hs.URL()+"/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/join", `{}`)
		return code == http.StatusOK
	})
	view := func() resolved {
		t.Helper()
		var v struct {
			Resolved resolved `json:"call_protocol_resolved"`
		}
		code, body := doReq(t, adminToken, http.MethodGet, base+"/admin/conversations/c1", "")
		if code != http.StatusOK || json.Unmarshal(body, &v) != nil {
			t.Fatalf("GET conversation: %d %s", code, body)
		}
		return v.Resolved
	}
	waitView := func(what, protocol, reason string, live int) {
		t.Helper()
		var last resolved
		poll(t, 20*time.Second, what, func() bool {
			last = view()
			return last.Protocol == protocol && last.Reason == reason && last.LiveRTC == live
		})
		t.Logf("%s: %+v", what, last)
	}
	if v := view(); v.Protocol != "legacy" || v.Setting != "auto" || v.Source != "default" || v.Reason != "no_rtc_call" {
		t.Fatalf("before any MatrixRTC call: %+v, want legacy (auto, default, no_rtc_call)", v)
	}
	// auto resolving to legacy: calls go as before.
	initiate := `{"conversation_id":"c1","sdp_offer":"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}`
	code, body = doReq(t, aliceToken, http.MethodPost, base+"/calls/initiate", initiate)
	var call struct{ ID string }
	if code != http.StatusCreated || json.Unmarshal(body, &call) != nil {
		t.Fatalf("initiate with auto → legacy: %d %s, want 201", code, body)
	}
	if code, body := doReq(t, aliceToken, http.MethodPost, base+"/calls/"+call.ID+"/hangup", `{}`); code != http.StatusOK {
		t.Fatalf("hangup: %d %s", code, body)
	}

	// bob joins a MatrixRTC call as Element Call does (matrix-js-sdk v43,
	// session form).
	bobKey := "_" + bobID + "_" + bobDevice + "_m.call"
	sendState(t, hs.URL(), bobToken, room, bobKey, map[string]any{
		"application": "m.call", "call_id": "", "scope": "m.room", "device_id": bobDevice,
		"created_ts": time.Now().UnixMilli(), "expires": (4 * time.Hour).Milliseconds(),
		"focus_active":   map[string]any{"type": "livekit", "focus_selection": "oldest_membership"},
		"foci_preferred": []any{map[string]any{"type": "livekit", "livekit_service_url": "http://127.0.0.1:1/livekit/jwt", "livekit_alias": room}},
		"m.call.intent":  "audio",
	})
	waitView("matrixrtc once bob's membership is synced", "matrixrtc", "live_call", 1)

	// A call now would be an m.call.invite bob's Element X cannot answer.
	code, body = doReq(t, aliceToken, http.MethodPost, base+"/calls/initiate", initiate)
	if code != http.StatusConflict || !strings.Contains(string(body), `"code":"matrixrtc_unsupported"`) {
		t.Fatalf("initiate in a matrixrtc conversation: %d %s, want 409 matrixrtc_unsupported", code, body)
	}
	t.Logf("REST initiate refused: %d %s", code, body)
	wsErr := wsInitiate(t, n.Addrs.HTTP, aliceToken, initiate)
	if wsErr.Type != "error" || wsErr.Error.Code != "matrixrtc_unsupported" {
		t.Fatalf("WebSocket initiate: %+v, want error matrixrtc_unsupported", wsErr)
	}
	var active struct{ Calls []json.RawMessage }
	code, body = doReq(t, aliceToken, http.MethodGet, base+"/calls?conversation_id=c1&active=true", "")
	if code != http.StatusOK || json.Unmarshal(body, &active) != nil || len(active.Calls) != 0 {
		t.Fatalf("active calls after the refusals: %d %s, want none", code, body)
	}

	// icebox's device joins the call (what the gateway will do), then
	// icebox stops without leaving it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bridge := n.MatrixBridge()
	if _, err := bridge.JoinRTC(ctx, room, matrix.RTCMembership{ServiceURL: "http://127.0.0.1:1/livekit/jwt"}); err != nil {
		t.Fatal(err)
	}
	waitView("icebox's membership synced", "matrixrtc", "live_call", 2)
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	svcKey := "_" + svcID + "_" + svcDevice + "_m.call"
	if m, left := readMembership(t, hs.URL(), svcToken, room, svcID, svcKey); left || !m.Live(time.Now()) {
		t.Fatalf("icebox's membership before the restart: %+v, left %v; want live", m, left)
	}

	// Restarted on the same state_dir: the membership is emptied, bob's
	// stays.
	n = nodetest.Start(t, cfg, opts())
	base = "http://" + n.Addrs.HTTP
	poll(t, 30*time.Second, "icebox's stale membership emptied at start-up", func() bool {
		_, left := readMembership(t, hs.URL(), svcToken, room, svcID, svcKey)
		return left
	})
	if m, left := readMembership(t, hs.URL(), bobToken, room, bobID, bobKey); left || !m.Live(time.Now()) {
		t.Fatalf("bob's membership after icebox's restart: %+v, left %v; want it untouched", m, left)
	}
	waitView("after the restart only bob is in the call", "matrixrtc", "live_call", 1)
}

// doReq sends an HTTP request with a bearer token and returns the status and
// body.
func doReq(t *testing.T, token, method, url, body string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// sendState sends a MatrixRTC call membership state event.
func sendState(t *testing.T, hsURL, token, room, key string, content map[string]any) {
	t.Helper()
	b, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	u := hsURL + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/state/" + membership.EventType + "/" + url.PathEscape(key)
	if code, body := doReq(t, token, http.MethodPut, u, string(b)); code != http.StatusOK {
		t.Fatalf("membership %s: %d %s", key, code, body)
	}
}

// readMembership reads a membership state event from the homeserver and
// parses it as matrix-js-sdk does.
func readMembership(t *testing.T, hsURL, token, room, sender, key string) (membership.Member, bool) {
	t.Helper()
	u := hsURL + "/_matrix/client/v3/rooms/" + url.PathEscape(room) + "/state/" + membership.EventType + "/" + url.PathEscape(key)
	code, body := doReq(t, token, http.MethodGet, u, "")
	if code != http.StatusOK {
		t.Fatalf("membership %s: %d %s", key, code, body)
	}
	m, left, err := membership.Parse(bytes.TrimSpace(body), sender, key, time.Now())
	if err != nil {
		t.Fatalf("membership %s: %v (%s)", key, err, body)
	}
	return m, left
}

type wsErrorReply struct {
	Type  string
	Ref   string
	Error struct{ Code, Message string }
}

// wsInitiate sends the initiate command over GET /ws and returns the reply
// to it.
func wsInitiate(t *testing.T, addr, token, req string) wsErrorReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var cmd map[string]any
	if err := json.Unmarshal([]byte(req), &cmd); err != nil {
		t.Fatal(err)
	}
	cmd["type"], cmd["ref"] = "initiate", "r1"
	if err := wsjson.Write(ctx, c, cmd); err != nil {
		t.Fatal(err)
	}
	for range 16 { // events may come first; the reply names its ref
		var m wsErrorReply
		if err := wsjson.Read(ctx, c, &m); err != nil {
			t.Fatal(err)
		}
		if m.Ref == "r1" {
			return m
		}
	}
	t.Fatal("no reply to the initiate command")
	return wsErrorReply{}
}
