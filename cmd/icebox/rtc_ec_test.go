package main

// Element Call itself (its embedded build, the widget Element Web and
// Element X load) as one participant of a MatrixRTC call on icebox, the
// other being the test's own page (rtc.html): web/e2e-matrix's rtc-ec.html
// hosts the widget as Element Web does, and Element Call finds icebox's
// service through the host's MSC4143 transports (rtc_bed_test.go's bed).

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// ecState is what rtc-ec.js reports of the widget's page.
type ecState struct {
	Videos []struct {
		Width  int  `json:"width"`
		Height int  `json:"height"`
		Frames int  `json:"frames"`
		Play   bool `json:"playing"`
	} `json:"videos"`
	Audios int `json:"audios"`
	// RTP sums the inbound RTP of Element Call's peer connections.
	RTP struct {
		AudioBytesIn  int64          `json:"audioBytesIn"`
		VideoBytesIn  int64          `json:"videoBytesIn"`
		FramesDecoded int64          `json:"framesDecoded"`
		AudioEnergy   float64        `json:"audioEnergy"`
		PCs           int            `json:"pcs"`
		Local         []rtcCandidate `json:"local"`
	} `json:"rtp"`
}

// ecKeepPCs runs in the widget's frame before Element Call's scripts: it
// keeps every RTCPeerConnection made there, for rtc-ec.js's state().
const ecKeepPCs = `(() => {
  const Orig = window.RTCPeerConnection;
  if (!Orig) return;
  const pcs = [];
  window.__iceboxPCs = pcs;
  window.RTCPeerConnection = new Proxy(Orig, { construct(target, args) { const pc = new target(...args); pcs.push(pc); return pc; } });
})();`

