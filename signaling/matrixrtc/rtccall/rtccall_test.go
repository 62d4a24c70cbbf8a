package rtccall

import (
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// The call path runs against Dendrite and livekit-server in node's tests
// (node/rtccall_test.go); these are its pure parts.

// TestEndLabel: each way a bridged call ends has its fixed label, from the
// call and the leg's direction (who is the Matrix side).
func TestEndLabel(t *testing.T) {
	const alice, bob = "alice", "@bob:example.org"
	out := signaling.Call{Initiator: alice, Answerer: bob, Status: signaling.StatusEnded, EndReason: signaling.ReasonUserHangup}
	in := signaling.Call{Initiator: bob, Answerer: alice, Status: signaling.StatusEnded, EndReason: signaling.ReasonUserHangup}
	with := func(c signaling.Call, edit func(*signaling.Call)) signaling.Call { edit(&c); return c }
	for _, tc := range []struct {
		name    string
		c       signaling.Call
		inbound bool
		want    string
	}{
		{"client hangs up an outbound call", with(out, func(c *signaling.Call) { c.EndedBy = alice }), false, endHangupClient},
		{"member hangs up an outbound call", with(out, func(c *signaling.Call) { c.EndedBy = bob }), false, endHangupMember},
		{"memberships expired", with(out, func(c *signaling.Call) { c.EndedBy = "" }), false, endHangupMember},
		{"client hangs up an inbound call", with(in, func(c *signaling.Call) { c.EndedBy = alice }), true, endHangupClient},
		{"caller hangs up an inbound call", with(in, func(c *signaling.Call) { c.EndedBy = bob }), true, endHangupMember},
		{"declined", with(out, func(c *signaling.Call) { c.Status, c.EndedBy = signaling.StatusRejected, bob }), false, endDeclined},
		{"rejected", with(in, func(c *signaling.Call) { c.Status, c.EndedBy = signaling.StatusRejected, alice }), true, endRejected},
		{"timeout", with(out, func(c *signaling.Call) { c.Status = signaling.StatusExpired }), false, endTimeout},
		{"failed", with(out, func(c *signaling.Call) { c.EndReason = signaling.ReasonGatewayFailed }), false, endFailed},
		{"encryption", with(out, func(c *signaling.Call) { c.EndReason = signaling.ReasonE2EEUnavailable }), false, endE2EE},
		{"busy", with(out, func(c *signaling.Call) { c.EndReason, c.Answerer = signaling.ReasonBusy, "" }), false, endBusy},
		{"restarted", with(in, func(c *signaling.Call) { c.EndReason = signaling.ReasonGatewayRestarted }), true, endRestarted},
		{"revoked", with(in, func(c *signaling.Call) { c.EndReason = signaling.ReasonRevoked }), true, endOther},
	} {
		if got := endLabel(tc.c, tc.inbound, bob); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestFocus: the call's focus is the oldest other member's LiveKit
// service (Element Call's oldest_membership), else icebox's own.
func TestFocus(t *testing.T) {
	now := time.Now()
	self := membership.Device{UserID: "@icebox:example.org", DeviceID: "ICEBOX"}
	var members []membership.Member
	m, err := New(Config{Members: func(string, time.Time) []membership.Member { return members }, ServiceURL: "https://icebox.example.org/livekit/jwt",
		ICEServers: func(string) ([]webrtc.ICEServer, error) { return nil, nil }, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.focus("!r", self); got != "https://icebox.example.org/livekit/jwt" {
		t.Errorf("empty room: %s", got)
	}
	members = []membership.Member{
		{Sender: self.UserID, DeviceID: self.DeviceID, FocusType: "livekit", ServiceURL: "https://self", Created: now.Add(-time.Hour)},
		{Sender: "@a:x", DeviceID: "A", FocusType: "livekit", ServiceURL: "https://newer", Created: now.Add(-time.Minute)},
		{Sender: "@b:x", DeviceID: "B", FocusType: "livekit", ServiceURL: "https://older", Created: now.Add(-10 * time.Minute)},
		{Sender: "@c:x", DeviceID: "C", FocusType: "other", ServiceURL: "https://oldest-not-livekit", Created: now.Add(-20 * time.Minute)},
	}
	if got := m.focus("!r", self); got != "https://older" {
		t.Errorf("focus %s, want the oldest other LiveKit member's", got)
	}
}

func TestIntent(t *testing.T) {
	if got := intent("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"); got != "audio" {
		t.Errorf("audio-only offer: %s", got)
	}
	if got := intent("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"); got != "video" {
		t.Errorf("offer with video: %s", got)
	}
}
