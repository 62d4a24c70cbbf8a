package main

// Calls between Element's own call code (matrix-js-sdk 43, pinned in
// web/e2e-matrix) and an icebox WebSocket client, through a real Dendrite,
// with real WebRTC media relayed by icebox (issue 15, "How it is tested").
// The bed is in jssdk_bed_test.go; the scenarios after the first answer
// (hold, video, screen share, ICE restart, mute, reject, answered
// elsewhere, the invite's expiry, leave) are in jssdk_scenarios_test.go;
// the same across two homeservers in jssdk_federation_test.go.

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// Bounds of the waits on a call.
const (
	jsConnectWait = 30 * time.Second // invite → both sides' media (the encrypted room's first key share included)
	jsMediaWait   = 15 * time.Second // inbound RTP bytes grow by jsMediaBytes
	jsEndWait     = 15 * time.Second // a hangup reaches the other side
	jsMediaBytes  = 4000             // ~0.5 s of Opus
)

// jsRTP is a page's getStats() summary.
type jsRTP struct {
	AudioBytesIn, VideoBytesIn, BytesOut int64
	FramesDecoded                        int64   // video frames decoded, every inbound track
	AudioEnergy                          float64 // totalAudioEnergy, every inbound track
	Inbound                              []struct {
		Kind, Mid string
		Bytes     int64
	}
	Local *struct {
		Type, Address, RelayProtocol string
		Port                         int
	}
	Remote *struct {
		Type, Address string
		Port          int
	}
}

// jsFeed is one of matrix-js-sdk's CallFeeds.
type jsFeed struct {
	Local                    bool
	Purpose                  string
	StreamID                 string `json:"streamId"`
	AudioMuted, VideoMuted   bool
	AudioTracks, VideoTracks int
}

// elementCall is what matrix-js-sdk reports about a call (harness.state).
type elementCall struct {
	CallID, State, Type, Direction     string
	HangupParty, HangupReason          string
	RemoteOnHold, LocalOnHold          bool
	MicMuted, VideoMuted               bool
	Screensharing                      bool
	OpponentSupportsMetadata           bool
	Feeds                              []jsFeed
	SignalingState, IceConnectionState string
	Stats                              jsRTP
}

func (c elementCall) feeds(local bool, purpose string) []jsFeed {
	var out []jsFeed
	for _, f := range c.Feeds {
		if f.Local == local && f.Purpose == purpose {
			out = append(out, f)
		}
	}
	return out
}

// iceboxCall is what the icebox WebSocket peer reports (icebox.state).
type iceboxCall struct {
	CallID, Role, Status, EndReason    string
	Events                             []string
	Negotiations                       struct{ Sent, Received []string }
	RemoteMetadata                     map[string]map[string]any // the last CallStreamMetadataChanged or CallNegotiate's
	MetadataChanges                    int
	PeerMetadata                       map[string]map[string]any // of the Matrix side's invite or answer
	PeerCapabilities                   map[string]any
	Transceivers                       []struct{ Mid, Kind, Direction, CurrentDirection string }
	CandidatesSeen                     int
	CandidatesWithUfrag                int
	SignalingState, IceConnectionState string
	Stats                              jsRTP
}

// jsSession is the two pages of a bed: bob on matrix-js-sdk (page
// "element", or page of a second device) and alice on icebox's WebSocket
// API ("icebox").
type jsSession struct {
	b    *jsBed
	br   *jsBrowser
	page string // bob's matrix-js-sdk page; "" is "element"
}

// ep is the page of bob's matrix-js-sdk.
func (s *jsSession) ep() string {
	if s.page == "" {
		return "element"
	}
	return s.page
}

// openJSSession logs bob's new device into matrix-js-sdk (with Rust crypto)
// and connects alice's WebSocket.
func openJSSession(t *testing.T, b *jsBed) *jsSession {
	t.Helper()
	s := &jsSession{b: b, br: b.browser}
	s.login(t, b.rooms)
	s.br.open(t, "icebox", b.front+"/icebox.html", "icebox")
	s.br.call(t, "icebox", "icebox.connect", nil, jsAliceTok)
	return s
}

