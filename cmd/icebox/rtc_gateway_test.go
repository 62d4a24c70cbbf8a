package main

// The MatrixRTC gateway with the real clients on both sides: alice is an
// icebox client (icebox.html: icebox's WebSocket API and an
// RTCPeerConnection, relay-only through icebox's TURN), bob runs Element
// Call's embedded build (rtc-ec.html, the code Element X runs) — no legacy
// m.call.* anywhere. alice calls bob in a conversation whose calls use
// MatrixRTC: icebox answers her offer with its own endpoint, joins the
// room's call for her and rings; bob's Element Call joins the call, which
// answers it, and the media flows both ways through the LiveKit room
// (rtc_bed_test.go's bed, with icebox's Matrix bridge and gateway on).

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// gatewayRoom is a room bob creates (encrypted or not) where every member
// may send call memberships, as Element Web sets rooms up for Element
// Call, mapped to conversation conv (alice and bob, calls over MatrixRTC);
// bob invites icebox, which joins.
func (b *rtcBed) gatewayRoom(t *testing.T, conv string, encrypted bool) string {
	t.Helper()
	bob := b.users[1]
	req := map[string]any{
		"preset": "private_chat", "name": "gateway " + conv, "invite": []string{b.iceboxUser},
		"power_level_content_override": map[string]any{"events": map[string]int{"org.matrix.msc3401.call.member": 0}},
	}
	if encrypted {
		req["initial_state"] = []map[string]any{{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}
	}
	code, resp := b.matrixAPI(t, bob, http.MethodPost, "/_matrix/client/v3/createRoom", req)
	var room struct {
		RoomID string `json:"room_id"`
	}
	if code != http.StatusOK || json.Unmarshal(resp, &room) != nil || room.RoomID == "" {
		t.Fatalf("createRoom %s: %d %s", conv, code, resp)
	}
	code, resp = clientRequest(t, b.hc, http.MethodPut, "http://"+nsHTTP+"/admin/conversations/"+conv, rtcAdminTok,
		map[string]any{"participants": []string{"alice", bob}, "room_id": room.RoomID, "call_protocol": "matrixrtc"})
	if code != http.StatusOK {
		t.Fatalf("PUT /admin/conversations/%s: %d %s", conv, code, resp)
	}
	if !waitFor(45*time.Second, func() bool {
		code, resp := b.matrixAPI(t, bob, http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room.RoomID)+"/joined_members", nil)
		return code == http.StatusOK && strings.Contains(string(resp), b.iceboxUser)
	}) {
		t.Fatalf("icebox did not join %s", room.RoomID)
	}
	return room.RoomID
}

