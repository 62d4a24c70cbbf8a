package main

// What Element does after the first answer (issue 15, "What must work"),
// between matrix-js-sdk and an icebox WebSocket client, in a plain and an
// encrypted room: hold and resume both ways, video added to a voice call,
// screen share, ICE restart both ways, mute with stream metadata, reject
// both ways, answered elsewhere, the invite's expiry, leaving the room.
// Each asserts that media flows before and
// after, and what matrix-js-sdk reports (CallState, isRemoteOnHold /
// isLocalOnHold, feeds and their purpose, mute flags).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// jsRenegotiateWait bounds one renegotiation: an m.call.negotiate each way
// through Dendrite (and the encrypted room's megolm) and the browsers.
const jsRenegotiateWait = 15 * time.Second

// jsScenarioList is the scenarios in the order they run, in a plain and an
// encrypted room; jsScenarios runs "element leaves the room" after them.
var jsScenarioList = []struct {
	name string
	run  func(s *jsSession, t *testing.T, conv string)
}{
	{"stream metadata", (*jsSession).streamMetadata},
	{"element holds and resumes", (*jsSession).elementHolds},
	{"icebox holds and resumes", (*jsSession).iceboxHolds},
	{"element adds video", (*jsSession).addVideo},
	{"element shares its screen", (*jsSession).screenShare},
	{"element restarts ICE", (*jsSession).elementRestartsICE},
	{"icebox restarts ICE", (*jsSession).iceboxRestartsICE},
	{"network blip: Element restarts ICE by itself", (*jsSession).networkBlip},
	{"mute both ways", (*jsSession).mute},
	{"element rejects", (*jsSession).elementRejects},
	{"icebox rejects", (*jsSession).iceboxRejects},
	{"answered elsewhere", (*jsSession).answeredElsewhere},
	{"icebox's invite expires", (*jsSession).inviteExpires},
}

func jsScenarios(t *testing.T, s *jsSession) {
	for _, room := range []struct{ conv, leave string }{{"plain", "leave"}, {"enc", "encleave"}} {
		for _, sc := range jsScenarioList {
			t.Run(room.conv+"/"+sc.name, func(t *testing.T) { sc.run(s, t, room.conv) })
		}
		// Last, in a room of its own, which it leaves.
		t.Run(room.conv+"/element leaves the room", func(t *testing.T) { s.elementLeaves(t, room.leave) })
	}
}

// iceboxSends sets what the icebox client sends beyond today's API: each
// candidate's usernameFragment, sdp_stream_metadata with initiate, answer
// and negotiate. Each scenario asks only for what it tests, so that one
// missing field does not hide the rest.
func (s *jsSession) iceboxSends(t *testing.T, ufrag, metadata bool) {
	t.Helper()
	s.br.call(t, "icebox", "icebox.setOptions", nil, map[string]any{"sendUfrag": ufrag, "sendMetadata": metadata})
}

// connected starts a voice call (Element calls icebox), checks media, and
// ends it at cleanup if the scenario did not.
func (s *jsSession) connected(t *testing.T, conv string) string {
	t.Helper()
	id := s.elementCallsIcebox(t, s.b.rooms[conv], "voice")
	t.Cleanup(func() { s.endQuietly(t, id) })
	s.mediaFlows(t, id, "audio", "before")
	return id
}

// connectedSendingMetadata is connected with the icebox client sending
// sdp_stream_metadata until the scenario ends (the setting is reset before
// the call is ended at cleanup).
func (s *jsSession) connectedSendingMetadata(t *testing.T, conv string) string {
	t.Helper()
	s.iceboxSends(t, false, true)
	id := s.connected(t, conv)
	t.Cleanup(func() { s.iceboxSends(t, false, false) })
	return id
}

// endQuietly hangs a call up on both pages if it still runs.
func (s *jsSession) endQuietly(t *testing.T, id string) {
	var e elementCall
	if s.br.try(t, s.ep(), "harness.state", &e, id) == nil && e.State != "ended" {
		_ = s.br.try(t, s.ep(), "harness.hangup", nil, id, "user_hangup")
	}
	var i iceboxCall
	if s.br.try(t, "icebox", "icebox.state", &i, id) == nil && i.Status != "ended" && i.Status != "rejected" {
		_ = s.br.try(t, "icebox", "icebox.hangup", nil, id)
	}
}

