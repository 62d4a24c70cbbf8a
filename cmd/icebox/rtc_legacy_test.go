package main

// A legacy m.call.* caller and Element Call through the gateway, both
// sides the real clients: carol runs matrix-js-sdk's legacy MatrixCall
// (element.html, the call code of Element Web's "legacy call"), relayed
// through icebox's TURN as the homeserver's /voip/turnServer hands it out;
// bob runs Element Call's embedded build (rtc-ec.html, what Element X
// runs). carol calls the room, whose calls use MatrixRTC: icebox answers
// for the room, joins its call and rings; bob's Element Call joins, carol
// gets m.call.answer, and they hear and see each other through icebox's
// endpoint and the LiveKit room (rtc_bed_test.go's bed with the gateway).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// legacyRoom is a room (encrypted or not) bob creates with icebox and carol invited
// (carol joins); icebox joins and maps it to a conversation of its own
// (room-<hash>), which is given alice, bob and carol and calls over
// MatrixRTC. It returns the room and the conversation.
func (b *rtcBed) legacyRoom(t *testing.T, encrypted bool) (room, conv string) {
	t.Helper()
	bob, carol := b.users[1], b.users[2]
	req := map[string]any{
		"preset": "private_chat", "name": "legacy caller", "invite": []string{b.iceboxUser, carol},
		"power_level_content_override": map[string]any{"events": map[string]int{"org.matrix.msc3401.call.member": 0}},
	}
	if encrypted {
		req["initial_state"] = []map[string]any{{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}
	}
	code, resp := b.matrixAPI(t, bob, http.MethodPost, "/_matrix/client/v3/createRoom", req)
	var created struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(resp, &created) != nil || created.RoomID == "" {
		t.Fatalf("createRoom: %d %s", code, resp)
	}
	room = created.RoomID
	if code, resp := b.matrixAPI(t, carol, http.MethodPost, "/_matrix/client/v3/join/"+url.PathEscape(room), map[string]any{}); code != http.StatusOK {
		t.Fatalf("carol joins: %d %s", code, resp)
	}
	sum := sha256.Sum256([]byte(room))
	conv = "room-" + hex.EncodeToString(sum[:8])
	if !waitFor(45*time.Second, func() bool {
		code, _ := clientRequest(t, b.hc, http.MethodGet, "http://"+nsHTTP+"/admin/conversations/"+conv, rtcAdminTok, nil)
		return code == http.StatusOK
	}) {
		t.Fatalf("icebox did not join %s and map it", room)
	}
	code, resp = clientRequest(t, b.hc, http.MethodPut, "http://"+nsHTTP+"/admin/conversations/"+conv, rtcAdminTok,
		map[string]any{"participants": []string{"alice", bob, carol}, "room_id": room, "call_protocol": "matrixrtc"})
	if code != http.StatusOK {
		t.Fatalf("PUT /admin/conversations/%s: %d %s", conv, code, resp)
	}
	return room, conv
}

func TestGatewayLegacyCaller(t *testing.T) {
	b := newRTCBedWith(t, rtcBedOpts{gateway: true, matrixTURN: true})
	const alice = "gwl-alice"
	// alice, an icebox client of the rooms' conversations, is connected:
	// she must not be rung.
	b.browser.open(t, alice, b.front+"/icebox.html", "icebox")
	b.browser.call(t, alice, "icebox.connect", nil, jsAliceTok)
	for _, encrypted := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "encrypted"}[encrypted]
		t.Run(name+" room", func(t *testing.T) { b.legacyCall(t, alice, name, encrypted, false) })
	}
	// Element Call's page closes abruptly mid-call (its membership stays
	// behind: Dendrite has no delayed events): the call ends once bob's
	// client is gone from the LiveKit room, and carol's MatrixCall gets
	// m.call.hangup.
	t.Run("Element Call's browser closes abruptly", func(t *testing.T) { b.legacyCall(t, alice, "vanish", false, true) })
}

