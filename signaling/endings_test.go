package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
)

// TestRejectFromMatrix: bob's m.call.reject ends alice's ringing call as
// rejected, revokes its credentials, reaches alice's clients as
// CallRejectedViaMatrix, and icebox selects the reject
// (m.call.select_answer naming bob's party) so that bob's other devices
// stop ringing.
func TestRejectFromMatrix(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.HangupFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "", true)
	if err != nil || got.Status != signaling.StatusRejected || got.EndReason != signaling.ReasonRejected {
		t.Fatalf("reject from Matrix = %+v, %v", got, err)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallRejectedViaMatrix {
		t.Fatalf("event = %s", ev.Type)
	}
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("the rejected call's credentials were not revoked")
	}
	typ, content := e.lastOutbox(t)
	if typ != matrix.TypeSelectAnswer || content["selected_party_id"] != "bobdev" || content["party_id"] != c.PartyID {
		t.Fatalf("outbox after the reject: %s %v", typ, content)
	}
	// icebox's own reject goes out as m.call.reject, not a hangup.
	theirs, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent("bobcall", "bobdev"), SDPOffer: "v=0", LifetimeMS: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Reject(ctx, "alice", theirs.ID, signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	if typ, _ := e.lastOutbox(t); typ != matrix.TypeReject {
		t.Fatalf("alice's reject went out as %s", typ)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallRejected {
		t.Fatalf("event of alice's reject = %s", ev.Type)
	}
}

// TestMemberLeftEndsTheirCalls: when bob leaves the room (or is kicked),
// the calls he placed, answered, or that ring for him by name end with
// user_hangup, ended by him, credentials revoked, CallHangupViaMatrix to
// the clients, and nothing sent to Matrix.
func TestMemberLeftEndsTheirCalls(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	answered, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent("bobcall.1~x", "bobdev"), SDPOffer: "v=0", LifetimeMS: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Answer(ctx, "alice", answered.ID, signaling.AnswerRequest{SDPAnswer: "v=0"}); err != nil {
		t.Fatal(err)
	}
	ringing, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0", Invitee: bob})
	if err != nil {
		t.Fatal(err)
	}
	outBefore := len(e.outboxTypes(t))
	ended, err := e.svc.MemberLeft(ctx, "!room:example.org", bob)
	if err != nil || len(ended) != 2 {
		t.Fatalf("MemberLeft = %d calls, %v; want 2", len(ended), err)
	}
	for _, id := range []string{answered.ID, ringing.ID} {
		c, err := e.st.Call(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != signaling.StatusEnded || c.EndReason != signaling.ReasonUserHangup || c.EndedBy != bob {
			t.Errorf("call %s after bob left: %s %s by %s", id, c.Status, c.EndReason, c.EndedBy)
		}
		if _, ok := e.rec.revokedUntil(signaling.CredentialID(id)); !ok {
			t.Errorf("call %s: credentials not revoked", id)
		}
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallHangupViaMatrix {
		t.Errorf("event = %s", ev.Type)
	}
	if n := len(e.outboxTypes(t)); n != outBefore {
		t.Errorf("leaving sent %d Matrix events", n-outBefore)
	}
	if again, err := e.svc.MemberLeft(ctx, "!room:example.org", bob); err != nil || len(again) != 0 {
		t.Errorf("MemberLeft again = %d, %v; want none", len(again), err)
	}
}

// TestMemberLeftEndsCallsForAnyone: alice's ringing call that invites
// nobody by name ends when bob, the room's only other member, leaves
// (user_hangup, ended by him, credentials revoked, CallHangupViaMatrix) —
// it rang on until it expired before; one in a room where carol could
// still answer keeps ringing. The conversation may still list bob: with
// nobody left, the room is not mapped again.
func TestMemberLeftEndsCallsForAnyone(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	if _, err := e.svc.PutConversation(ctx, "mx3", []string{"alice", "carol", bob}, "!three:example.org"); err != nil {
		t.Fatal(err)
	}
	anyone, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0"})
	if err != nil {
		t.Fatal(err)
	}
	stays, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx3", SDPOffer: "v=0"})
	if err != nil {
		t.Fatal(err)
	}
	outBefore := len(e.outboxTypes(t))
	ended, err := e.svc.MemberLeft(ctx, "!room:example.org", bob)
	if err != nil || len(ended) != 1 || ended[0].ID != anyone.ID {
		t.Fatalf("MemberLeft = %d calls, %v; want %s", len(ended), err, anyone.ID)
	}
	c, err := e.st.Call(ctx, anyone.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != signaling.StatusEnded || c.EndReason != signaling.ReasonUserHangup || c.EndedBy != bob {
		t.Errorf("call after bob left: %s %s by %s", c.Status, c.EndReason, c.EndedBy)
	}
	if _, ok := e.rec.revokedUntil(signaling.CredentialID(anyone.ID)); !ok {
		t.Error("credentials not revoked")
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallHangupViaMatrix || ev.CallID != anyone.ID {
		t.Errorf("event = %s for %s", ev.Type, ev.CallID)
	}
	if n := len(e.outboxTypes(t)); n != outBefore {
		t.Errorf("leaving sent %d Matrix events", n-outBefore)
	}
	if got, err := e.svc.MemberLeft(ctx, "!three:example.org", bob); err != nil || len(got) != 0 {
		t.Fatalf("MemberLeft where carol stays = %d calls, %v; want none", len(got), err)
	}
	if c, err := e.st.Call(ctx, stays.ID); err != nil || c.Status != signaling.StatusRinging {
		t.Errorf("call carol may answer: %s, %v; want ringing", c.Status, err)
	}
}

// TestMatrixOpaqueIDs: call_id and party_id take the spec's grammar, 1-255
// of [0-9a-zA-Z._~-]; such a call is read, answered and revoked like any
// (its TURN credentials carry a hash of its ID); anything else is invalid.
func TestMatrixOpaqueIDs(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	long := strings.Repeat("aZ09._~-", 32)[:255]
	c, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent(long, long), SDPOffer: "v=0", LifetimeMS: 60000})
	if err != nil {
		t.Fatalf("invite with a 255-character call_id and party_id: %v", err)
	}
	if got, err := e.svc.Get(ctx, "alice", long); err != nil || got.ID != long {
		t.Fatalf("Get = %q, %v", got.ID, err)
	}
	if _, err := e.svc.Answer(ctx, "alice", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.HangupFromMatrix(ctx, mxEvent(long, long), "", false); err != nil {
		t.Fatal(err)
	}
	cred := signaling.CredentialID(long)
	if _, ok := e.rec.revokedUntil(cred); !ok || !strings.HasPrefix(cred, "h_") || len(cred) != 42 {
		t.Fatalf("revoked under %q (%v)", cred, ok)
	}
	revs, err := e.st.Revocations(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range revs {
		found = found || r.CallID == cred
	}
	if !found {
		t.Fatalf("stored revocations %+v lack %s", revs, cred)
	}
	for _, bad := range []string{strings.Repeat("a", 256), "a/b", "a b", "ä", ""} {
		_, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent(bad, "bobdev"), SDPOffer: "v=0", LifetimeMS: 60000})
		if !errors.Is(err, signaling.ErrInvalid) {
			t.Errorf("call_id %q: %v, want invalid", bad, err)
		}
	}
	if _, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent("okcall", "bad party"), SDPOffer: "v=0", LifetimeMS: 60000}); !errors.Is(err, signaling.ErrInvalid) {
		t.Errorf("party_id with a space: %v", err)
	}
	// IDs that fit the credential grammar are their own; "h_" ones are hashed too.
	for id, same := range map[string]bool{"0b9c6f1e-2a3d-4c5b-8e7f-1234567890ab": true, "h_x": false, "a.b": false} {
		if got := signaling.CredentialID(id); (got == id) != same {
			t.Errorf("CredentialID(%q) = %q", id, got)
		}
	}
}

// TestMatrixMediaCarried: an invite's and an answer's metadata and
// capabilities from Matrix reach the clients unchanged and are kept as the
// latest of their side; metadata that is not an object refuses the event
// and creates nothing.
func TestMatrixMediaCarried(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	ev := mxEvent("bobcall", "bobdev")
	ev.Media = signaling.Media{StreamMetadata: json.RawMessage(`{"s":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true}}`),
		Capabilities: json.RawMessage(`{"m.call.transferee":true,"m.call.dtmf":false}`)}
	if _, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: ev, SDPOffer: "v=0", LifetimeMS: 60000}); err != nil {
		t.Fatal(err)
	}
	p, _ := e.rec.last().Payload.(signaling.InvitePayload)
	if string(p.StreamMetadata) != string(ev.Media.StreamMetadata) || string(p.Capabilities) != string(ev.Media.Capabilities) {
		t.Fatalf("CallInviteViaMatrix media = %s %s", p.StreamMetadata, p.Capabilities)
	}
	// Kept as the caller's latest; alice's answer's as the answerer's; bob's
	// negotiate and metadata change replace his (capabilities stay); a
	// change from a party not chosen is refused and changes nothing.
	if c, _ := e.st.Call(ctx, "bobcall"); string(c.CallerMedia.StreamMetadata) != string(ev.Media.StreamMetadata) ||
		string(c.CallerMedia.Capabilities) != string(ev.Media.Capabilities) {
		t.Fatalf("stored caller media = %s %s", c.CallerMedia.StreamMetadata, c.CallerMedia.Capabilities)
	}
	amd := json.RawMessage(`{"a":{"purpose":"m.usermedia"}}`)
	if _, err := e.svc.Answer(ctx, "alice", "bobcall", signaling.AnswerRequest{SDPAnswer: "v=0", Media: signaling.Media{StreamMetadata: amd}}); err != nil {
		t.Fatal(err)
	}
	held := mxEvent("bobcall", "bobdev")
	held.Media.StreamMetadata = json.RawMessage(`{"s":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}`)
	if _, err := e.svc.NegotiateFromMatrix(ctx, held, desc("offer", "v=0 hold"), 0); err != nil {
		t.Fatal(err)
	}
	c, _ := e.st.Call(ctx, "bobcall")
	if string(c.CallerMedia.StreamMetadata) != string(held.Media.StreamMetadata) || string(c.CallerMedia.Capabilities) != string(ev.Media.Capabilities) ||
		string(c.AnswererMedia.StreamMetadata) != string(amd) {
		t.Fatalf("after bob's negotiate: caller %s %s, answerer %s", c.CallerMedia.StreamMetadata, c.CallerMedia.Capabilities, c.AnswererMedia.StreamMetadata)
	}
	unmuted := json.RawMessage(`{"s":{"purpose":"m.usermedia","audio_muted":false}}`)
	if err := e.svc.StreamMetadataFromMatrix(ctx, mxEvent("bobcall", "bobdev"), unmuted); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.StreamMetadataFromMatrix(ctx, mxEvent("bobcall", "bobphone"), amd); err == nil {
		t.Fatal("a metadata change from a party not chosen was taken")
	}
	if c, _ := e.st.Call(ctx, "bobcall"); string(c.CallerMedia.StreamMetadata) != string(unmuted) || string(c.AnswererMedia.StreamMetadata) != string(amd) {
		t.Fatalf("after bob's metadata change: caller %s, answerer %s", c.CallerMedia.StreamMetadata, c.AnswererMedia.StreamMetadata)
	}
	bad := mxEvent("bobcall2", "bobdev")
	bad.Media.StreamMetadata = json.RawMessage(`[]`)
	if _, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: bad, SDPOffer: "v=0", LifetimeMS: 60000}); !errors.Is(err, signaling.ErrInvalid) {
		t.Fatalf("metadata not an object: %v", err)
	}
	if _, err := e.st.Call(ctx, "bobcall2"); !errors.Is(err, signaling.ErrNotFound) {
		t.Fatalf("a refused invite was stored: %v", err)
	}
}