// renegotiated waits until an offer from one side was answered by the
// other: both peer connections stable again, the icebox client having
// received (or sent) what it should.
func (s *jsSession) renegotiated(t *testing.T, id, what string, iceboxGot func(iceboxCall) bool) (elementCall, iceboxCall) {
	t.Helper()
	i := s.waitIcebox(t, id, what+": negotiation at the icebox client", jsRenegotiateWait, func(c iceboxCall) bool {
		return iceboxGot(c) && c.SignalingState == "stable"
	})
	e := s.waitElement(t, id, what+": matrix-js-sdk back to stable", jsRenegotiateWait, func(c elementCall) bool {
		return c.SignalingState == "stable" && c.State == "connected"
	})
	return e, i
}

func received(kind string, n int) func(iceboxCall) bool {
	return func(c iceboxCall) bool {
		k := 0
		for _, r := range c.Negotiations.Received {
			if r == kind {
				k++
			}
		}
		return k >= n
	}
}

// iceboxReceives waits until the icebox client's inbound RTP of kind grew.
func (s *jsSession) iceboxReceives(t *testing.T, id, kind, when string) iceboxCall {
	t.Helper()
	in := func(r jsRTP) int64 {
		if kind == "video" {
			return r.VideoBytesIn
		}
		return r.AudioBytesIn
	}
	before := in(s.icebox(t, id).Stats)
	c := s.waitIcebox(t, id, kind+" RTP into the icebox client "+when, jsMediaWait, func(c iceboxCall) bool { return in(c.Stats) >= before+jsMediaBytes })
	t.Logf("%s %s: %s into the icebox client %d -> %d bytes", id, when, kind, before, in(c.Stats))
	return c
}

// needsMetadata stops a scenario whose matrix-js-sdk feature (upgradeCall,
// a screen share as a second stream) it only offers to an opponent whose
// answer carried sdp_stream_metadata: without it the step is a no-op or
// replaces the camera, and the failure would read as something else.
func (s *jsSession) needsMetadata(t *testing.T, id, what string) {
	t.Helper()
	if e := s.element(t, id); !e.OpponentSupportsMetadata {
		t.Fatalf("matrix-js-sdk did not get sdp_stream_metadata with icebox's answer: it offers %s only with it", what)
	}
}

// streamMetadata: both calls' invite/answer carry sdp_stream_metadata and
// capabilities to the other side; matrix-js-sdk labels icebox's stream
// m.usermedia instead of falling back to one unlabelled stream.
func (s *jsSession) streamMetadata(t *testing.T, conv string) {
	s.iceboxSends(t, false, true)
	defer s.iceboxSends(t, false, false)
	id := s.connected(t, conv)
	i := s.icebox(t, id)
	if len(i.PeerMetadata) == 0 || i.PeerCapabilities == nil {
		t.Errorf("matrix-js-sdk's invite reached the icebox client with sdp_stream_metadata %v, capabilities %v; want both", i.PeerMetadata, i.PeerCapabilities)
	}
	for sid, m := range i.PeerMetadata {
		if m["purpose"] != "m.usermedia" {
			t.Errorf("matrix-js-sdk's stream %s: metadata %v, want purpose m.usermedia", sid, m)
		}
	}
	e := s.element(t, id)
	if !e.OpponentSupportsMetadata || len(e.feeds(false, "m.usermedia")) != 1 {
		t.Errorf("matrix-js-sdk: opponent supports metadata %v, remote feeds %+v; want icebox's answer's metadata and one m.usermedia feed", e.OpponentSupportsMetadata, e.Feeds)
	}
	s.elementHangsUp(t, id)

	id = s.iceboxCallsElement(t, conv, "voice")
	t.Cleanup(func() { s.endQuietly(t, id) })
	e = s.element(t, id)
	if !e.OpponentSupportsMetadata || len(e.feeds(false, "m.usermedia")) != 1 {
		t.Errorf("matrix-js-sdk on icebox's invite: opponent supports metadata %v, remote feeds %+v; want the invite's metadata", e.OpponentSupportsMetadata, e.Feeds)
	}
	if i := s.icebox(t, id); len(i.PeerMetadata) == 0 {
		t.Errorf("matrix-js-sdk's answer reached the icebox client without sdp_stream_metadata (events %v)", i.Events)
	}
	s.iceboxHangsUp(t, id)
}

