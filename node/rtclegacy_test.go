//go:build linux

// A legacy m.call.* caller bridged to a room's MatrixRTC call, with real
// peers: Dendrite, livekit-server, carol's legacy client played at
// protocol level (her m.call.* events through the client-server API, her
// media by a pion PeerConnection relayed through icebox's TURN, as a
// homeserver that names icebox as its TURN server hands it out) and bob,
// the Element X side, as in rtccall_test.go.

package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// legacyCaller is carol: a Matrix user calling with m.call.* events.
type legacyCaller struct {
	b            *rtcBed
	id, token    string
	party        string
	pc           *webrtc.PeerConnection
	audio, video *webrtc.TrackLocalStaticSample
	got          peerCounter
	mu           sync.Mutex
	cands        []map[string]any // gathered, sent as m.call.candidates
}

// carol registers carol, brings her into bob's room and the room's
// conversation.
func (b *rtcBed) carol(t *testing.T) (id, token string) {
	t.Helper()
	id, _, _ = b.hs.Register(t, "carol", "carol-password", false)
	token, _ = b.hs.Login(t, id, "carol-password")
	u := b.hs.URL() + "/_matrix/client/v3/rooms/" + url.PathEscape(b.room)
	if code, out := doReq(t, b.bobToken, http.MethodPost, u+"/invite", `{"user_id":"`+id+`"}`); code != http.StatusOK {
		t.Fatalf("invite carol: %d %s", code, out)
	}
	if code, out := doReq(t, token, http.MethodPost, b.hs.URL()+"/_matrix/client/v3/join/"+url.PathEscape(b.room), `{}`); code != http.StatusOK {
		t.Fatalf("carol joins: %d %s", code, out)
	}
	code, out := doReq(t, b.adminToken, http.MethodPut, b.base+"/admin/conversations/"+b.conv,
		`{"participants":["alice","`+b.bobID+`","`+id+`"],"room_id":"`+b.room+`"}`)
	if code != http.StatusOK {
		t.Fatalf("PUT conversation: %d %s", code, out)
	}
	return id, token
}

// newLegacyCall makes carol's PeerConnection for one call: relayed through
// icebox's TURN, Opus and VP8 each way.
func (b *rtcBed) newLegacyCall(t *testing.T, id, token string, n int) *legacyCaller {
	t.Helper()
	// The ICE servers an icebox client gets: icebox is the TURN server
	// carol's homeserver hands out.
	code, out := doReq(t, b.aliceToken, http.MethodGet, b.base+"/calls/ice_servers", "")
	var ice struct {
		ICEServers []struct {
			URLs                 []string
			Username, Credential string
		} `json:"ice_servers"`
	}
	if code != http.StatusOK || json.Unmarshal(out, &ice) != nil {
		t.Fatalf("ice_servers: %d %s", code, out)
	}
	var servers []webrtc.ICEServer
	for _, s := range ice.ICEServers {
		servers = append(servers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{
		ICEServers: servers, ICETransportPolicy: webrtc.ICETransportPolicyRelay,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &legacyCaller{b: b, id: id, token: token, party: fmt.Sprintf("CAROLDEV%d", n), pc: pc}
	pc.OnTrack(func(track *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { c.got.read(&b.wg, track) })
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			return
		}
		init := cand.ToJSON()
		c.mu.Lock()
		c.cands = append(c.cands, map[string]any{"candidate": init.Candidate, "sdpMid": init.SDPMid, "sdpMLineIndex": init.SDPMLineIndex})
		c.mu.Unlock()
	})
	if c.audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "carol"); err != nil {
		t.Fatal(err)
	}
	if c.video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "video", "carol"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return c
}

func (c *legacyCaller) send(t *testing.T, typ string, content map[string]any) {
	t.Helper()
	content["version"], content["party_id"] = "1", c.party
	raw, _ := json.Marshal(content)
	u := c.b.hs.URL() + "/_matrix/client/v3/rooms/" + url.PathEscape(c.b.room) + "/send/" + typ + "/" + fmt.Sprint(time.Now().UnixNano())
	if code, out := doReq(t, c.token, http.MethodPut, u, string(raw)); code != http.StatusOK {
		t.Fatalf("carol sends %s: %d %s", typ, code, out)
	}
}