// legacyCall is one call of carol's (a new matrix-js-sdk device, Rust
// crypto in an encrypted room) to bob's Element Call through the gateway.
// With ecCloses, bob's page closes instead of carol hanging up.
func (b *rtcBed) legacyCall(t *testing.T, alice, name string, encrypted, ecCloses bool) {
	carolPage, ecPage := "gwl-carol-"+name, "gwl-ec-"+name
	room, conv := b.legacyRoom(t, encrypted)

	carol := b.users[2]
	local := strings.TrimPrefix(strings.SplitN(carol, ":", 2)[0], "@")
	tok, dev := b.hs.Login(t, local, rtcPass)
	b.browser.open(t, carolPage, b.front+"/element.html", "harness")
	var login struct {
		TurnServers []struct{ URLs []string }
	}
	b.browser.call(t, carolPage, "harness.login", &login, map[string]any{
		"baseUrl": b.front, "userId": carol, "accessToken": tok, "deviceId": dev, "encryption": encrypted})
	if len(login.TurnServers) == 0 || !strings.Contains(strings.Join(login.TurnServers[0].URLs, " "), browserBedIP+":"+browserBedTURN) {
		t.Fatalf("carol's TURN servers %+v; want icebox's", login.TurnServers)
	}
	b.browser.call(t, carolPage, "harness.roomReady", nil, room, encrypted)
	dump := func() {
		if !t.Failed() {
			return
		}
		var notes []struct{ Call, What string }
		_ = b.browser.try(t, carolPage, "harness.events", &notes, 0)
		t.Logf("carol's matrix-js-sdk: %+v", notes)
		var ev []struct{ What string }
		_ = b.browser.try(t, ecPage, "ec.events", &ev, 0)
		t.Logf("Element Call's host: %+v", ev)
		for _, l := range strings.Split(b.icebox.out.String(), "\n") {
			if strings.Contains(l, "rtccall") || strings.Contains(l, "gateway") || strings.Contains(l, "legacy") || strings.Contains(l, "matrix") {
				t.Logf("icebox: %.400s", l)
			}
		}
	}
	defer dump()

	started := time.Now()
	var callID string
	b.browser.call(t, carolPage, "harness.placeCall", &callID, room, "video")
	carolState := func() elementCall {
		t.Helper()
		var c elementCall
		b.browser.call(t, carolPage, "harness.state", &c, callID)
		return c
	}
	if !waitFor(30*time.Second, func() bool { return b.iceboxMembership(t, room) != nil }) {
		t.Fatal("icebox did not join the room's MatrixRTC call for carol's legacy invite")
	}
	if !encrypted { // an encrypted room's ring is m.room.encrypted to the Go side
		if !waitFor(30*time.Second, func() bool { return len(b.roomEvents(t, room, "org.matrix.msc4075.rtc.notification")) > 0 }) {
			t.Fatal("icebox did not ring the room's MatrixRTC call for carol's legacy invite")
		}
	}
	rang := time.Since(started)
	if v := b.gatewayCall(t, callID); v.Protocol != "matrixrtc" || v.Status != "ringing" {
		t.Fatalf("call %s: %+v; want a ringing matrixrtc call", callID, v)
	}
	if c := carolState(); c.State != "invite_sent" {
		t.Fatalf("carol's call while icebox rings: %s; want invite_sent (she hears ringing)", c.State)
	}

	b.openElementCall(t, ecPage, room)
	defer b.closePage(t, ecPage)
	var c elementCall
	var ec ecState
	flowingAfter := time.Duration(0)
	waitMediaBothWays(t, [2]string{"carol from Element Call", "Element Call from carol"}, func() (bool, mediaIn, mediaIn) {
		c = carolState()
		b.browser.call(t, ecPage, "ec.state", &ec)
		if flowingAfter == 0 && c.State == "connected" && rtpIn(c.Stats).flowing() && ecIn(ec).flowing() {
			flowingAfter = time.Since(started)
		}
		return c.State == "connected", rtpIn(c.Stats), ecIn(ec)
	})
	t.Logf("legacy caller, %s room: icebox in the call (and ringing) %v after placeCall, media both ways %v after it", name, rang.Round(time.Millisecond), flowingAfter.Round(time.Millisecond))
	t.Logf("carol (matrix-js-sdk MatrixCall) received from Element Call: video %d B (%d frames decoded), audio %d B; her path %+v",
		c.Stats.VideoBytesIn, c.Stats.FramesDecoded, c.Stats.AudioBytesIn, c.Stats.Local)
	t.Logf("Element Call received from carol: video %d B (%d frames decoded), audio %d B",
		ec.RTP.VideoBytesIn, ec.RTP.FramesDecoded, ec.RTP.AudioBytesIn)
	if c.Stats.Local == nil || c.Stats.Local.Type != "relay" {
		t.Errorf("carol's selected candidate %+v; want a relay candidate of icebox's TURN", c.Stats.Local)
	}
	if encrypted {
		// The media keys went both ways (Olm-encrypted to-device); no
		// frame failed at icebox but those at bob's join whose key was
		// still on its way (no_key, missing_key: the metric's own note;
		// how many depends on the machine's load, so they are only
		// logged), and carol decoded Element Call's frames throughout the
		// window above.
		m := b.metrics(t)
		failures, atJoin := 0.0, 0.0
		for k, v := range m {
			if !strings.HasPrefix(k, "icebox_e2ee_frame_failures_total") || v == 0 {
				continue
			}
			t.Logf("%s %v", k, v)
			if strings.Contains(k, `reason="no_key"`) || strings.Contains(k, `reason="missing_key"`) {
				atJoin += v
			} else {
				failures += v
			}
		}
		t.Logf("icebox's media keys: received %v, sent %v; frame failures %v (and %v while keys were on their way)",
			m[`icebox_e2ee_keys_received_total{result="accepted"}`], m[`icebox_e2ee_keys_sent_total{result="ok"}`], failures, atJoin)
		if m[`icebox_e2ee_keys_received_total{result="accepted"}`] == 0 || m[`icebox_e2ee_keys_sent_total{result="ok"}`] == 0 || failures != 0 {
			t.Errorf("media keys: want some received and sent, and no frame failure but keys on their way")
		}
	}
	var invites []struct {
		Conversation string `json:"conversation"`
	}
	b.browser.call(t, alice, "icebox.invites", &invites)
	for _, i := range invites {
		if i.Conversation == conv {
			t.Errorf("alice was rung for carol's legacy-bridged call: %+v", invites)
		}
	}

	if ecCloses {
		closed := time.Now()
		b.closePage(t, ecPage)
		var c elementCall
		if !waitFor(60*time.Second, func() bool { c = carolState(); return c.State == "ended" }) {
			t.Fatalf("carol's call still %s 60 s after Element Call's page closed", c.State)
		}
		t.Logf("carol's call ended %v after Element Call's page closed: hangup party %s, reason %s",
			time.Since(closed).Round(100*time.Millisecond), c.HangupParty, c.HangupReason)
		if c.HangupParty != "remote" {
			t.Errorf("carol's call ended by %q; want remote (icebox's m.call.hangup)", c.HangupParty)
		}
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership still in the room")
		}
		return
	}
	// carol hangs up: icebox leaves the room's call, the call ends.
	b.browser.call(t, carolPage, "harness.hangup", nil, callID, "user_hangup")
	if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
		t.Error("icebox's membership still in the room after carol hung up")
	}
	if !waitFor(20*time.Second, func() bool { return b.gatewayCall(t, callID).Status == "ended" }) {
		t.Errorf("after carol's hangup: %+v; want ended", b.gatewayCall(t, callID))
	}
}
