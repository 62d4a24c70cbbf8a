package signaling_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
)

const bob = "@bob:example.org"

func newMatrixEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Outbound = &matrix.Encoder{}
		c.RoomIndex = c.Store.(signaling.RoomIndex) // the store is the room index
	})
	if _, err := e.svc.PutConversation(context.Background(), "mx", []string{"alice", bob}, "!room:example.org"); err != nil {
		t.Fatal(err)
	}
	return e
}

func mxEvent(callID, party string) signaling.MatrixEvent {
	return signaling.MatrixEvent{RoomID: "!room:example.org", Sender: bob, EventID: "$" + callID + party, CallID: callID, PartyID: party}
}

func TestInviteFromMatrix(t *testing.T) {
	e := newMatrixEnv(t)
	ctx := context.Background()
	in := signaling.MatrixInvite{MatrixEvent: mxEvent("bobcall1", "bobdev"), SDPOffer: "v=0 bob", LifetimeMS: 60000, AgeMS: 500}
	c, err := e.svc.InviteFromMatrix(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != signaling.StatusRinging || c.Initiator != bob || c.LifetimeMS != 59500 || c.ConversationID != "mx" {
		t.Fatalf("call from Matrix = %+v", c)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallInviteViaMatrix {
		t.Fatalf("event = %s", ev.Type)
	}
	if out, err := e.st.PendingOutbox(ctx, 0); err != nil || len(out) != 0 {
		t.Fatalf("an inbound invite was echoed to the outbox: %+v, %v", out, err)
	}
	if _, err := e.svc.InviteFromMatrix(ctx, in); !errors.Is(err, signaling.ErrConflict) {
		t.Fatalf("duplicate invite: %v, want conflict", err)
	}
	stale := signaling.MatrixInvite{MatrixEvent: mxEvent("bobcall2", "bobdev"), SDPOffer: "v=0", LifetimeMS: 60000, AgeMS: 58000}
	if _, err := e.svc.InviteFromMatrix(ctx, stale); !errors.Is(err, signaling.ErrStale) {
		t.Fatalf("stale invite: %v, want stale", err)
	}
	outsider := mxEvent("bobcall3", "x")
	outsider.Sender = "@mallory:example.org"
	if _, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: outsider, SDPOffer: "v=0", LifetimeMS: 60000}); !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("invite from a non-participant: %v, want forbidden", err)
	}
	other := mxEvent("bobcall4", "x")
	other.RoomID = "!unknown:example.org"
	if _, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: other, SDPOffer: "v=0", LifetimeMS: 60000}); !errors.Is(err, signaling.ErrNotFound) {
		t.Fatalf("invite in an unmapped room: %v, want not found", err)
	}

	// alice answers locally: the answer goes out to Matrix.
	if _, err := e.svc.Answer(ctx, "alice", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 alice"}); err != nil {
		t.Fatal(err)
	}
	out, err := e.st.PendingOutbox(ctx, 0)
	if err != nil || len(out) != 1 || out[0].EventType != matrix.TypeAnswer {
		t.Fatalf("outbox after alice's answer = %+v, %v", out, err)
	}
	// bob selects another device's answer: the call ends here.
	got, err := e.svc.SelectAnswerFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "someone-else")
	if err != nil || got.Status != signaling.StatusEnded || got.EndReason != "answered_elsewhere" {
		t.Fatalf("select_answer of another party = %+v, %v", got, err)
	}
}

func TestAnswerFromMatrixSelectsIt(t *testing.T) {
	e := newMatrixEnv(t)
	ctx := context.Background()
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0 alice", Invitee: bob})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.AnswerFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "v=0 bob")
	if err != nil || got.Status != signaling.StatusAnswered || got.Answerer != bob || got.AnswerPartyID != "bobdev" {
		t.Fatalf("answer from Matrix = %+v, %v", got, err)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallAnswerViaMatrix {
		t.Fatalf("event = %s", ev.Type)
	}
	out, err := e.st.PendingOutbox(ctx, 0)
	if err != nil || len(out) != 2 || out[0].EventType != matrix.TypeInvite || out[1].EventType != matrix.TypeSelectAnswer {
		t.Fatalf("outbox = %+v, %v; want the invite then select_answer", out, err)
	}
	// A second answer loses; candidates from the chosen party pass, others' do not.
	if _, err := e.svc.AnswerFromMatrix(ctx, mxEvent(c.ID, "bobphone"), "v=0"); err == nil {
		t.Fatal("a second answer was accepted")
	}
	cs := []signaling.Candidate{{Candidate: "candidate:1"}}
	if err := e.svc.CandidatesFromMatrix(ctx, mxEvent(c.ID, "bobdev"), cs); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.CandidatesFromMatrix(ctx, mxEvent(c.ID, "bobphone"), cs); !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("candidates from a non-chosen party: %v", err)
	}
	got, err = e.svc.HangupFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "", false)
	if err != nil || got.Status != signaling.StatusEnded || got.EndReason != signaling.ReasonUserHangup {
		t.Fatalf("hangup from Matrix = %+v, %v", got, err)
	}
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("a call ended from Matrix kept its TURN credentials")
	}
	out, _ = e.st.PendingOutbox(ctx, 0)
	if len(out) != 2 {
		t.Fatalf("the Matrix hangup was echoed: %+v", out)
	}
}