// iceboxMembership is icebox's device's call membership in room as the
// homeserver has it: its content's keys (none once emptied).
func (b *rtcBed) iceboxMembership(t *testing.T, room string) map[string]json.RawMessage {
	t.Helper()
	code, resp := b.matrixAPI(t, b.users[1], http.MethodGet, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/state", nil)
	if code != http.StatusOK {
		t.Fatalf("room state of %s: %d %s", room, code, resp)
	}
	var events []struct {
		Type     string                     `json:"type"`
		StateKey string                     `json:"state_key"`
		Sender   string                     `json:"sender"`
		Content  map[string]json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(resp, &events); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Type == "org.matrix.msc3401.call.member" && e.Sender == b.iceboxUser && len(e.Content) > 0 {
			return e.Content
		}
	}
	return nil
}

// roomEvents are the room's timeline events of type typ, newest first, as
// bob reads them (a plain room: an encrypted one shows m.room.encrypted).
func (b *rtcBed) roomEvents(t *testing.T, room, typ string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, raw := range b.hs.RoomMessages(t, b.tokens[b.users[1]], room) {
		var ev map[string]any
		if json.Unmarshal(raw, &ev) == nil && ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// openElementCall opens bob's Element Call (a new device) in room, which
// joins the room's call at once.
func (b *rtcBed) openElementCall(t *testing.T, page, room string) (identity string) {
	return b.openElementCallIntent(t, page, room, "join_existing")
}

// openElementCallIntent is openElementCall with Element Call's intent:
// start_call_dm rings the room (MSC4075), as Element X starting a DM call.
func (b *rtcBed) openElementCallIntent(t *testing.T, page, room, intent string) (identity string) {
	t.Helper()
	bob := b.users[1]
	local := strings.TrimPrefix(strings.SplitN(bob, ":", 2)[0], "@")
	tok, dev := b.hs.Login(t, local, rtcPass)
	if err := b.browser.do(t, nil, map[string]any{"op": "open", "page": page, "url": b.front + "/rtc-ec.html", "global": "ec", "init": ecKeepPCs}); err != nil {
		t.Fatalf("open rtc-ec.html: %v", err)
	}
	b.browser.call(t, page, "ec.login", nil, map[string]any{"baseUrl": b.front, "userId": bob, "accessToken": tok, "deviceId": dev})
	b.browser.call(t, page, "ec.start", nil, map[string]any{"room": room, "serviceUrl": b.service, "ecPath": "ec/index.html", "intent": intent})
	return bob + ":" + dev
}

func (b *rtcBed) closePage(t *testing.T, page string) {
	_ = b.browser.do(t, nil, map[string]any{"op": "closePage", "page": page})
}

// gatewayCallView is GET /calls/{id} as alice sees it.
type gatewayCallView struct {
	Status    string `json:"status"`
	EndReason string `json:"end_reason"`
	Protocol  string `json:"protocol"`
}

func (b *rtcBed) gatewayCall(t *testing.T, id string) gatewayCallView {
	t.Helper()
	code, resp := clientRequest(t, b.hc, http.MethodGet, "http://"+nsHTTP+"/calls/"+id, jsAliceTok, nil)
	var v gatewayCallView
	if code != http.StatusOK || json.Unmarshal(resp, &v) != nil {
		t.Fatalf("GET /calls/%s: %d %s", id, code, resp)
	}
	return v
}

// mediaIn is what one side of a bridged call received: inbound RTP bytes
// and decoded video frames.
type mediaIn struct {
	Audio, Video, Frames int64
}

func (m mediaIn) flowing() bool { return m.Audio > 0 && m.Video > 0 && m.Frames > 0 }

// grewFrom reports whether m grew from m0 by at least a window's worth.
func (m mediaIn) grewFrom(m0 mediaIn) bool {
	return m.Video-m0.Video >= rtcMinVideoGrowth && m.Audio-m0.Audio >= rtcMinAudioGrowth && m.Frames > m0.Frames
}

// waitMediaBothWays waits until read (one poll of both sides: the call's
// own side, its state ready, and Element Call's) says media flows both
// ways, then that it keeps flowing over rtcMediaWindow; it fails the test
// naming who stalled. It returns the last readings.
func waitMediaBothWays(t *testing.T, names [2]string, read func() (ready bool, a, b mediaIn)) (a, b mediaIn) {
	t.Helper()
	var ready bool
	if !waitFor(rtcMediaStartWait, func() bool {
		ready, a, b = read()
		return ready && a.flowing() && b.flowing()
	}) {
		t.Fatalf("media not flowing within %v: %s %+v (ready %v); %s %+v", rtcMediaStartWait, names[0], a, ready, names[1], b)
	}
	a0, b0 := a, b
	windowEnd := time.Now().Add(rtcMediaWindow)
	if !waitFor(rtcMediaGrowWait, func() bool {
		if time.Now().Before(windowEnd) {
			return false
		}
		_, a, b = read()
		return a.grewFrom(a0) && b.grewFrom(b0)
	}) {
		t.Fatalf("media not growing over %v: %s %+v then %+v; %s %+v then %+v", rtcMediaWindow, names[0], a0, a, names[1], b0, b)
	}
	return a, b
}

// ecIn is Element Call's side of mediaIn.
func ecIn(ec ecState) mediaIn {
	return mediaIn{Audio: ec.RTP.AudioBytesIn, Video: ec.RTP.VideoBytesIn, Frames: ec.RTP.FramesDecoded}
}

// rtpIn is a test page's (jsRTP) side of mediaIn.
func rtpIn(r jsRTP) mediaIn {
	return mediaIn{Audio: r.AudioBytesIn, Video: r.VideoBytesIn, Frames: r.FramesDecoded}
}

func TestGatewayElementCall(t *testing.T) {
	b := newRTCBedWith(t, rtcBedOpts{gateway: true})
	whole := t
	const alice = "gw-alice"
	b.browser.open(t, alice, b.front+"/icebox.html", "icebox")
	b.browser.call(t, alice, "icebox.connect", nil, jsAliceTok)
	state := func(t *testing.T, id string) iceboxCall {
		t.Helper()
		var c iceboxCall
		b.browser.call(t, alice, "icebox.state", &c, id)
		return c
	}
	dump := func(t *testing.T, ecPage string) {
		if !t.Failed() {
			return
		}
		var notes []struct {
			Call, What string
		}
		_ = b.browser.try(t, alice, "icebox.events", &notes, 0)
		t.Logf("alice's page: %+v", notes)
		if ecPage != "" {
			var ev []struct{ What string }
			_ = b.browser.try(t, ecPage, "ec.events", &ev, 0)
			t.Logf("Element Call's host: %+v", ev)
		}
		for k, v := range b.metrics(t) {
			if (strings.Contains(k, "rtc_events") || strings.Contains(k, "rtccall_rings") || strings.Contains(k, "undecryptable")) && v > 0 {
				t.Logf("icebox metric %s %v", k, v)
			}
		}
		for _, l := range strings.Split(b.icebox.out.String(), "\n") {
			if strings.Contains(l, "rtccall") || strings.Contains(l, "gateway") || strings.Contains(l, "MatrixRTC") || strings.Contains(l, "ring") {
				t.Logf("icebox: %.400s", l)
			}
		}
	}

	for _, encrypted := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "encrypted"}[encrypted]
		t.Run("alice calls Element Call, "+name+" room", func(t *testing.T) {
			room := b.gatewayRoom(t, "gw-"+name, encrypted)
			var id string
			b.browser.call(t, alice, "icebox.placeCall", &id, "gw-"+name, b.users[1], true)
			if v := b.gatewayCall(t, id); v.Protocol != "matrixrtc" || v.Status != "ringing" {
				t.Fatalf("call %s: %+v; want a ringing matrixrtc call", id, v)
			}
			if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) != nil }) {
				dump(t, "")
				t.Fatal("icebox's membership of the room's call not in the room state")
			}
			if !encrypted {
				var rings []map[string]any
				if !waitFor(20*time.Second, func() bool {
					rings = b.roomEvents(t, room, "org.matrix.msc4075.rtc.notification")
					return len(rings) > 0
				}) {
					t.Error("no MSC4075 ring in the room")
				} else {
					t.Logf("ring: %v", rings[0]["content"])
				}
			}
			ecPage := "gw-ec-" + name
			bobID := b.openElementCall(t, ecPage, room)
			defer b.closePage(t, ecPage)
			defer dump(t, ecPage)

			var c iceboxCall
			var ec ecState
			waitMediaBothWays(t, [2]string{"alice from Element Call", "Element Call from alice (" + bobID + ")"}, func() (bool, mediaIn, mediaIn) {
				c = state(t, id)
				b.browser.call(t, ecPage, "ec.state", &ec)
				return c.Status == "answered", rtpIn(c.Stats), ecIn(ec)
			})
			t.Logf("alice received from Element Call: video %d B (%d frames decoded), audio %d B; her path %+v",
				c.Stats.VideoBytesIn, c.Stats.FramesDecoded, c.Stats.AudioBytesIn, c.Stats.Local)
			t.Logf("Element Call received from alice: video %d B (%d frames decoded), audio %d B; its videos %+v",
				ec.RTP.VideoBytesIn, ec.RTP.FramesDecoded, ec.RTP.AudioBytesIn, ec.Videos)
			if c.Stats.Local == nil || c.Stats.Local.Type != "relay" {
				t.Errorf("alice's selected candidate %+v; want a relay candidate of icebox's TURN", c.Stats.Local)
			}

			if encrypted {
				// The media keys went both ways over Olm-encrypted
				// to-device messages; no frame failed at icebox but
				// those whose key was still on its way at the join
				// (no_key, missing_key: a few, by load).
				m := b.metrics(t)
				failures, inFlight := 0.0, 0.0
				for k, v := range m {
					if !strings.HasPrefix(k, "icebox_e2ee_frame_failures_total") {
						continue
					}
					if strings.Contains(k, `reason="no_key"`) || strings.Contains(k, `reason="missing_key"`) {
						inFlight += v
					} else {
						failures += v
					}
				}
				t.Logf("icebox's media keys: received %v, sent %v; frame failures %v (and %v while a key was on its way)",
					m[`icebox_e2ee_keys_received_total{result="accepted"}`], m[`icebox_e2ee_keys_sent_total{result="ok"}`], failures, inFlight)
				if m[`icebox_e2ee_keys_received_total{result="accepted"}`] == 0 || m[`icebox_e2ee_keys_sent_total{result="ok"}`] == 0 || failures != 0 {
					t.Errorf("media keys: want some received and sent, and no frame failure")
				}
			}

			// alice hangs up: icebox leaves the room's call.
			b.browser.call(t, alice, "icebox.hangup", nil, id)
			if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
				t.Error("icebox's membership still in the room after alice hung up")
			}
			if v := b.gatewayCall(t, id); v.Status != "ended" {
				t.Errorf("after the hangup: %+v; want ended", v)
			}
		})
	}

	t.Run("Element Call declines", func(t *testing.T) {
		room := b.gatewayRoom(t, "gw-decline", false)
		var id string
		b.browser.call(t, alice, "icebox.placeCall", &id, "gw-decline", b.users[1], false)
		var rings []map[string]any
		if !waitFor(20*time.Second, func() bool {
			rings = b.roomEvents(t, room, "org.matrix.msc4075.rtc.notification")
			return len(rings) > 0
		}) {
			dump(t, "")
			t.Fatal("no ring in the room")
		}
		ringID, _ := rings[0]["event_id"].(string)
		code, resp := b.matrixAPI(t, b.users[1], http.MethodPut, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/org.matrix.msc4310.rtc.decline/d1",
			map[string]any{"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": ringID}})
		if code != http.StatusOK {
			t.Fatalf("decline: %d %s", code, resp)
		}
		var c iceboxCall
		if !waitFor(20*time.Second, func() bool { c = state(t, id); return c.Status == "rejected" }) {
			dump(t, "")
			t.Fatalf("alice's call after bob's decline: %s (%v); want rejected", c.Status, c.Events)
		}
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership still in the room after the decline")
		}
	})

	// Element Call's page closes abruptly mid-call (no leave: Dendrite has
	// no delayed events, the membership stays behind): the bridged call
	// ends once its client is gone from the LiveKit room.
	t.Run("Element Call's browser closes abruptly", func(t *testing.T) {
		room := b.gatewayRoom(t, "gw-vanish", true)
		var id string
		b.browser.call(t, alice, "icebox.placeCall", &id, "gw-vanish", b.users[1], false)
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) != nil }) {
			t.Fatal("icebox's membership not in the room")
		}
		ecPage := "gw-ec-vanish"
		b.openElementCall(t, ecPage, room)
		var c iceboxCall
		if !waitFor(rtcMediaStartWait, func() bool { c = state(t, id); return c.Status == "answered" && c.Stats.AudioBytesIn > 0 }) {
			dump(t, ecPage)
			t.Fatalf("call %s, audio in %d; want answered with audio", c.Status, c.Stats.AudioBytesIn)
		}
		closed := time.Now()
		b.closePage(t, ecPage)
		if !waitFor(60*time.Second, func() bool { c = state(t, id); return c.Status == "ended" }) {
			dump(t, "")
			t.Fatalf("alice's call still %s 60 s after Element Call's page closed", c.Status)
		}
		t.Logf("ended %v after Element Call's page closed (%s)", time.Since(closed).Round(100*time.Millisecond), c.EndReason)
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership still in the room")
		}
	})

	// The other way: Element Call starts a DM call, as Element X does
	// (intent start_call_dm rings the room), and alice's page gets it as a MatrixRTC CallInvite with
	// icebox's offer; she answers, the media flows both ways, encrypted
	// room; then she hangs up.
	t.Run("Element Call calls alice, encrypted room", func(t *testing.T) {
		room := b.gatewayRoom(t, "gw-inbound", true)
		ecPage := "gw-ec-inbound"
		b.openElementCallIntent(t, ecPage, room, "start_call_dm")
		defer b.closePage(t, ecPage)
		defer dump(t, ecPage)
		var invites []struct {
			CallID       string `json:"callId"`
			Type         string `json:"type"`
			Conversation string `json:"conversation"`
		}
		if !waitFor(60*time.Second, func() bool {
			b.browser.call(t, alice, "icebox.invites", &invites)
			for _, i := range invites {
				if i.Conversation == "gw-inbound" {
					return true
				}
			}
			return false
		}) {
			t.Fatalf("no CallInvite for the conversation at alice's page: %+v", invites)
		}
		var id string
		for _, i := range invites {
			if i.Conversation == "gw-inbound" {
				id = i.CallID
			}
		}
		if v := b.gatewayCall(t, id); v.Protocol != "matrixrtc" {
			t.Errorf("incoming call %+v; want protocol matrixrtc", v)
		}
		b.browser.call(t, alice, "icebox.answer", nil, id, true)
		var c iceboxCall
		var ec ecState
		if !waitFor(rtcMediaStartWait, func() bool {
			c = state(t, id)
			b.browser.call(t, ecPage, "ec.state", &ec)
			return c.Status == "answered" && c.Stats.VideoBytesIn > 0 && c.Stats.AudioBytesIn > 0 && c.Stats.FramesDecoded > 0 &&
				ec.RTP.VideoBytesIn > 0 && ec.RTP.AudioBytesIn > 0 && ec.RTP.FramesDecoded > 0
		}) {
			t.Fatalf("media not flowing within %v: alice %s %+v; Element Call %+v", rtcMediaStartWait, c.Status, c.Stats, ec.RTP)
		}
		t.Logf("alice received from Element Call: video %d B (%d frames decoded), audio %d B; Element Call from alice: video %d B (%d frames), audio %d B",
			c.Stats.VideoBytesIn, c.Stats.FramesDecoded, c.Stats.AudioBytesIn, ec.RTP.VideoBytesIn, ec.RTP.FramesDecoded, ec.RTP.AudioBytesIn)
		b.browser.call(t, alice, "icebox.hangup", nil, id)
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership still in the room after alice hung up")
		}
	})

	// answeredCall is an outbound call answered by Element Call's join,
	// audio flowing to alice.
	answeredCall := func(t *testing.T, conv, ecPage string) (id, room string) {
		t.Helper()
		room = b.gatewayRoom(t, conv, true)
		b.browser.call(t, alice, "icebox.placeCall", &id, conv, b.users[1], false)
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) != nil }) {
			t.Fatal("icebox's membership not in the room")
		}
		b.openElementCall(t, ecPage, room)
		var c iceboxCall
		if !waitFor(rtcMediaStartWait, func() bool { c = state(t, id); return c.Status == "answered" && c.Stats.AudioBytesIn > 0 }) {
			dump(t, ecPage)
			t.Fatalf("call %s, audio in %d; want answered with audio", c.Status, c.Stats.AudioBytesIn)
		}
		return id, room
	}

	// Element Call hangs up (its host's hangup: it leaves the call, its
	// membership emptied): the bridged call ends for alice.
	t.Run("Element Call hangs up", func(t *testing.T) {
		ecPage := "gw-ec-hangup"
		id, room := answeredCall(t, "gw-ec-hangup", ecPage)
		defer b.closePage(t, ecPage)
		b.browser.call(t, ecPage, "ec.hangup", nil)
		var c iceboxCall
		if !waitFor(30*time.Second, func() bool { c = state(t, id); return c.Status == "ended" }) {
			dump(t, ecPage)
			t.Fatalf("alice's call %s after Element Call hung up; want ended", c.Status)
		}
		t.Logf("Element Call hung up: alice's call ended (%s)", c.EndReason)
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership still in the room")
		}
	})

	// icebox restarts mid-call: the call is ended at start-up
	// (gateway_restarted, credentials revoked) and no membership of
	// icebox's is left in the room.
	t.Run("icebox restarts mid-call", func(t *testing.T) {
		ecPage := "gw-ec-restart"
		id, room := answeredCall(t, "gw-ec-restart", ecPage)
		defer b.closePage(t, ecPage)
		// The same state directory; the new process is the whole test's,
		// not this subtest's (the ones after this one use it).
		stateDir := b.stateDir
		b.icebox.stop(t)
		b.icebox = startIceboxIn(whole, b.ns, b.hc, func(string) string { return b.iceboxConfig(stateDir) }, b.env...)
		var v gatewayCallView
		if !waitFor(30*time.Second, func() bool { v = b.gatewayCall(t, id); return v.Status == "ended" }) {
			t.Fatalf("call after the restart: %+v; want ended", v)
		}
		if v.EndReason != "gateway_restarted" {
			t.Errorf("call after the restart: %+v; want end_reason gateway_restarted", v)
		}
		if !waitFor(30*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership left in the room after the restart")
		}
		// alice's page lost its WebSocket with the restart: connect again
		// for the subtests after this one.
		b.browser.call(t, alice, "icebox.connect", nil, jsAliceTok)
	})

	t.Run("the ring expires", func(t *testing.T) {
		room := b.gatewayRoom(t, "gw-expire", false)
		var id string
		b.browser.call(t, alice, "icebox.placeCall", &id, "gw-expire", b.users[1], false, 8000)
		var c iceboxCall
		if !waitFor(30*time.Second, func() bool { c = state(t, id); return c.Status != "ringing" && c.Status != "" }) {
			t.Fatalf("alice's call still %s after its 8 s lifetime", c.Status)
		}
		if v := b.gatewayCall(t, id); v.EndReason != "invite_timeout" {
			dump(t, "")
			t.Errorf("expired call: %+v; want end_reason invite_timeout", v)
		}
		if !waitFor(20*time.Second, func() bool { return b.iceboxMembership(t, room) == nil }) {
			t.Error("icebox's membership still in the room after the ring expired")
		}
	})
}