// invite sends carol's m.call.invite with an offer that carries no
// candidates, then trickles them (m.call.candidates) once gathered, as
// matrix-js-sdk does.
func (c *legacyCaller) invite(t *testing.T, callID string) {
	t.Helper()
	for _, tr := range []webrtc.TrackLocal{c.audio, c.video} {
		if _, err := c.pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}); err != nil {
			t.Fatal(err)
		}
	}
	o, err := c.pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(c.pc)
	if err := c.pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	c.send(t, "m.call.invite", map[string]any{"call_id": callID, "lifetime": 60000, "offer": map[string]any{"type": "offer", "sdp": o.SDP}})
	<-gathered
	c.mu.Lock()
	cands := append(c.cands, map[string]any{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}) // end of candidates
	c.mu.Unlock()
	c.send(t, "m.call.candidates", map[string]any{"call_id": callID, "candidates": cands})
}

// matrixEvent waits for an m.call.* event of typ from icebox for callID in
// the room (as carol's client would read it) and returns its content.
func (b *rtcBed) matrixEvent(t *testing.T, typ, callID string) map[string]any {
	t.Helper()
	var found map[string]any
	poll(t, 60*time.Second, typ+" for "+callID, func() bool {
		code, out := doReq(t, b.bobToken, http.MethodGet, b.hs.URL()+"/_matrix/client/v3/rooms/"+url.PathEscape(b.room)+"/messages?dir=b&limit=50", "")
		if code != http.StatusOK {
			return false
		}
		var page struct {
			Chunk []map[string]any `json:"chunk"`
		}
		if json.Unmarshal(out, &page) != nil {
			return false
		}
		for _, e := range page.Chunk {
			content, _ := e["content"].(map[string]any)
			if e["type"] == typ && e["sender"] == b.svcID && content["call_id"] == callID {
				found = content
				return true
			}
		}
		return false
	})
	return found
}

// noClientEvents fails if alice's WebSocket saw an event of callID: the
// icebox clients take no part in a legacy caller's bridged call.
func (b *rtcBed) noClientEvents(t *testing.T, callID string) {
	t.Helper()
	b.ws.mu.Lock()
	defer b.ws.mu.Unlock()
	for _, e := range b.ws.events {
		if e["call_id"] == callID {
			t.Fatalf("alice got %v for the legacy-bridged call %s", e["type"], callID)
		}
	}
}