// holder is the side that holds the call in holdAndResume.
type holder struct {
	name     string                                          // in messages
	page, fn string                                          // the page's function that holds (true) and resumes (false)
	got      string                                          // the icebox client receives the holder's "offer" or its own offer's "answer"
	flag     string                                          // the name of what held reads
	held     func(elementCall) bool                          // matrix-js-sdk's report of the hold
	onHold   func(t *testing.T, e elementCall, i iceboxCall) // more checks while held, if any
	hangUp   func(s *jsSession, t *testing.T, id string)
}

// holdAndResume: the holder's hold is an m.call.negotiate offer the other
// side answers, and matrix-js-sdk reports it (h.flag); after the resume it
// does not, media flows both ways, and the holder hangs up.
func (s *jsSession) holdAndResume(t *testing.T, conv string, h holder) {
	id := s.connected(t, conv)
	s.br.call(t, h.page, h.fn, nil, id, true)
	e, i := s.renegotiated(t, id, h.name+"'s hold", received(h.got, 1))
	if !h.held(e) {
		t.Errorf("matrix-js-sdk after %s's hold: %s false", h.name, h.flag)
	}
	if h.onHold != nil {
		h.onHold(t, e, i)
	}
	s.br.call(t, h.page, h.fn, nil, id, false)
	e, _ = s.renegotiated(t, id, h.name+"'s resume", received(h.got, 2))
	if h.held(e) {
		t.Errorf("matrix-js-sdk after %s's resume: %s still true", h.name, h.flag)
	}
	s.mediaFlows(t, id, "audio", "after "+h.name+"'s resume")
	h.hangUp(s, t, id)
}

// elementHolds: Element's hold (its transceivers sendonly) is an
// m.call.negotiate offer the icebox client answers; matrix-js-sdk reports
// isRemoteOnHold; on hold icebox still hears Element; after the resume
// media flows both ways.
func (s *jsSession) elementHolds(t *testing.T, conv string) {
	s.holdAndResume(t, conv, holder{
		name: "Element", page: s.ep(), fn: "harness.setRemoteOnHold", got: "offer",
		flag: "isRemoteOnHold", held: func(e elementCall) bool { return e.RemoteOnHold },
		onHold: func(t *testing.T, e elementCall, i iceboxCall) {
			for _, x := range i.Transceivers {
				if x.CurrentDirection != "recvonly" {
					t.Errorf("icebox client on hold: transceiver %s %s currentDirection %q, want recvonly", x.Mid, x.Kind, x.CurrentDirection)
				}
			}
			// matrix-js-sdk also disables its microphone while it holds the
			// other side (updateMuteStatus), so what reaches icebox then is
			// silence: too little to wait for, not asserted.
			if f := e.feeds(false, "m.usermedia"); len(f) != 0 {
				t.Errorf("matrix-js-sdk holding: remote feeds %+v; want none (it receives nothing on hold)", f)
			}
		},
		hangUp: (*jsSession).elementHangsUp,
	})
}

// iceboxHolds: the icebox client's hold goes out as a negotiate offer;
// matrix-js-sdk answers with m.call.negotiate (type answer), which must
// reach the client; matrix-js-sdk reports isLocalOnHold.
func (s *jsSession) iceboxHolds(t *testing.T, conv string) {
	s.holdAndResume(t, conv, holder{
		name: "icebox", page: "icebox", fn: "icebox.hold", got: "answer",
		flag: "isLocalOnHold", held: func(e elementCall) bool { return e.LocalOnHold },
		hangUp: (*jsSession).iceboxHangsUp,
	})
}