// elementCall: bob runs Element Call (embedded) in a host page, alice the
// test page; alice must receive and decrypt Element Call's audio and video,
// and Element Call must show alice's video (its tiles: alice's and its own
// camera) with decoded frames growing.
func (b *rtcBed) elementCall(t *testing.T) {
	begin := time.Now()
	users := b.users[:2]
	room := b.encryptedRoom(t, "element-call", users)
	alice := b.openParticipant(t, "rtc-ec-alice", users[0], room)

	local := strings.TrimPrefix(strings.SplitN(users[1], ":", 2)[0], "@")
	tok, dev := b.hs.Login(t, local, rtcPass)
	const host = "rtc-ec-bob"
	if err := b.browser.do(t, nil, map[string]any{"op": "open", "page": host, "url": b.front + "/rtc-ec.html", "global": "ec", "init": ecKeepPCs}); err != nil {
		t.Fatalf("open rtc-ec.html: %v", err)
	}
	t.Cleanup(func() { _ = b.browser.do(t, nil, map[string]any{"op": "closePage", "page": host}) })
	b.browser.call(t, host, "ec.login", nil, map[string]any{"baseUrl": b.front, "userId": users[1], "accessToken": tok, "deviceId": dev})
	b.browser.call(t, host, "ec.start", nil, map[string]any{"room": room, "serviceUrl": b.service, "ecPath": "ec/index.html"})
	var j struct {
		Identity    string `json:"identity"`
		LiveKitRoom string `json:"livekitRoom"`
	}
	b.browser.call(t, alice.name, "rtc.join", &j, map[string]any{"roomId": room, "serviceUrl": b.service, "relay": false})
	t.Cleanup(func() { _ = b.browser.try(t, alice.name, "rtc.leave", nil) })
	// Element Call's memberships are org.matrix.msc3401.call.member, so it
	// joins LiveKit with /sfu/get's identity, user:device.
	bobID := users[1] + ":" + dev

	defer func() {
		if !t.Failed() {
			return
		}
		var ev []struct {
			What string `json:"what"`
		}
		_ = b.browser.try(t, host, "ec.events", &ev, 0)
		t.Logf("widget host events: %v", ev)
		for _, c := range b.browser.console(t, host, 0) {
			// Element Call logs LiveKit's URL with the JWT in it: not that.
			if (c.Type == "error" || c.Type == "warning" || c.Type == "pageerror") && !strings.Contains(c.Text, "access_token") && !strings.Contains(c.Text, "jwt:") {
				t.Logf("element call console %s: %.300s", c.Type, c.Text)
			}
		}
	}()

	var s rtcState
	var ec ecState
	received := func() bool {
		s = b.state(t, alice.name)
		b.browser.call(t, host, "ec.state", &ec)
		v, okV := s.track(bobID, "video")
		a, okA := s.track(bobID, "audio")
		return okV && okA && v.FramesDecoded > 0 && a.AudioEnergy > 0 &&
			ec.RTP.VideoBytesIn > 0 && ec.RTP.AudioBytesIn > 0 && ec.RTP.FramesDecoded > 0 && ec.RTP.AudioEnergy > 0
	}
	if !waitFor(rtcMediaStartWait, received) {
		t.Fatalf("media not flowing within %v: alice's state %+v; Element Call's videos %+v", rtcMediaStartWait, s, ec)
	}
	b.browser.call(t, alice.name, "rtc.markSteady", nil)
	s0, ec0 := s, ec
	windowEnd := time.Now().Add(rtcMediaWindow)
	var why string
	if !waitFor(rtcMediaGrowWait, func() bool {
		if time.Now().Before(windowEnd) {
			return false
		}
		s = b.state(t, alice.name)
		b.browser.call(t, host, "ec.state", &ec)
		v0, _ := s0.track(bobID, "video")
		a0, _ := s0.track(bobID, "audio")
		v, _ := s.track(bobID, "video")
		a, _ := s.track(bobID, "audio")
		if v.Bytes-v0.Bytes < rtcMinVideoGrowth || a.Bytes-a0.Bytes < rtcMinAudioGrowth || v.FramesDecoded <= v0.FramesDecoded || a.AudioEnergy <= a0.AudioEnergy {
			why = "alice from Element Call: video " + rtcGrowth(v0.Bytes, v.Bytes) + ", audio " + rtcGrowth(a0.Bytes, a.Bytes)
			return false
		}
		r0, r := ec0.RTP, ec.RTP
		if r.VideoBytesIn-r0.VideoBytesIn < rtcMinVideoGrowth || r.AudioBytesIn-r0.AudioBytesIn < rtcMinAudioGrowth || r.FramesDecoded <= r0.FramesDecoded || r.AudioEnergy <= r0.AudioEnergy {
			why = fmt.Sprintf("Element Call from alice: %+v then %+v", r0, r)
			return false
		}
		return true
	}) {
		t.Fatalf("media not growing over %v: %s", rtcMediaWindow, why)
	}
	v, _ := s.track(bobID, "video")
	a, _ := s.track(bobID, "audio")
	if !v.Encrypted || !a.Encrypted || s.Keys[bobID] == 0 {
		t.Errorf("alice: Element Call's tracks encrypted %v/%v, keys from it %d; want encrypted, keyed by the MatrixRTC session", v.Encrypted, a.Encrypted, s.Keys[bobID])
	}
	if s.DecryptFailures != 0 {
		t.Errorf("alice: %d E2EE failures, e.g. %+v", s.DecryptFailures, s.ErrorSamples)
	}
	var others []string
	for _, r := range s.Remotes {
		if r.Identity != bobID {
			others = append(others, r.Identity)
		}
	}
	if len(others) > 0 {
		t.Errorf("alice sees LiveKit participants %v besides Element Call's %s", others, bobID)
	}
	t.Logf("alice received from Element Call (E2EE failures %d, MissingKey while keys were in flight %d): video %d B (%d frames), audio %d B", s.DecryptFailures, s.WaitingForKey, v.Bytes, v.FramesDecoded, a.Bytes)
	t.Logf("Element Call received from alice (%d peer connections): video %d B (%d frames), audio %d B; its video elements %+v; %v",
		ec.RTP.PCs, ec.RTP.VideoBytesIn, ec.RTP.FramesDecoded, ec.RTP.AudioBytesIn, ec.Videos, time.Since(begin).Round(time.Millisecond))
	// What failed over HTTP in Element Call's frame and its host (the
	// homeserver's and the authorization service's answers).
	for _, c := range b.browser.console(t, host, 0) {
		if c.Type == "http" {
			t.Logf("element call http: %s", c.Text)
		}
	}
	for _, l := range strings.Split(b.icebox.out.String(), "\n") {
		// What Element Call asked of the service (its LiveKit room is alice's).
		if strings.Contains(l, `"matrixrtc-auth"`) && strings.Contains(l, users[1]) && strings.Contains(l, j.LiveKitRoom) {
			t.Logf("icebox: %s", l)
		}
	}
}