// login opens bob's matrix-js-sdk page, logs a new device of his in (Rust
// crypto, TURN from /voip/turnServer) and waits until it knows rooms
// (conversation → room ID). It returns the device ID, which matrix-js-sdk
// uses as its party_id.
func (s *jsSession) login(t *testing.T, rooms map[string]string) string {
	t.Helper()
	b := s.b
	tok, dev := b.hs.Login(t, b.bob, jsBobPass)
	begin := time.Now()
	s.br.open(t, s.ep(), b.front+"/element.html", "harness")
	var login struct {
		UserID, DeviceID string
		Crypto           bool
		TurnServers      []struct {
			URLs     []string
			Username string
		}
	}
	s.br.call(t, s.ep(), "harness.login", &login, map[string]any{
		"baseUrl": b.front, "userId": b.bob, "accessToken": tok, "deviceId": dev, "encryption": true})
	if !login.Crypto || len(login.TurnServers) == 0 || !strings.Contains(strings.Join(login.TurnServers[0].URLs, " "), b.turnAddr()) {
		t.Fatalf("matrix-js-sdk login: %+v; want Rust crypto and icebox's TURN from /voip/turnServer", login)
	}
	t.Logf("matrix-js-sdk (%s): %s device %s, Rust crypto, TURN %v (%s), in %s", s.ep(), login.UserID, login.DeviceID,
		login.TurnServers[0].URLs, login.TurnServers[0].Username, time.Since(begin).Round(time.Millisecond))
	for name, room := range rooms {
		s.br.call(t, s.ep(), "harness.roomReady", nil, room, strings.HasPrefix(name, "enc"))
	}
	return login.DeviceID
}

func (s *jsSession) element(t *testing.T, callID string) elementCall {
	t.Helper()
	var c elementCall
	s.br.call(t, s.ep(), "harness.state", &c, callID)
	return c
}

func (s *jsSession) icebox(t *testing.T, callID string) iceboxCall {
	t.Helper()
	var c iceboxCall
	s.br.call(t, "icebox", "icebox.state", &c, callID)
	return c
}

// waitElement polls matrix-js-sdk's view of a call until ok, or fails
// with what it saw last.
func (s *jsSession) waitElement(t *testing.T, callID, what string, d time.Duration, ok func(elementCall) bool) elementCall {
	t.Helper()
	return waitCall(t, s, "matrix-js-sdk", s.element, callID, what, d, ok)
}

// waitIcebox is waitElement on the icebox client's view.
func (s *jsSession) waitIcebox(t *testing.T, callID, what string, d time.Duration, ok func(iceboxCall) bool) iceboxCall {
	t.Helper()
	return waitCall(t, s, "icebox client", s.icebox, callID, what, d, ok)
}

// waitCall polls state (one page's view of a call, the page named who)
// until ok, or logs both pages' notes and fails with what it saw last.
func waitCall[C any](t *testing.T, s *jsSession, who string, state func(*testing.T, string) C, callID, what string, d time.Duration, ok func(C) bool) C {
	t.Helper()
	var last C
	if waitFor(d, func() bool { last = state(t, callID); return ok(last) }) {
		return last
	}
	s.dumpLogs(t, callID)
	t.Fatalf("%s, call %s: %s not within %s; last: %+v", who, callID, what, d, last)
	return last
}

// dumpLogs logs both pages' notes on a call (and matrix-js-sdk's warnings).
func (s *jsSession) dumpLogs(t *testing.T, callID string) {
	t.Helper()
	var notes []struct {
		T          int64
		Call, What string
	}
	for _, page := range []string{s.ep(), "icebox"} {
		global := map[bool]string{true: "icebox", false: "harness"}[page == "icebox"]
		if err := s.br.try(t, page, global+".events", &notes, 0); err != nil {
			t.Logf("%s page: events: %v", page, err)
			continue
		}
		var lines []string
		for _, n := range notes {
			if n.Call == callID || n.Call == "" {
				lines = append(lines, n.What)
			}
		}
		t.Logf("%s page, call %s:\n  %s", page, callID, strings.Join(tail2(lines, 60), "\n  "))
	}
	var warn []string
	for _, l := range s.br.console(t, s.ep(), 0) {
		if (l.Type == "warning" || l.Type == "error") && strings.Contains(l.Text, callID) {
			warn = append(warn, l.Text)
		}
	}
	t.Logf("matrix-js-sdk warnings on call %s:\n  %s", callID, strings.Join(tail2(warn, 30), "\n  "))
}