// TestRTCCallLegacyCaller: carol, a legacy client, sends m.call.invite in
// a room whose calls use MatrixRTC. icebox answers for the room: its
// device joins the room's call and rings (MSC4075); carol's trickled
// candidates reach the gateway's leg. bob (Element X side) joins with
// his membership and LiveKit participant: icebox sends m.call.answer
// (the leg's SDP, bob's device as party_id), and carol's and bob's audio
// and video flow both ways. carol hangs up (m.call.hangup): icebox's
// membership is emptied, the leg closed, the credentials revoked. Then bob
// declines the next ring (m.call.reject to carol), and bob leaving an
// answered call hangs it up (m.call.hangup), and carol's client
// vanishing mid-call (no hangup) ends it as gateway_failed. alice, an
// icebox client of the conversation, hears of none of it.
func TestRTCCallLegacyCaller(t *testing.T) {
	b := newRTCBed(t)
	carolID, carolToken := b.carol(t)

	// Answered by bob joining, media both ways, hung up by carol.
	c := b.newLegacyCall(t, carolID, carolToken, 1)
	started := time.Now()
	c.invite(t, "legacycall1")
	ring := b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, nil)
	rang := time.Since(started)
	if m, left := b.svcMembership(t); left || !m.Live(time.Now()) {
		t.Fatalf("icebox's membership while ringing: %+v left %v", m, left)
	}
	if st := b.call(t, "legacycall1"); st.Status != "ringing" || st.Protocol != "matrixrtc" {
		t.Fatalf("call while ringing: %+v", st)
	}
	b.bobJoin(t)
	bob := b.bobMedia(t)
	ans := b.matrixEvent(t, "m.call.answer", "legacycall1")
	answered := time.Since(started)
	sdp, _ := ans["answer"].(map[string]any)["sdp"].(string)
	if ans["party_id"] != b.bobDevice || !strings.Contains(sdp, "m=video") {
		t.Fatalf("m.call.answer: party %v, video in the SDP %v", ans["party_id"], strings.Contains(sdp, "m=video"))
	}
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
	sendSynthetic(b.mediaCtx, &b.wg, c.audio, c.video)
	took := mediaBothWaysLegacy(t, c, bob)
	t.Logf("legacy caller: rang after %v, m.call.answer after %v, media both ways %v later: carol got audio %d B video %d B, bob got audio %d B video %d B",
		rang.Round(time.Millisecond), answered.Round(time.Millisecond), took.Round(time.Millisecond),
		c.got.audio.Load(), c.got.video.Load(), bob.got.audio.Load(), bob.got.video.Load())
	if v := b.metric(t, "icebox_rtccall_calls_active", "direction", "legacy"); v != 1 {
		t.Errorf("calls_active{legacy} = %v during the call", v)
	}
	c.send(t, "m.call.hangup", map[string]any{"call_id": "legacycall1", "reason": "user_hangup"})
	b.waitEnded(t, "legacycall1", "ended", "user_hangup")
	bob.stop()
	b.bobLeave(t)
	b.noClientEvents(t, "legacycall1")

	// bob declines the ring: m.call.reject to carol.
	c2 := b.newLegacyCall(t, carolID, carolToken, 2)
	c2.invite(t, "legacycall2")
	ring2 := b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, []string{ring["event_id"].(string)})
	b.bobSend(t, "org.matrix.msc4310.rtc.decline", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": ring2["event_id"]},
	})
	b.matrixEvent(t, "m.call.reject", "legacycall2")
	b.waitEnded(t, "legacycall2", "rejected", "rejected")

	// Answered, then bob leaves: m.call.hangup to carol.
	c3 := b.newLegacyCall(t, carolID, carolToken, 3)
	c3.invite(t, "legacycall3")
	b.roomEvent(t, "org.matrix.msc4075.rtc.notification", b.svcID, []string{ring["event_id"].(string), ring2["event_id"].(string)})
	b.bobJoin(t)
	ans3 := b.matrixEvent(t, "m.call.answer", "legacycall3")
	if err := c3.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans3["answer"].(map[string]any)["sdp"].(string)}); err != nil {
		t.Fatal(err)
	}
	b.bobLeave(t)
	if h := b.matrixEvent(t, "m.call.hangup", "legacycall3"); h["party_id"] != b.bobDevice {
		t.Fatalf("m.call.hangup party %v, want bob's device", h["party_id"])
	}
	b.waitEnded(t, "legacycall3", "ended", "user_hangup")

	// Answered, media flowing, then carol's client vanishes (its
	// connection closes, no m.call.hangup): the leg fails, the call ends
	// (gateway_failed) and icebox leaves the room's call.
	c4 := b.newLegacyCall(t, carolID, carolToken, 4)
	c4.invite(t, "legacycall4")
	b.bobJoin(t)
	bob4 := b.bobMedia(t)
	ans4 := b.matrixEvent(t, "m.call.answer", "legacycall4")
	if err := c4.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: ans4["answer"].(map[string]any)["sdp"].(string)}); err != nil {
		t.Fatal(err)
	}
	sendSynthetic(b.mediaCtx, &b.wg, c4.audio, c4.video)
	mediaBothWaysLegacy(t, c4, bob4)
	vanished := time.Now()
	_ = c4.pc.Close()
	b.waitEnded(t, "legacycall4", "ended", "gateway_failed")
	t.Logf("carol's client vanished: call ended %v later (gateway_failed), icebox's membership emptied", time.Since(vanished).Round(100*time.Millisecond))
	if h := b.matrixEvent(t, "m.call.hangup", "legacycall4"); h["party_id"] != b.bobDevice || h["reason"] != "unknown_error" {
		t.Fatalf("m.call.hangup party %v reason %v, want bob's device, unknown_error", h["party_id"], h["reason"])
	}
	bob4.stop()
	b.bobLeave(t)

	b.noClientEvents(t, "legacycall2")
	b.noClientEvents(t, "legacycall3")
	b.noClientEvents(t, "legacycall4")
	for _, r := range []string{"hangup_client", "declined", "hangup_member", "gateway_failed"} {
		b.waitMetric(t, 1, "icebox_rtccall_calls_ended_total", "reason", r)
	}
}

// mediaBothWaysLegacy waits until carol and bob each received two seconds'
// worth of the other's audio and video through the gateway.
func mediaBothWaysLegacy(t *testing.T, c *legacyCaller, bob *bobMedia) time.Duration {
	t.Helper()
	start := time.Now()
	poll(t, 90*time.Second, "media both ways", func() bool {
		return c.got.audio.Load() > 8_000 && c.got.video.Load() > 54_000 && bob.got.audio.Load() > 8_000 && bob.got.video.Load() > 54_000
	})
	return time.Since(start)
}