// addVideo: Element turns its voice call into a video call (upgradeCall):
// a new video m-line offered over m.call.negotiate; the icebox client gets
// its video; audio still flows both ways.
func (s *jsSession) addVideo(t *testing.T, conv string) {
	id := s.connectedSendingMetadata(t, conv)
	s.needsMetadata(t, id, "upgradeCall")
	s.br.call(t, s.ep(), "harness.upgradeCall", nil, id, false, true)
	e, _ := s.renegotiated(t, id, "video added", received("offer", 1))
	if f := e.feeds(true, "m.usermedia"); len(f) != 1 || f[0].VideoTracks != 1 || f[0].VideoMuted {
		t.Errorf("matrix-js-sdk after upgradeCall: local usermedia feeds %+v; want one with an unmuted video track", f)
	}
	s.iceboxReceives(t, id, "video", "after the video was added")
	s.mediaFlows(t, id, "audio", "after the video was added")
	s.elementHangsUp(t, id)
}

// screenShare: Element shares its screen as a second stream (purpose
// m.screenshare in the negotiate's metadata); the icebox client receives
// it on its own m-line; stopping it renegotiates again.
func (s *jsSession) screenShare(t *testing.T, conv string) {
	id := s.connectedSendingMetadata(t, conv)
	s.needsMetadata(t, id, "a second (screen share) stream")
	var ok bool
	s.br.call(t, s.ep(), "harness.setScreensharingEnabled", &ok, id, true)
	if !ok {
		s.dumpLogs(t, id)
		t.Fatalf("setScreensharingEnabled(true) returned false (getDisplayMedia refused in headless Chromium?)")
	}
	e, i := s.renegotiated(t, id, "screen share", received("offer", 1))
	if !e.Screensharing || len(e.feeds(true, "m.screenshare")) != 1 {
		t.Errorf("matrix-js-sdk: screensharing %v, local feeds %+v; want one m.screenshare feed", e.Screensharing, e.Feeds)
	}
	purposes := map[string]bool{}
	for _, m := range i.RemoteMetadata {
		purposes[fmt.Sprint(m["purpose"])] = true
	}
	if !purposes["m.screenshare"] || !purposes["m.usermedia"] {
		t.Errorf("icebox client: negotiate's sdp_stream_metadata %v; want an m.usermedia and an m.screenshare stream", i.RemoteMetadata)
	}
	i = s.iceboxReceives(t, id, "video", "while sharing the screen")
	t.Logf("icebox client's inbound RTP while sharing: %+v", i.Stats.Inbound)
	s.br.call(t, s.ep(), "harness.setScreensharingEnabled", &ok, id, false)
	e, _ = s.renegotiated(t, id, "screen share stopped", received("offer", 2))
	if e.Screensharing || len(e.feeds(true, "m.screenshare")) != 0 {
		t.Errorf("matrix-js-sdk after stopping: screensharing %v, feeds %+v", e.Screensharing, e.Feeds)
	}
	s.mediaFlows(t, id, "audio", "after the screen share")
	s.elementHangsUp(t, id)
}

// elementRestartsICE: what matrix-js-sdk does by itself after 2 s of ICE
// "disconnected" (peerConn.restartIce()): a negotiate offer with a new
// ufrag, answered by the icebox client; candidates of the new generation
// reach the client with their usernameFragment; media flows after.
func (s *jsSession) elementRestartsICE(t *testing.T, conv string) {
	id := s.connected(t, conv)
	before := s.icebox(t, id).CandidatesWithUfrag
	s.br.call(t, s.ep(), "harness.restartIce", nil, id)
	s.renegotiated(t, id, "Element's ICE restart", received("offer", 1))
	s.waitIcebox(t, id, "candidates of the new ICE generation with their usernameFragment", jsRenegotiateWait, func(c iceboxCall) bool {
		return c.CandidatesWithUfrag > before
	})
	s.mediaFlows(t, id, "audio", "after Element's ICE restart")
	s.elementHangsUp(t, id)
}

