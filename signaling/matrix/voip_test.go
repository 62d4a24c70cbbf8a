package matrix_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// Everything after the first answer, against a real Dendrite with bob as a
// Matrix client written here: renegotiation both ways, stream metadata and
// capabilities, candidates passed whole, the endings (reject, leave, kick)
// and the spec's opaque identifiers.

// msidAnswerSDP is an answer with one stream (a=msid), as browsers write it.
const msidAnswerSDP = "v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=msid:alicestream alicetrack\r\n"

// opaqueID is a valid call_id of the spec's greatest length, with every
// kind of character its grammar allows: icebox's own IDs never have '.'
// or '~' and are 36 characters.
var opaqueID = strings.Repeat("aZ09._~-", 32)[:255]

// fromIcebox is a done func for callEvents: the service user sent an event
// of type typ (bob's timeline has his own events too).
func fromIcebox(svc, typ string) func([]roomEvent) bool {
	return func(evs []roomEvent) bool {
		for _, ev := range evs {
			if ev.Type == typ && ev.Sender == svc {
				return true
			}
		}
		return false
	}
}

// lastFrom is the content of the last event of type typ that svc sent.
func lastFrom(t *testing.T, evs []roomEvent, svc, typ string) map[string]any {
	t.Helper()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ && evs[i].Sender == svc {
			var m map[string]any
			if err := json.Unmarshal(evs[i].Content, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
	}
	t.Fatalf("no %s from %s among %s", typ, svc, typesOf(evs))
	return nil
}

// jsonEqual compares a raw JSON value with a Go value, by meaning.
func jsonEqual(t *testing.T, raw json.RawMessage, want any) bool {
	t.Helper()
	var got, w any
	if err := json.Unmarshal(raw, &got); err != nil {
		return false
	}
	b, _ := json.Marshal(want)
	_ = json.Unmarshal(b, &w)
	return reflect.DeepEqual(got, w)
}

// waitPublished waits until the service published n events of type typ
// for call id, and returns them.
func (w *inWorld) waitPublished(t *testing.T, typ, id string, n int) []signaling.Event {
	t.Helper()
	waitFor(t, 15*time.Second, typ+" published", func() bool { return len(w.published(typ, id)) >= n }, w.b.logs.String)
	return w.published(typ, id)
}

// bobCallsAliceAnswers: bob calls from Matrix (call id, party bobdev),
// the call rings for alice and she answers it through icebox.
func (w *inWorld) bobCallsAliceAnswers(t *testing.T, id string) {
	t.Helper()
	w.send(t, w.bob, "m.call.invite", invite(id, "bobdev", "1", 60000))
	w.waitPublished(t, signaling.EventCallInviteViaMatrix, id, 1)
	if _, err := w.calls.Answer(context.Background(), "alice", id, signaling.AnswerRequest{SDPAnswer: answerSDP}); err != nil {
		t.Fatal(err)
	}
}

// TestMatrixRenegotiation: renegotiation on one homeserver, then what a
// single client can get wrong: a metadata change that is not an object is
// invalid; invites with bad identifiers are counted and change nothing;
// after the hangup a negotiate is ignored.
func TestMatrixRenegotiation(t *testing.T) {
	w := newInWorld(t, inOptions{})
	w.start(t, w.b)
	id := opaqueID
	renegotiation(t, w, id)

	w.send(t, w.bob, "m.call.sdp_stream_metadata_changed", with(base(id, "bobdev"), "sdp_stream_metadata", []string{"not an object"}))
	waitInbound(t, w.b, "m.call.sdp_stream_metadata_changed", "invalid", 1)

	// Bad identifiers are counted and change nothing.
	w.send(t, w.bob, "m.call.invite", invite("bad/id", "bobdev", "1", 60000))
	w.send(t, w.bob, "m.call.invite", invite("okid", "bad party", "1", 60000))
	waitInbound(t, w.b, "m.call.invite", "invalid", 2)
	for _, bad := range []string{"bad/id", "okid"} {
		if _, ok := w.call(t, bad); ok {
			t.Errorf("an invite with a bad identifier made call %s", bad)
		}
	}

	// After the hangup a negotiate is ignored.
	w.send(t, w.bob, "m.call.hangup", with(base(id, "bobdev"), "reason", "user_hangup"))
	waitInbound(t, w.b, "m.call.hangup", "ok", 1)
	w.send(t, w.bob, "m.call.negotiate", with(base(id, "bobdev"), "lifetime", 60000,
		"description", map[string]any{"type": "offer", "sdp": "v=0 too late"}))
	waitInbound(t, w.b, "m.call.negotiate", "ignored", 2)
	if n := len(w.published(signaling.EventCallNegotiateViaMatrix, id)); n != 2 {
		t.Errorf("CallNegotiateViaMatrix published %d times, want 2", n)
	}
	if n := len(w.published(signaling.EventCallHangupViaMatrix, id)); n != 1 {
		t.Errorf("CallHangupViaMatrix published %d times, want 1", n)
	}
	if got := inbound(t, w.b, "m.call.negotiate", "ok"); got != 2 {
		t.Errorf("negotiate ok = %v, want 2", got)
	}
}

// renegotiation: bob calls from Matrix with call_id id,
// sdp_stream_metadata and capabilities, which reach alice unchanged; alice
// answers through icebox (her metadata derived from her SDP). Then, both
// ways: bob's m.call.negotiate offer (hold) reaches alice's clients and her
// answer goes back as m.call.negotiate of type answer; alice's offer (ICE
// restart) reaches bob and his answer reaches her; a stray answer is
// ignored; metadata changes cross both ways; candidates keep every field.
// The call is left answered.
func renegotiation(t *testing.T, w *inWorld, id string) {
	t.Helper()
	ctx, room, svc := context.Background(), w.conv.RoomID, w.svc.id
	since := w.since

	md := map[string]any{"bobstream": map[string]any{"purpose": "m.usermedia", "audio_muted": false, "video_muted": true}}
	caps := map[string]any{"m.call.transferee": false, "m.call.dtmf": true}
	w.send(t, w.bob, "m.call.invite", with(invite(id, "bobdev", "1", 60000), "sdp_stream_metadata", md, "capabilities", caps))
	inv := w.waitPublished(t, signaling.EventCallInviteViaMatrix, id, 1)[0].Payload.(signaling.InvitePayload)
	if !jsonEqual(t, inv.StreamMetadata, md) || !jsonEqual(t, inv.Capabilities, caps) {
		t.Errorf("CallInviteViaMatrix media = %s, %s; want bob's, unchanged", inv.StreamMetadata, inv.Capabilities)
	}

	if _, err := w.calls.Answer(ctx, "alice", id, signaling.AnswerRequest{SDPAnswer: msidAnswerSDP}); err != nil {
		t.Fatal(err)
	}
	evs, since := w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.answer"))
	ans := lastFrom(t, evs, svc, "m.call.answer")
	if ans["call_id"] != id ||
		!reflect.DeepEqual(ans["sdp_stream_metadata"], map[string]any{"alicestream": map[string]any{"purpose": "m.usermedia", "audio_muted": false, "video_muted": false}}) ||
		!reflect.DeepEqual(ans["capabilities"], map[string]any{"m.call.transferee": false, "m.call.dtmf": false}) {
		t.Errorf("bob saw the answer %v; want metadata derived from a=msid and capabilities all false", ans)
	}

	// bob puts the call on hold: his offer reaches alice's clients.
	hold := "v=0\r\na=sendonly\r\n"
	w.send(t, w.bob, "m.call.negotiate", with(base(id, "bobdev"), "lifetime", 60000,
		"description", map[string]any{"type": "offer", "sdp": hold}, "sdp_stream_metadata", md))
	neg := w.waitPublished(t, signaling.EventCallNegotiateViaMatrix, id, 1)[0].Payload.(signaling.NegotiatePayload)
	if neg.Description != (signaling.SessionDescription{Type: "offer", SDP: hold}) || neg.PartyID != "bobdev" || !jsonEqual(t, neg.StreamMetadata, md) {
		t.Errorf("CallNegotiateViaMatrix = %+v", neg)
	}
	// alice answers it: m.call.negotiate of type answer.
	if err := w.calls.Negotiate(ctx, "alice", id, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "answer", SDP: "v=0\r\na=recvonly\r\n"}}); err != nil {
		t.Fatal(err)
	}
	evs, since = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.negotiate"))
	got := lastFrom(t, evs, svc, "m.call.negotiate")
	if d, _ := got["description"].(map[string]any); d["type"] != "answer" || d["sdp"] != "v=0\r\na=recvonly\r\n" || got["party_id"] != signaling.PartyIDFor("alice") {
		t.Errorf("bob saw the negotiate %v; want alice's answer", got)
	}

	// alice restarts ICE: her offer reaches bob, his answer reaches her.
	restart := "v=0\r\na=ice-ufrag:new2\r\n" + "a=msid:alicestream alicetrack\r\n"
	if err := w.calls.Negotiate(ctx, "alice", id, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: restart}}); err != nil {
		t.Fatal(err)
	}
	evs, since = w.bob.callEvents(t, since, room, w.wait, negotiateFromIcebox(svc, "offer"))
	got = lastFrom(t, evs, svc, "m.call.negotiate")
	if d, _ := got["description"].(map[string]any); d["type"] != "offer" || d["sdp"] != restart || got["lifetime"] != float64(60000) || got["sdp_stream_metadata"] == nil {
		t.Errorf("bob saw the negotiate %v; want alice's offer with a lifetime and metadata", got)
	}
	w.send(t, w.bob, "m.call.negotiate", with(base(id, "bobdev"), "lifetime", 60000,
		"description", map[string]any{"type": "answer", "sdp": "v=0 bob answers"}))
	negs := w.waitPublished(t, signaling.EventCallNegotiateViaMatrix, id, 2)
	if p := negs[1].Payload.(signaling.NegotiatePayload); p.Description.Type != "answer" || p.Description.SDP != "v=0 bob answers" {
		t.Errorf("bob's answer reached alice as %+v", p)
	}
	// A second answer answers nothing: ignored, counted.
	w.send(t, w.bob, "m.call.negotiate", with(base(id, "bobdev"), "lifetime", 60000,
		"description", map[string]any{"type": "answer", "sdp": "v=0 stray"}))
	waitInbound(t, w.b, "m.call.negotiate", "ignored", 1)

	// Metadata changes: bob mutes, alice mutes.
	muted := map[string]any{"bobstream": map[string]any{"purpose": "m.usermedia", "audio_muted": true, "video_muted": true}}
	w.send(t, w.bob, "m.call.sdp_stream_metadata_changed", with(base(id, "bobdev"), "sdp_stream_metadata", muted))
	mc := w.waitPublished(t, signaling.EventCallStreamMetadataChangedViaMatrix, id, 1)[0].Payload.(signaling.StreamMetadataPayload)
	if !jsonEqual(t, mc.SDPStreamMetadata, muted) {
		t.Errorf("CallStreamMetadataChangedViaMatrix metadata = %s", mc.SDPStreamMetadata)
	}
	aliceMuted := json.RawMessage(`{"alicestream":{"purpose":"m.usermedia","audio_muted":true,"video_muted":false}}`)
	if err := w.calls.MetadataChanged(ctx, "alice", id, signaling.MetadataChangedRequest{SDPStreamMetadata: aliceMuted}); err != nil {
		t.Fatal(err)
	}
	evs, since = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.sdp_stream_metadata_changed"))
	got = lastFrom(t, evs, svc, "m.call.sdp_stream_metadata_changed")
	if raw, _ := json.Marshal(got["sdp_stream_metadata"]); !jsonEqual(t, raw, json.RawMessage(aliceMuted)) {
		t.Errorf("bob saw the metadata change %v", got)
	}

	// Candidates keep every field, both ways; end-of-candidates too.
	w.send(t, w.bob, "m.call.candidates", json.RawMessage(`{"call_id":"`+id+`","party_id":"bobdev","version":"1","candidates":[`+
		`{"candidate":"candidate:1 1 udp 2122260223 192.0.2.9 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"new2"},`+
		`{"candidate":""}]}`))
	cs := w.waitPublished(t, signaling.EventCallCandidatesViaMatrix, id, 1)[0].Payload.(signaling.CandidatesPayload)
	if raw, _ := json.Marshal(cs.Candidates); string(raw) !=
		`[{"candidate":"candidate:1 1 udp 2122260223 192.0.2.9 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"new2"},{"candidate":""}]` {
		t.Errorf("bob's candidates reached alice as %s", raw)
	}
	ufrag, mid := "aliceuf", "0"
	if err := w.calls.Candidates(ctx, "alice", id, signaling.CandidatesRequest{Candidates: []signaling.Candidate{
		{Candidate: "candidate:2 1 udp 1 198.51.100.2 6000 typ host", SDPMid: &mid, UsernameFragment: &ufrag},
		{Candidate: "", SDPMid: &mid, UsernameFragment: &ufrag},
	}}); err != nil {
		t.Fatal(err)
	}
	evs, _ = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.candidates"))
	var cc struct {
		Candidates json.RawMessage `json:"candidates"`
	}
	for _, ev := range evs {
		if ev.Type == "m.call.candidates" && ev.Sender == svc {
			_ = json.Unmarshal(ev.Content, &cc)
		}
	}
	if string(cc.Candidates) != `[{"candidate":"candidate:2 1 udp 1 198.51.100.2 6000 typ host","sdpMid":"0","usernameFragment":"aliceuf"},{"candidate":"","sdpMid":"0","usernameFragment":"aliceuf"}]` {
		t.Errorf("alice's candidates reached bob as %s", cc.Candidates)
	}
}