// TestMatrixEventsStayInTheirRoom: a Matrix member of two rooms cannot
// reach a call of one room with events sent in the other (a ringing call
// with no invitee lets any member of its own room take part).
func TestMatrixEventsStayInTheirRoom(t *testing.T) {
	e := newMatrixEnv(t)
	ctx := context.Background()
	if _, err := e.svc.PutConversation(ctx, "other", []string{"carol", bob}, "!other:example.org"); err != nil {
		t.Fatal(err)
	}
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0 alice"})
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := mxEvent(c.ID, "bobdev")
	elsewhere.RoomID = "!other:example.org"
	published := e.rec.count()
	if err := e.svc.CandidatesFromMatrix(ctx, elsewhere, []signaling.Candidate{{Candidate: "candidate:1"}}); !errors.Is(err, signaling.ErrForbidden) {
		t.Errorf("candidates sent in another room: %v, want forbidden", err)
	}
	if _, err := e.svc.SelectAnswerFromMatrix(ctx, elsewhere, "someone"); !errors.Is(err, signaling.ErrForbidden) {
		t.Errorf("select_answer sent in another room: %v, want forbidden", err)
	}
	if _, err := e.svc.AnswerFromMatrix(ctx, elsewhere, "v=0 bob"); !errors.Is(err, signaling.ErrForbidden) {
		t.Errorf("answer sent in another room: %v, want forbidden", err)
	}
	if n := e.rec.count(); n != published {
		t.Errorf("%d events published for events from another room", n-published)
	}
	if got, err := e.svc.Get(ctx, "alice", c.ID); err != nil || got.Status != signaling.StatusRinging {
		t.Errorf("the call after events from another room: %+v, %v", got, err)
	}
}

func TestGlareKeepsTheLesserCallID(t *testing.T) {
	ctx := context.Background()
	// alice rings bob with an ID that sorts after bob's: bob's call wins.
	seq := []string{"zz-alice-call", "aa-alice-call"}
	e2 := newMatrixEnvWithIDs(t, seq)
	ours, err := e2.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0 a", Invitee: bob})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := e2.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent("mm-bob-call", "bobdev"), SDPOffer: "v=0 b", LifetimeMS: 60000})
	if err != nil || theirs.Status != signaling.StatusRinging {
		t.Fatalf("bob's crossing invite with the lesser ID: %+v, %v", theirs, err)
	}
	if got, _ := e2.svc.Get(ctx, "alice", ours.ID); got.Status != signaling.StatusEnded || got.EndReason != "replaced" {
		t.Fatalf("alice's losing call = %+v", got)
	}
	// Now alice's call sorts first: bob's crossing invite is refused.
	ours, err = e2.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0 a", Invitee: bob})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2.svc.HangupFromMatrix(ctx, mxEvent(theirs.ID, "bobdev"), "", false); err != nil {
		t.Fatal(err)
	}
	_, err = e2.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent("mn-bob-call", "bobdev"), SDPOffer: "v=0 b", LifetimeMS: 60000})
	if !errors.Is(err, signaling.ErrGlare) {
		t.Fatalf("bob's crossing invite with the greater ID: %v, want glare", err)
	}
	if got, _ := e2.svc.Get(ctx, "alice", ours.ID); got.Status != signaling.StatusRinging {
		t.Fatalf("alice's winning call = %+v", got)
	}
}

func newMatrixEnvWithIDs(t *testing.T, ids []string) *env {
	t.Helper()
	next := 0
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Outbound = &matrix.Encoder{}
		c.RoomIndex = c.Store.(signaling.RoomIndex)
		c.NewID = func() string { id := ids[next%len(ids)]; next++; return id }
	})
	if _, err := e.svc.PutConversation(context.Background(), "mx", []string{"alice", bob}, "!room:example.org"); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestRoomJoinedMapsMembers(t *testing.T) {
	e := newMatrixEnv(t) // conversation "mx" = {alice, bob} in !room:example.org
	ctx := context.Background()
	// A new room: its joined members become the participants.
	conv, err := e.svc.RoomJoined(ctx, "!new:example.org", []string{bob, "@carol:example.org"})
	if err != nil || conv.RoomID != "!new:example.org" || len(conv.Participants) != 2 || !signaling.ValidID(conv.ID) {
		t.Fatalf("RoomJoined(new room) = %+v, %v", conv, err)
	}
	again, err := e.svc.RoomJoined(ctx, "!new:example.org", []string{bob})
	if err != nil || again.ID != conv.ID || len(again.Participants) != 1 {
		t.Fatalf("RoomJoined after carol left = %+v, %v", again, err)
	}
	// An admin-mapped room keeps its local participants.
	mx, err := e.svc.RoomJoined(ctx, "!room:example.org", []string{bob, "@dan:example.org"})
	if err != nil || mx.ID != "mx" || !mx.HasParticipant("alice") || !mx.HasParticipant("@dan:example.org") {
		t.Fatalf("RoomJoined(mapped room) = %+v, %v", mx, err)
	}
	// dan may now call into the conversation from Matrix.
	dan := mxEvent("dancall1", "dandev")
	dan.Sender = "@dan:example.org"
	if _, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: dan, SDPOffer: "v=0", LifetimeMS: 60000}); err != nil {
		t.Fatalf("invite from a member who joined: %v", err)
	}
}

// TestRoomJoinedKeepsConcurrentAdminUpdate: an admin adding a local user
// to a room's conversation while the room's members change loses nothing:
// whichever runs second sees the other's write.
func TestRoomJoinedKeepsConcurrentAdminUpdate(t *testing.T) {
	e := newMatrixEnv(t)
	ctx := context.Background()
	for i := range 30 {
		room := fmt.Sprintf("!race%d:example.org", i)
		first, err := e.svc.RoomJoined(ctx, room, []string{bob})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := e.svc.PutConversation(ctx, first.ID, []string{"alice", bob}, room); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := e.svc.RoomJoined(ctx, room, []string{bob, "@carol:example.org"}); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		conv, err := e.svc.Conversation(ctx, first.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !conv.HasParticipant("alice") {
			t.Fatalf("round %d: the admin's alice was lost: %+v", i, conv.Participants)
		}
	}
}