// networkBlip cuts matrix-js-sdk off: iptables in the bed's namespace
// drops what reaches its relay allocation on icebox (Chrome's stats hide
// the TURN client's own port, the relay port is the selected candidate's).
// Its checks go unanswered, ICE goes "disconnected", and matrix-js-sdk
// restarts ICE by itself after 2 s: its negotiate offer travels over HTTP,
// which the cut spares, and the icebox client answers. Then the cut ends,
// the new ICE generation connects and media flows again.
func (s *jsSession) networkBlip(t *testing.T, conv string) {
	id := s.connected(t, conv)
	e := s.element(t, id)
	if e.Stats.Local == nil || e.Stats.Local.Type != "relay" || e.Stats.Local.Port == 0 {
		t.Fatalf("matrix-js-sdk's selected local candidate %+v: no relay port to cut", e.Stats.Local)
	}
	rule := []string{"INPUT", "-p", "udp", "-d", s.b.relayIP(), "--dport", fmt.Sprint(e.Stats.Local.Port), "-j", "DROP"}
	s.b.ns.IPTables(append([]string{"-A"}, rule...)...)
	cut := true
	uncut := func() {
		if cut {
			cut = false
			s.b.ns.IPTables(append([]string{"-D"}, rule...)...)
		}
	}
	defer uncut()
	begin := time.Now()
	s.waitElement(t, id, "ICE disconnected by the cut", jsRenegotiateWait, func(c elementCall) bool {
		return c.IceConnectionState == "disconnected" || c.IceConnectionState == "failed"
	})
	t.Logf("%s: ICE disconnected %s after the cut", id, time.Since(begin).Round(time.Millisecond))
	s.waitIcebox(t, id, "matrix-js-sdk's own ICE restart offer, answered", jsRenegotiateWait, received("offer", 1))
	t.Logf("%s: matrix-js-sdk's ICE restart answered %s after the cut", id, time.Since(begin).Round(time.Millisecond))
	uncut()
	s.waitElement(t, id, "connected again after the cut", jsConnectWait, func(c elementCall) bool {
		return c.State == "connected" && c.SignalingState == "stable" &&
			(c.IceConnectionState == "connected" || c.IceConnectionState == "completed")
	})
	s.mediaFlows(t, id, "audio", "after the network blip")
	s.elementHangsUp(t, id)
}

// iceboxRestartsICE: the icebox client restarts ICE; its negotiate offer
// reaches matrix-js-sdk, whose m.call.negotiate answer must reach the
// client; media flows after.
func (s *jsSession) iceboxRestartsICE(t *testing.T, conv string) {
	id := s.connected(t, conv)
	s.iceboxSends(t, true, false) // the new generation's candidates say which it is
	defer s.iceboxSends(t, false, false)
	s.br.call(t, "icebox", "icebox.restartIce", nil, id)
	s.renegotiated(t, id, "icebox's ICE restart", received("answer", 1))
	s.mediaFlows(t, id, "audio", "after icebox's ICE restart")
	s.iceboxHangsUp(t, id)
}

// mute: Element mutes its microphone: m.call.sdp_stream_metadata_changed
// reaches the icebox client as CallStreamMetadataChanged with audio_muted;
// the icebox client mutes (metadata_changed command): matrix-js-sdk's
// remote feed says audio muted. Unmuted, media flows.
func (s *jsSession) mute(t *testing.T, conv string) {
	id := s.connectedSendingMetadata(t, conv)
	s.br.call(t, s.ep(), "harness.setMicrophoneMuted", nil, id, true)
	s.waitElement(t, id, "its own mute", jsEndWait, func(c elementCall) bool {
		f := c.feeds(true, "m.usermedia")
		return c.MicMuted && len(f) == 1 && f[0].AudioMuted
	})
	s.waitIcebox(t, id, "CallStreamMetadataChanged with audio_muted", jsRenegotiateWait, func(c iceboxCall) bool {
		for _, m := range c.RemoteMetadata {
			if m["audio_muted"] == true {
				return true
			}
		}
		return false
	})
	s.br.call(t, "icebox", "icebox.mute", nil, id, true)
	s.waitElement(t, id, "icebox's mute on the remote feed", jsRenegotiateWait, func(c elementCall) bool {
		f := c.feeds(false, "m.usermedia")
		return len(f) == 1 && f[0].AudioMuted
	})
	s.br.call(t, s.ep(), "harness.setMicrophoneMuted", nil, id, false)
	s.br.call(t, "icebox", "icebox.mute", nil, id, false)
	s.waitIcebox(t, id, "CallStreamMetadataChanged with audio unmuted", jsRenegotiateWait, func(c iceboxCall) bool {
		for _, m := range c.RemoteMetadata {
			if m["audio_muted"] == false {
				return true
			}
		}
		return false
	})
	s.waitElement(t, id, "icebox's unmute on the remote feed", jsRenegotiateWait, func(c elementCall) bool {
		f := c.feeds(false, "m.usermedia")
		return len(f) == 1 && !f[0].AudioMuted
	})
	s.mediaFlows(t, id, "audio", "after unmuting")
	s.elementHangsUp(t, id)
}

