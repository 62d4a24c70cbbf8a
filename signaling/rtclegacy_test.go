package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// legacyInvite is bob's m.call.invite (a legacy client) in the MatrixRTC
// conversation of rtcEnv.
func legacyInvite(callID string) signaling.MatrixInvite {
	return signaling.MatrixInvite{
		MatrixEvent: signaling.MatrixEvent{RoomID: rtcRoom, Sender: bob, EventID: "$" + callID, CallID: callID, PartyID: "BOBLEGACY"},
		SDPOffer:    "v=0 legacy offer\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", LifetimeMS: 60000, AgeMS: 100,
	}
}

// drainOutbox returns the queued Matrix events' types and contents and
// deletes them (as the sender would once sent).
func drainOutbox(t *testing.T, e *env) (types []string, contents []map[string]any) {
	t.Helper()
	ctx := context.Background()
	out, err := e.st.PendingOutbox(ctx, 20)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out {
		var m map[string]any
		if err := json.Unmarshal(o.Content, &m); err != nil {
			t.Fatal(err)
		}
		types, contents = append(types, o.EventType), append(contents, m)
		if err := e.st.CompleteOutbox(ctx, o.Seq, ""); err != nil {
			t.Fatal(err)
		}
	}
	return types, contents
}

// TestLegacyCallerBridged: a legacy m.call.invite in a conversation whose
// calls resolve to MatrixRTC is placed through the gateway (protocol
// matrixrtc, Place) without ringing the icebox clients; the caller's
// candidates reach the gateway; a member joining answers it with an
// m.call.answer carrying the leg's SDP and the member's device as
// party_id; renegotiation is refused; the members leaving send
// m.call.hangup. On the code before, the invite rang the icebox clients
// (CallInviteViaMatrix) and nothing reached the gateway.
func TestLegacyCallerBridged(t *testing.T) {
	ctx := context.Background()
	e, steps := rtcEnv(t)
	before := e.rec.count()
	c, err := e.svc.InviteFromMatrix(ctx, legacyInvite("legacy1"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Bridged() || !c.LegacyBridged() || c.Status != signaling.StatusRinging {
		t.Fatalf("call %+v: want a ringing legacy-bridged call", c)
	}
	if p, _, _, _ := steps.counts(); p != 1 {
		t.Fatalf("placed %d calls through the gateway, want 1", p)
	}
	for _, ev := range e.rec.events[before:] {
		if len(ev.Recipients) != 0 {
			t.Fatalf("event %s reached icebox clients %v: they take no part in a legacy-bridged call", ev.Type, ev.Recipients)
		}
	}
	outboxEmpty(t, e)
	if err := e.svc.CandidatesFromMatrix(ctx, legacyInvite("legacy1").MatrixEvent, []signaling.Candidate{{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, n := steps.counts(); n != 1 {
		t.Fatalf("%d of the caller's candidates reached the gateway, want 1", n)
	}
	a, err := e.svc.AnswerFromRTC(ctx, c.ID, "alice", "ALICEX", "v=0 leg answer")
	if err != nil || a.Status != signaling.StatusAnswered {
		t.Fatalf("AnswerFromRTC: %+v, %v", a, err)
	}
	types, contents := drainOutbox(t, e)
	if len(types) != 1 || types[0] != "m.call.answer" || contents[0]["party_id"] != "ALICEX" || contents[0]["call_id"] != "legacy1" {
		t.Fatalf("outbox after the answer: %v %v, want one m.call.answer as ALICEX", types, contents)
	}
	if ans, _ := contents[0]["answer"].(map[string]any); ans["sdp"] != "v=0 leg answer" {
		t.Fatalf("m.call.answer carries %v, want the leg's SDP", contents[0]["answer"])
	}
	var te *signaling.TransitionError
	neg := legacyInvite("legacy1").MatrixEvent
	if _, err := e.svc.NegotiateFromMatrix(ctx, neg, signaling.SessionDescription{Type: "offer", SDP: "v=0 again"}, 0); !errors.As(err, &te) || te.Code != "not_supported" {
		t.Fatalf("negotiate on a bridged call: %v, want not_supported", err)
	}
	end, err := e.svc.EndFromRTC(ctx, c.ID, "alice", signaling.ReasonUserHangup, false)
	if err != nil || end.Status != signaling.StatusEnded {
		t.Fatalf("EndFromRTC: %+v, %v", end, err)
	}
	types, contents = drainOutbox(t, e)
	if len(types) != 1 || types[0] != "m.call.hangup" || contents[0]["party_id"] != "ALICEX" || contents[0]["reason"] != "user_hangup" {
		t.Fatalf("outbox after the members left: %v %v, want m.call.hangup as ALICEX", types, contents)
	}
	if _, _, ended, _ := steps.counts(); ended != 1 {
		t.Fatalf("gateway heard of %d ends, want 1", ended)
	}
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("the call's TURN credentials were not revoked")
	}
}

// TestLegacyCallerDeclinedAndHangup: a member's decline of the gateway's
// ring is an m.call.reject (the gateway's party) to the caller; the
// caller's own m.call.hangup ends the next call (the gateway hears it, no
// event goes back); a failing gateway sends m.call.hangup.
func TestLegacyCallerDeclinedAndHangup(t *testing.T) {
	ctx := context.Background()
	e, steps := rtcEnv(t)
	c, err := e.svc.InviteFromMatrix(ctx, legacyInvite("legacy2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.EndFromRTC(ctx, c.ID, "alice", signaling.ReasonRejected, true); err != nil {
		t.Fatal(err)
	}
	types, contents := drainOutbox(t, e)
	if len(types) != 1 || types[0] != "m.call.reject" || contents[0]["party_id"] != signaling.GatewayPartyID {
		t.Fatalf("outbox after a decline: %v %v, want m.call.reject", types, contents)
	}

	c, err = e.svc.InviteFromMatrix(ctx, legacyInvite("legacy3"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.HangupFromMatrix(ctx, legacyInvite("legacy3").MatrixEvent, "user_hangup", false); err != nil {
		t.Fatal(err)
	}
	outboxEmpty(t, e)
	if _, _, ended, _ := steps.counts(); ended != 2 {
		t.Fatalf("gateway heard of %d ends, want 2", ended)
	}

	c, err = e.svc.InviteFromMatrix(ctx, legacyInvite("legacy4"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.EndFromRTC(ctx, c.ID, "", signaling.ReasonGatewayFailed, false); err != nil {
		t.Fatal(err)
	}
	types, contents = drainOutbox(t, e)
	if len(types) != 1 || types[0] != "m.call.hangup" || contents[0]["party_id"] != signaling.GatewayPartyID || contents[0]["reason"] != "unknown_error" {
		t.Fatalf("outbox after the gateway failed: %v %v, want m.call.hangup, unknown_error", types, contents)
	}
}

// TestLegacyCallerNotBridged: in a conversation whose calls are legacy
// (its own setting), a legacy invite rings the icebox clients as always.
func TestLegacyCallerNotBridged(t *testing.T) {
	ctx := context.Background()
	e, steps := rtcEnv(t)
	legacy := signaling.CallProtocolLegacy
	if _, err := e.svc.PutConversationSpec(ctx, "rtc", signaling.ConversationSpec{
		Participants: []string{"alice", bob}, RoomID: rtcRoom, CallProtocol: &legacy}); err != nil {
		t.Fatal(err)
	}
	c, err := e.svc.InviteFromMatrix(ctx, legacyInvite("legacy5"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridged() {
		t.Fatalf("call %+v bridged in a legacy conversation", c)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallInviteViaMatrix || len(ev.Recipients) == 0 {
		t.Fatalf("event %s to %v, want CallInviteViaMatrix to the clients", ev.Type, ev.Recipients)
	}
	if p, _, _, _ := steps.counts(); p != 0 {
		t.Fatalf("placed %d calls through the gateway, want 0", p)
	}
}

// TestLegacyCallerAuto: with call_protocol auto the rule is asked about
// the callee's side, not the caller: bob's legacy invite is bridged when
// carol's (the other participant's) last call was MatrixRTC, although
// bob's own last call is this legacy one; with no MatrixRTC history it
// rings the icebox clients as a legacy call.
func TestLegacyCallerAuto(t *testing.T) {
	ctx := context.Background()
	const carol = "@carol:example.org"
	rooms := membership.NewRooms(0, 0, nil)
	steps := &rtcSteps{}
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Outbound = &matrix.Encoder{}
		c.RoomIndex = c.Store.(signaling.RoomIndex)
		c.CallProtocol = signaling.CallProtocolAuto
		c.RTC = steps
		c.RTCRooms = rooms
	})
	if _, err := e.svc.PutConversationSpec(ctx, "rtc", signaling.ConversationSpec{
		Participants: []string{carol, bob}, RoomID: rtcRoom}); err != nil {
		t.Fatal(err)
	}
	c, err := e.svc.InviteFromMatrix(ctx, legacyInvite("auto1"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridged() {
		t.Fatalf("call %+v bridged with no MatrixRTC history", c)
	}
	if _, err := e.svc.HangupFromMatrix(ctx, legacyInvite("auto1").MatrixEvent, "user_hangup", false); err != nil {
		t.Fatal(err)
	}

	// bob's last call is legacy (as the sync records his invite); carol's
	// was MatrixRTC, in another room, long over.
	now := time.Now()
	rooms.ObserveLegacyCall(bob, now)
	content := `{"application":"m.call","call_id":"","device_id":"CAROLX","scope":"m.room",` +
		`"focus_active":{"type":"livekit","focus_selection":"oldest_membership"},` +
		`"foci_preferred":[{"type":"livekit","livekit_service_url":"https://x/livekit/jwt","livekit_alias":"!elsewhere:x"}],"expires":60000}`
	if _, err := rooms.Observe("!elsewhere:example.org", membership.Event{StateKey: "_" + carol + "_CAROLX_m.call", Sender: carol,
		Content: []byte(content), TS: now.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	c, err = e.svc.InviteFromMatrix(ctx, legacyInvite("auto2"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.LegacyBridged() {
		t.Fatalf("call %+v not bridged although the callee's last call was MatrixRTC", c)
	}
	if p, _, _, _ := steps.counts(); p != 1 {
		t.Fatalf("placed %d calls through the gateway, want 1", p)
	}
}