// negotiateFromIcebox is a done func for callEvents: the service user sent
// an m.call.negotiate whose description is of type descType (an offer and
// the answer before it can reach bob in one sync).
func negotiateFromIcebox(svc, descType string) func([]roomEvent) bool {
	return func(evs []roomEvent) bool {
		for _, ev := range evs {
			var c struct{ Description struct{ Type string } }
			if ev.Type == "m.call.negotiate" && ev.Sender == svc && json.Unmarshal(ev.Content, &c) == nil && c.Description.Type == descType {
				return true
			}
		}
		return false
	}
}

// revoked reports whether the credentials of call id are revoked.
func revoked(t *testing.T, st *store.Store, id string) bool {
	t.Helper()
	revs, err := st.Revocations(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range revs {
		if r.CallID == signaling.CredentialID(id) {
			return true
		}
	}
	return false
}

// TestMatrixRejectLeaveKick: rejectLeaveKick on one homeserver.
func TestMatrixRejectLeaveKick(t *testing.T) {
	w := newInWorld(t, inOptions{})
	w.start(t, w.b)
	rejectLeaveKick(t, w)
}

// rejectLeaveKick: bob's m.call.reject ends alice's ringing call as
// rejected, revokes its credentials, and icebox selects the reject for
// bob's other devices; alice's decline of bob's call reaches him as
// m.call.reject, never a hangup; bob's leaving the room (on his
// homeserver) ends the call he is in and revokes its credentials; his
// being kicked (by the service user, on the room's homeserver) ends the
// call that rings for him.
func rejectLeaveKick(t *testing.T, w *inWorld) {
	t.Helper()
	ctx, room, svc := context.Background(), w.conv.RoomID, w.svc.id
	since := w.since

	c, err := w.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.id})
	if err != nil {
		t.Fatal(err)
	}
	_, since = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.invite"))
	w.send(t, w.bob, "m.call.reject", base(c.ID, "bobdev"))
	waitInbound(t, w.b, "m.call.reject", "ok", 1)
	if got, _ := w.call(t, c.ID); got.Status != signaling.StatusRejected || got.EndedBy != w.bob.id || !revoked(t, w.st, c.ID) {
		t.Errorf("call after bob's reject: %s by %s, credentials revoked %v", got.Status, got.EndedBy, revoked(t, w.st, c.ID))
	}
	if n := len(w.published(signaling.EventCallRejectedViaMatrix, c.ID)); n != 1 {
		t.Errorf("CallRejectedViaMatrix published %d times", n)
	}
	evs, since := w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.select_answer"))
	if sel := lastFrom(t, evs, svc, "m.call.select_answer"); sel["selected_party_id"] != "bobdev" || sel["call_id"] != c.ID {
		t.Errorf("select_answer after the reject: %v", sel)
	}

	// alice declines bob's call: Matrix gets m.call.reject, not a hangup.
	w.send(t, w.bob, "m.call.invite", invite("bob.declined", "bobdev", "1", 60000))
	w.waitPublished(t, signaling.EventCallInviteViaMatrix, "bob.declined", 1)
	if _, err := w.calls.Reject(ctx, "alice", "bob.declined", signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	evs, _ = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.reject"))
	if rej := lastFrom(t, evs, svc, "m.call.reject"); rej["call_id"] != "bob.declined" || rej["party_id"] != signaling.PartyIDFor("alice") {
		t.Errorf("alice's reject reached bob as %v", rej)
	}
	for _, ev := range evs {
		if ev.Type == "m.call.hangup" && ev.Sender == svc {
			t.Errorf("alice's reject also went out as a hangup: %s", ev.Content)
		}
	}

	// bob calls, alice answers, bob leaves the room.
	const leaves = "bob.leaves~1"
	w.bobCallsAliceAnswers(t, leaves)
	api(t, w.bob.base, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", w.bob.token, map[string]any{}, nil)
	waitFor(t, w.wait, "the call ended by bob's leave", func() bool {
		got, _ := w.call(t, leaves)
		return got.Status == signaling.StatusEnded
	}, w.b.logs.String)
	if got, _ := w.call(t, leaves); got.EndReason != signaling.ReasonUserHangup || got.EndedBy != w.bob.id {
		t.Errorf("call after bob left: %s by %s", got.EndReason, got.EndedBy)
	}
	// Published after the commit the store already shows: wait for it.
	if n := len(w.waitPublished(t, signaling.EventCallHangupViaMatrix, leaves, 1)); n != 1 {
		t.Errorf("CallHangupViaMatrix published %d times", n)
	}
	if !revoked(t, w.st, leaves) {
		t.Errorf("no revocation for %s (credential ID %s)", leaves, signaling.CredentialID(leaves))
	}

	// bob is invited back (over federation, if his homeserver is another)
	// and joins; alice calls him; he is kicked while it rings.
	api(t, w.svc.base, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", w.svc.token, map[string]any{"user_id": w.bob.id}, nil)
	waitFor(t, w.wait, "bob's invitation back", func() bool {
		_, ok := w.bob.sync(t, "", 0).Rooms.Invite[room]
		return ok
	})
	w.bob.join(t, room)
	rings, err := w.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: w.bob.id})
	if err != nil {
		t.Fatal(err)
	}
	api(t, w.svc.base, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/kick", w.svc.token, map[string]any{"user_id": w.bob.id, "reason": "test"}, nil)
	waitFor(t, w.wait, "the ringing call ended by bob's kick", func() bool {
		got, _ := w.call(t, rings.ID)
		return got.Status == signaling.StatusEnded
	}, w.b.logs.String)
	if got, _ := w.call(t, rings.ID); got.EndReason != signaling.ReasonUserHangup || got.EndedBy != w.bob.id {
		t.Errorf("call after bob was kicked: %s by %s", got.EndReason, got.EndedBy)
	}

	// Invited back once more, bob joins; alice calls anyone in the room
	// and bob, its only other member, leaves while it rings: the call
	// ends as his hangup (it rang on until it expired before). Across
	// homeservers the kick reaches bob's homeserver over federation: an
	// invitation that arrives before it is refused there as for a member
	// already joined, and never shows in bob's sync.
	waitFor(t, w.wait, "bob's homeserver to know of the kick", func() bool {
		_, joined := w.bob.sync(t, "", 0).Rooms.Join[room]
		return !joined
	})
	api(t, w.svc.base, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", w.svc.token, map[string]any{"user_id": w.bob.id}, nil)
	waitFor(t, w.wait, "bob's second invitation back", func() bool {
		_, ok := w.bob.sync(t, "", 0).Rooms.Invite[room]
		return ok
	})
	w.bob.join(t, room)
	waitFor(t, w.wait, "bob a participant again", func() bool {
		conv, err := w.calls.Conversation(ctx, inConv)
		return err == nil && conv.HasParticipant(w.bob.id)
	}, w.b.logs.String)
	anyone, err := w.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP})
	if err != nil {
		t.Fatal(err)
	}
	api(t, w.bob.base, http.MethodPost, "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", w.bob.token, map[string]any{}, nil)
	waitFor(t, w.wait, "the call for anyone ended by bob's leave", func() bool {
		got, _ := w.call(t, anyone.ID)
		return got.Status == signaling.StatusEnded
	}, w.b.logs.String)
	if got, _ := w.call(t, anyone.ID); got.EndReason != signaling.ReasonUserHangup || got.EndedBy != w.bob.id || !revoked(t, w.st, anyone.ID) {
		t.Errorf("call for anyone after bob left: %s by %s, credentials revoked %v", got.EndReason, got.EndedBy, revoked(t, w.st, anyone.ID))
	}
}