// hasEvent reports whether events holds name or name+"ViaMatrix" (issue
// 15's one naming rule marks Matrix-caused transitions with the suffix).
func hasEvent(events []string, name string) bool {
	return slices.Contains(events, name) || slices.Contains(events, name+"ViaMatrix")
}

// elementRejects: icebox calls, Element declines (m.call.reject): the
// icebox client's call ends as rejected.
func (s *jsSession) elementRejects(t *testing.T, conv string) {
	var id string
	s.br.call(t, "icebox", "icebox.placeCall", &id, conv, s.b.bob, false)
	t.Cleanup(func() { s.endQuietly(t, id) })
	s.waitIncoming(t, id)
	s.waitElement(t, id, "ringing", jsConnectWait, func(c elementCall) bool { return c.State == "ringing" })
	s.br.call(t, s.ep(), "harness.reject", nil, id)
	i := s.waitIcebox(t, id, "ended by Element's reject", jsEndWait, func(c iceboxCall) bool { return c.Status == "rejected" || c.Status == "ended" })
	if i.Status != "rejected" || !hasEvent(i.Events, "CallRejected") {
		t.Errorf("icebox client after Element's reject: status %q, events %v; want rejected, CallRejected", i.Status, i.Events)
	}
	if conv == "plain" {
		if types := s.b.roomEventTypes(t, s.b.rooms[conv], id); !slices.Contains(types, "m.call.reject") {
			t.Errorf("room events of call %s: %v; want m.call.reject", id, types)
		}
	}
}

// iceboxRejects: Element calls, the icebox client declines: Element gets
// m.call.reject (not a hangup) and ends the call as rejected by the remote.
func (s *jsSession) iceboxRejects(t *testing.T, conv string) {
	var id string
	s.br.call(t, s.ep(), "harness.placeCall", &id, s.b.rooms[conv], "voice")
	t.Cleanup(func() { s.endQuietly(t, id) })
	if !waitFor(jsConnectWait, func() bool {
		var inv []struct{ CallID string }
		s.br.call(t, "icebox", "icebox.invites", &inv)
		return slices.ContainsFunc(inv, func(v struct{ CallID string }) bool { return v.CallID == id })
	}) {
		t.Fatalf("matrix-js-sdk's invite %s never reached the icebox client", id)
	}
	var status string
	s.br.call(t, "icebox", "icebox.reject", &status, id)
	if status != "rejected" {
		t.Errorf("reject command: status %q, want rejected", status)
	}
	e := s.waitElement(t, id, "ended by icebox's reject", jsEndWait, func(c elementCall) bool { return c.State == "ended" })
	if e.HangupParty != "remote" {
		t.Errorf("matrix-js-sdk after icebox's reject: party %q reason %q; want remote", e.HangupParty, e.HangupReason)
	}
	if conv == "plain" {
		if types := s.b.roomEventTypes(t, s.b.rooms[conv], id); !slices.Contains(types, "m.call.reject") || slices.Contains(types, "m.call.hangup") {
			t.Errorf("room events of call %s: %v; want m.call.reject and no m.call.hangup", id, types)
		}
	}
}