func tail2(l []string, n int) []string {
	if len(l) > n {
		return l[len(l)-n:]
	}
	return l
}

// mediaFlows waits until both sides' inbound RTP (kind "audio" or "video")
// has grown by jsMediaBytes over a relay pair on icebox's address.
func (s *jsSession) mediaFlows(t *testing.T, callID, kind, when string) {
	t.Helper()
	in := func(r jsRTP) int64 {
		if kind == "video" {
			return r.VideoBytesIn
		}
		return r.AudioBytesIn
	}
	e0, i0 := in(s.element(t, callID).Stats), in(s.icebox(t, callID).Stats)
	e := s.waitElement(t, callID, kind+" RTP into matrix-js-sdk "+when, jsMediaWait, func(c elementCall) bool { return in(c.Stats) >= e0+jsMediaBytes })
	i := s.waitIcebox(t, callID, kind+" RTP into the icebox client "+when, jsMediaWait, func(c iceboxCall) bool { return in(c.Stats) >= i0+jsMediaBytes })
	for side, r := range map[string]jsRTP{"matrix-js-sdk": e.Stats, "icebox client": i.Stats} {
		// After an ICE restart the other side's checks can come before its
		// candidates (trickled through Matrix in 500 ms batches): the remote
		// is then peer-reflexive, with its address hidden. Both ends are
		// relay-only, so the path is still icebox's relay.
		if r.Local == nil || r.Local.Type != "relay" || r.Local.Address != s.b.relayIP() || r.Remote == nil || (r.Remote.Type != "relay" && r.Remote.Type != "prflx") {
			t.Errorf("%s %s: selected pair %+v -> %+v; want relay on %s to relay", side, when, r.Local, r.Remote, s.b.relayIP())
		}
	}
	t.Logf("%s %s: %s in: matrix-js-sdk %d -> %d bytes, icebox client %d -> %d bytes", callID, when, kind, e0, in(e.Stats), i0, in(i.Stats))
}

// elementCallsIcebox: bob places a voice call in room; alice's WebSocket
// gets the invite and answers; both connect. Returns the call ID.
func (s *jsSession) elementCallsIcebox(t *testing.T, room, kind string) string {
	t.Helper()
	begin := time.Now()
	var callID string
	s.br.call(t, s.ep(), "harness.placeCall", &callID, room, kind)
	var invites []struct{ CallID, Type, From, Conversation string }
	if !waitFor(jsConnectWait, func() bool {
		s.br.call(t, "icebox", "icebox.invites", &invites)
		for _, v := range invites {
			if v.CallID == callID {
				return true
			}
		}
		return false
	}) {
		s.dumpLogs(t, callID)
		t.Fatalf("matrix-js-sdk's invite %s never reached the icebox client (invites %+v)", callID, invites)
	}
	s.br.call(t, "icebox", "icebox.answer", nil, callID, kind == "video")
	s.waitElement(t, callID, "connected", jsConnectWait, func(c elementCall) bool { return c.State == "connected" })
	s.waitIcebox(t, callID, "ICE connected", jsConnectWait, func(c iceboxCall) bool {
		return c.IceConnectionState == "connected" || c.IceConnectionState == "completed"
	})
	t.Logf("matrix-js-sdk → icebox call %s in %s connected in %s", callID, room, time.Since(begin).Round(time.Millisecond))
	return callID
}