// TestMatrixAnsweredElsewhere: answeredElsewhere on one homeserver, alice
// calling anyone in the room.
func TestMatrixAnsweredElsewhere(t *testing.T) {
	w := newInWorld(t, inOptions{})
	w.start(t, w.b)
	answeredElsewhere(t, w, w.since, "")
}

// answeredElsewhere: both ways of "answered elsewhere". alice calls bob
// (invitee, or anyone in the room if it is empty), whose two devices ring:
// the first answer wins, icebox selects it (m.call.select_answer naming
// bobdev, so bobphone stops ringing) and bobphone's later answer is
// ignored; her hangup reaches him and revokes the call's credentials. Then
// bob calls, alice answers, and bob's client selects another party:
// alice's call ends with answered_elsewhere (CallHangupViaMatrix) and its
// credentials are revoked. since is bob's sync position to read from.
func answeredElsewhere(t *testing.T, w *inWorld, since, invitee string) {
	t.Helper()
	ctx, room, svc := context.Background(), w.conv.RoomID, w.svc.id

	c, err := w.calls.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: inConv, SDPOffer: offerSDP, Invitee: invitee})
	if err != nil {
		t.Fatal(err)
	}
	evs, since := w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.invite"))
	if got := lastFrom(t, evs, svc, "m.call.invite"); got["call_id"] != c.ID || invitee != "" && got["invitee"] != invitee {
		t.Fatalf("bob saw the invite %v; want call %s for %q", got, c.ID, invitee)
	}
	w.send(t, w.bob, "m.call.answer", with(base(c.ID, "bobdev"), "answer", map[string]any{"type": "answer", "sdp": answerSDP}))
	waitInbound(t, w.b, "m.call.answer", "ok", 1)
	w.send(t, w.bob, "m.call.answer", with(base(c.ID, "bobphone"), "answer", map[string]any{"type": "answer", "sdp": answerSDP}))
	waitInbound(t, w.b, "m.call.answer", "ignored", 1)
	evs, since = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.select_answer"))
	if sel := lastFrom(t, evs, svc, "m.call.select_answer"); sel["selected_party_id"] != "bobdev" || sel["call_id"] != c.ID {
		t.Errorf("select_answer = %v, want bobdev", sel)
	}
	if got, _ := w.call(t, c.ID); got.Status != signaling.StatusAnswered || got.Answerer != w.bob.id || got.AnswerPartyID != "bobdev" {
		t.Errorf("call = %s answered by %s/%s; want answered by %s/bobdev", got.Status, got.Answerer, got.AnswerPartyID, w.bob.id)
	}
	if _, err := w.calls.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	evs, _ = w.bob.callEvents(t, since, room, w.wait, fromIcebox(svc, "m.call.hangup"))
	if h := lastFrom(t, evs, svc, "m.call.hangup"); h["call_id"] != c.ID || h["reason"] != signaling.ReasonUserHangup {
		t.Errorf("bob saw the hangup %v", h)
	}
	if !revoked(t, w.st, c.ID) {
		t.Errorf("call %s's credentials not revoked after the hangup", c.ID)
	}

	const elsewhere = "bob.elsewhere"
	w.bobCallsAliceAnswers(t, elsewhere)
	w.send(t, w.bob, "m.call.select_answer", with(base(elsewhere, "bobdev"), "selected_party_id", "someoneelse"))
	if h := w.waitPublished(t, signaling.EventCallHangupViaMatrix, elsewhere, 1)[0].Payload.(signaling.EndPayload); h.Reason != signaling.ReasonAnsweredElsewhere ||
		h.Status != signaling.StatusEnded || !revoked(t, w.st, elsewhere) {
		t.Errorf("CallHangupViaMatrix = %+v; want ended, answered elsewhere, credentials revoked", h)
	}
}