// elementLeaves: bob leaves the room during an answered call: icebox ends
// his call (user_hangup or a documented reason) and the client hears it.
func (s *jsSession) elementLeaves(t *testing.T, conv string) {
	id := s.connected(t, conv)
	s.br.call(t, s.ep(), "harness.leaveRoom", nil, s.b.rooms[conv])
	i := s.waitIcebox(t, id, "ended by bob leaving the room", jsEndWait, func(c iceboxCall) bool { return c.Status == "ended" })
	if i.EndReason == "" {
		t.Errorf("icebox client after bob left: reason %q; want user_hangup or a documented one", i.EndReason)
	}
	t.Logf("bob left the room: the icebox client's call ended (%s)", i.EndReason)
}

// jsInviteLifetime is the lifetime of the invite that inviteExpires lets
// run out: matrix-js-sdk rings only for an invite with more than 3 s left
// when it arrives, icebox takes 5 s at least.
const jsInviteLifetime = 8 * time.Second

// How long answeredElsewhere waits for the second device to ring, and how
// many calls it places for it (see there).
const (
	jsSecondDeviceWait     = 5 * time.Second
	jsSecondDeviceAttempts = 3
)

// answeredElsewhere: alice calls bob, who has a second matrix-js-sdk
// device (page "element2"): both ring, the second answers. icebox selects
// it (m.call.select_answer naming its party, its device ID), the first
// device ends the call as answered_elsewhere, and alice's call goes on with
// the second device: media flows both ways over icebox's relay, and her
// hangup reaches it.
func (s *jsSession) answeredElsewhere(t *testing.T, conv string) {
	other := &jsSession{b: s.b, br: s.br, page: "element2"}
	dev := other.login(t, map[string]string{conv: s.b.rooms[conv]}) // bob may have left others
	t.Cleanup(func() { _ = s.br.do(t, nil, map[string]any{"op": "closePage", "page": other.page}) })
	// In an encrypted room, icebox encrypts to the devices it knows: one
	// logged in a moment ago is known once icebox's next /sync brought its
	// device-list change (then mautrix starts a new megolm session). An
	// invite sent before cannot be decrypted there, and matrix-js-sdk's
	// key request is refused (the session was not shared with it), as
	// between any two Matrix clients: the call is then placed again.
	var id string
	for attempt := 1; ; attempt++ {
		s.br.call(t, "icebox", "icebox.placeCall", &id, conv, s.b.bob, false)
		callID := id
		t.Cleanup(func() { other.endQuietly(t, callID); s.endQuietly(t, callID) })
		s.waitIncoming(t, id)
		var incoming []string
		if waitFor(jsSecondDeviceWait, func() bool {
			other.br.call(t, other.ep(), "harness.incomingCalls", &incoming)
			return slices.Contains(incoming, id)
		}) {
			if attempt > 1 {
				t.Logf("the second device rang on attempt %d (icebox learnt of it from its next sync)", attempt)
			}
			break
		}
		if attempt == jsSecondDeviceAttempts {
			other.dumpLogs(t, id)
			t.Fatalf("icebox's invite never rang the second device %s in %d attempts", dev, attempt)
		}
		s.iceboxHangsUp(t, id)
	}
	for _, d := range []*jsSession{s, other} {
		d.waitElement(t, id, "ringing on "+d.ep(), jsConnectWait, func(c elementCall) bool { return c.State == "ringing" })
	}
	other.br.call(t, other.ep(), "harness.answer", nil, id, true, false)
	other.waitElement(t, id, "connected", jsConnectWait, func(c elementCall) bool { return c.State == "connected" })
	s.waitIcebox(t, id, "ICE connected with the second device", jsConnectWait, func(c iceboxCall) bool {
		return c.IceConnectionState == "connected" || c.IceConnectionState == "completed"
	})
	e := s.waitElement(t, id, "ended on the first device", jsEndWait, func(c elementCall) bool { return c.State == "ended" })
	if e.HangupReason != "answered_elsewhere" || e.HangupParty != "remote" {
		t.Errorf("first device: hangup party %q reason %q; want remote answered_elsewhere", e.HangupParty, e.HangupReason)
	}
	var view struct {
		Status        string `json:"status"`
		Answerer      string `json:"answerer"`
		AnswerPartyID string `json:"answer_party_id"`
	}
	code, body := s.b.iceboxAPI(t, jsAliceTok, http.MethodGet, "/calls/"+id, nil)
	if code != http.StatusOK || json.Unmarshal(body, &view) != nil || view.Status != "answered" || view.Answerer != s.b.bob || view.AnswerPartyID != dev {
		t.Errorf("GET /calls/%s: %d %+v; want answered by %s/%s", id, code, view, s.b.bob, dev)
	}
	s.waitCallEvent(t, id, "icebox's m.call.select_answer naming the second device", func(ev jsCallEvent) bool {
		return ev.Type == "m.call.select_answer" && ev.Sender == s.b.service && ev.Selected == dev
	})
	other.mediaFlows(t, id, "audio", "with the second device")
	other.iceboxHangsUp(t, id)
	t.Logf("%s: answered on %s (%s); the first device ended it as %s", id, other.ep(), dev, e.HangupReason)
}