// iceboxCallsElement: alice initiates over the WebSocket with bob as the
// invitee; matrix-js-sdk rings and bob answers; both connect.
func (s *jsSession) iceboxCallsElement(t *testing.T, conversation, kind string) string {
	t.Helper()
	begin := time.Now()
	var callID string
	s.br.call(t, "icebox", "icebox.placeCall", &callID, conversation, s.b.bob, kind == "video")
	s.waitIncoming(t, callID)
	s.waitElement(t, callID, "ringing", jsConnectWait, func(c elementCall) bool { return c.State == "ringing" })
	s.br.call(t, s.ep(), "harness.answer", nil, callID, true, kind == "video")
	s.waitElement(t, callID, "connected", jsConnectWait, func(c elementCall) bool { return c.State == "connected" })
	s.waitIcebox(t, callID, "ICE connected", jsConnectWait, func(c iceboxCall) bool {
		return c.IceConnectionState == "connected" || c.IceConnectionState == "completed"
	})
	t.Logf("icebox → matrix-js-sdk call %s in %s connected in %s", callID, conversation, time.Since(begin).Round(time.Millisecond))
	return callID
}

// waitIncoming waits until matrix-js-sdk has made an incoming call of
// icebox's invite (before that, harness.state knows no such call).
func (s *jsSession) waitIncoming(t *testing.T, callID string) {
	t.Helper()
	var incoming []string
	if !waitFor(jsConnectWait, func() bool {
		s.br.call(t, s.ep(), "harness.incomingCalls", &incoming)
		return slices.Contains(incoming, callID)
	}) {
		s.dumpLogs(t, callID)
		t.Fatalf("icebox's invite %s never rang matrix-js-sdk (incoming %v)", callID, incoming)
	}
}

// elementHangsUp: bob hangs up; the icebox client hears CallHangup and
// matrix-js-sdk reports the call ended by the local party.
func (s *jsSession) elementHangsUp(t *testing.T, callID string) {
	t.Helper()
	s.br.call(t, s.ep(), "harness.hangup", nil, callID, "user_hangup")
	e := s.waitElement(t, callID, "ended", jsEndWait, func(c elementCall) bool { return c.State == "ended" })
	if e.HangupParty != "local" || e.HangupReason != "user_hangup" {
		t.Errorf("matrix-js-sdk after its hangup: party %q reason %q; want local user_hangup", e.HangupParty, e.HangupReason)
	}
	s.waitIcebox(t, callID, "ended by the Matrix hangup", jsEndWait, func(c iceboxCall) bool { return c.Status == "ended" })
}

// iceboxHangsUp: alice hangs up over the WebSocket; matrix-js-sdk reports
// the call ended by the remote party.
func (s *jsSession) iceboxHangsUp(t *testing.T, callID string) {
	t.Helper()
	var status string
	s.br.call(t, "icebox", "icebox.hangup", &status, callID)
	if status != "ended" {
		t.Errorf("hangup command: status %q, want ended", status)
	}
	e := s.waitElement(t, callID, "ended by icebox's hangup", jsEndWait, func(c elementCall) bool { return c.State == "ended" })
	if e.HangupParty != "remote" || e.HangupReason != "user_hangup" {
		t.Errorf("matrix-js-sdk after icebox's hangup: party %q reason %q; want remote user_hangup", e.HangupParty, e.HangupReason)
	}
}

// TestJSSDKCalls: the calls that work before issue 15's server side, in a
// plain and an encrypted room, each way; then the scenarios of issue 15
// (jssdk_scenarios_test.go) on the same bed.
func TestJSSDKCalls(t *testing.T) {
	t.Parallel()
	b := newJSBed(t)
	b.makeRooms(t, "plain", "enc", "leave", "encleave")
	s := openJSSession(t, b)

	for _, room := range []struct{ name, id string }{{"plain", b.plainRoom}, {"enc", b.encRoom}} {
		t.Run(room.name+"/element calls icebox", func(t *testing.T) {
			id := s.elementCallsIcebox(t, room.id, "voice")
			s.mediaFlows(t, id, "audio", "after the answer")
			s.elementHangsUp(t, id)
		})
		t.Run(room.name+"/icebox calls element", func(t *testing.T) {
			id := s.iceboxCallsElement(t, room.name, "voice")
			s.mediaFlows(t, id, "audio", "after the answer")
			s.iceboxHangsUp(t, id)
		})
	}
	t.Run("scenarios", func(t *testing.T) { jsScenarios(t, s) })
}