// inviteExpires: alice calls with an invite lifetime of jsInviteLifetime
// and bob never answers. matrix-js-sdk stops ringing when the invite's
// lifetime has passed (its own timer ends the call with the remote as the
// party and no reason, or icebox's hangup arrives first and gives
// invite_timeout), icebox expires the call (status expired, invite_timeout,
// CallHangup to the client) and sends m.call.hangup with invite_timeout,
// which matrix-js-sdk receives (decrypted, in the encrypted room).
func (s *jsSession) inviteExpires(t *testing.T, conv string) {
	var id string
	begin := time.Now()
	s.br.call(t, "icebox", "icebox.placeCall", &id, conv, s.b.bob, false, jsInviteLifetime.Milliseconds())
	t.Cleanup(func() { s.endQuietly(t, id) })
	s.waitIncoming(t, id)
	s.waitElement(t, id, "ringing", jsConnectWait, func(c elementCall) bool { return c.State == "ringing" })
	e := s.waitElement(t, id, "ended by the invite's expiry", jsInviteLifetime+jsEndWait, func(c elementCall) bool { return c.State == "ended" })
	elementEnded := time.Since(begin)
	if e.HangupParty != "remote" || (e.HangupReason != "" && e.HangupReason != "invite_timeout") {
		t.Errorf("matrix-js-sdk after the expiry: party %q reason %q; want remote, invite_timeout or none", e.HangupParty, e.HangupReason)
	}
	i := s.waitIcebox(t, id, "expired", jsEndWait, func(c iceboxCall) bool { return c.Status != "ringing" && c.Status != "new" })
	if i.Status != "expired" || i.EndReason != "invite_timeout" || !slices.Contains(i.Events, "CallHangup") {
		t.Errorf("icebox client after the expiry: status %q reason %q events %v; want expired, invite_timeout, CallHangup", i.Status, i.EndReason, i.Events)
	}
	s.waitCallEvent(t, id, "icebox's m.call.hangup with invite_timeout", func(ev jsCallEvent) bool {
		return ev.Type == "m.call.hangup" && ev.Sender == s.b.service && ev.Reason == "invite_timeout"
	})
	if elementEnded < jsInviteLifetime-time.Second {
		t.Errorf("matrix-js-sdk ended the call %s after the invite; its lifetime is %s", elementEnded, jsInviteLifetime)
	}
	t.Logf("%s: lifetime %s; matrix-js-sdk ended it after %s (reason %q), icebox as %s/%s", id, jsInviteLifetime,
		elementEnded.Round(time.Millisecond), e.HangupReason, i.Status, i.EndReason)
}

// jsCallEvent is an m.call.* event as bob's client received it (decrypted).
type jsCallEvent struct {
	Call, Type, Sender, Reason, Party, Selected string
}

// waitCallEvent waits until bob's client received an event of call id
// that ok accepts.
func (s *jsSession) waitCallEvent(t *testing.T, id, what string, ok func(jsCallEvent) bool) {
	t.Helper()
	var evs []jsCallEvent
	if !waitFor(jsEndWait, func() bool {
		s.br.call(t, s.ep(), "harness.callEvents", &evs, id)
		return slices.ContainsFunc(evs, ok)
	}) {
		t.Errorf("%s: %s not received within %s; got %+v", s.ep(), what, jsEndWait, evs)
	}
}
