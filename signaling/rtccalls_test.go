package signaling_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
)

// rtcSteps records what the domain hands the gateway (the seam; the
// gateway itself runs against Dendrite and LiveKit in node's tests).
type rtcSteps struct {
	mu                      sync.Mutex
	placed, answered, ended []signaling.Call
	candidates              int
}

func (r *rtcSteps) Place(c signaling.Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.placed = append(r.placed, c)
}

func (r *rtcSteps) Answered(c signaling.Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.answered = append(r.answered, c)
}

func (r *rtcSteps) Candidates(_ signaling.Call, cs []signaling.Candidate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.candidates += len(cs)
}

func (r *rtcSteps) Ended(c signaling.Call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended = append(r.ended, c)
}

func (r *rtcSteps) counts() (placed, answered, ended, candidates int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.placed), len(r.answered), len(r.ended), r.candidates
}

const rtcRoom = "!rtc:example.org"

func rtcEnv(t *testing.T) (*env, *rtcSteps) {
	t.Helper()
	steps := &rtcSteps{}
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Outbound = &matrix.Encoder{}
		c.RoomIndex = c.Store.(signaling.RoomIndex)
		c.CallProtocol = signaling.CallProtocolMatrixRTC
		c.RTC = steps
	})
	if _, err := e.svc.PutConversationSpec(context.Background(), "rtc", signaling.ConversationSpec{
		Participants: []string{"alice", bob}, RoomID: rtcRoom}); err != nil {
		t.Fatal(err)
	}
	return e, steps
}

// outboxEmpty fails if any Matrix event was queued.
func outboxEmpty(t *testing.T, e *env) {
	t.Helper()
	out, err := e.st.PendingOutbox(context.Background(), 10)
	if err != nil || len(out) != 0 {
		t.Fatalf("outbox: %d entries (%v), want none: a bridged call sends no m.call.* event", len(out), err)
	}
}

// TestRTCOutboundCall: with the gateway configured, a call in a MatrixRTC
// conversation is placed (protocol matrixrtc, stored, in CallInvite) and
// handed to the gateway instead of being refused or sent as an
// m.call.invite; the gateway's answer (a member joined) answers it, the
// client's trickled candidates reach the gateway, and the client's hangup
// ends it (the gateway hears it, the credentials are revoked).
func TestRTCOutboundCall(t *testing.T) {
	ctx := context.Background()
	e, steps := rtcEnv(t)
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "rtc", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatalf("Initiate: %v", err)
	}
	if c.Protocol != signaling.CallProtocolMatrixRTC || c.Status != signaling.StatusRinging {
		t.Fatalf("call %+v", c)
	}
	if inv, ok := e.rec.last().Payload.(signaling.InvitePayload); !ok || inv.Protocol != "matrixrtc" {
		t.Fatalf("CallInvite %+v", e.rec.last().Payload)
	}
	if stored, err := e.st.Call(ctx, c.ID); err != nil || stored.Protocol != signaling.CallProtocolMatrixRTC {
		t.Fatalf("stored call %+v, %v", stored, err)
	}
	if p, _, _, _ := steps.counts(); p != 1 {
		t.Fatalf("placed %d calls through the gateway, want 1", p)
	}
	outboxEmpty(t, e)
	if err := e.svc.Candidates(ctx, "alice", c.ID, signaling.CandidatesRequest{Candidates: []signaling.Candidate{{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}}); err != nil {
		t.Fatal(err)
	}
	a, err := e.svc.AnswerFromRTC(ctx, c.ID, bob, "BOBDEVICE", "v=0 answer")
	if err != nil || a.Status != signaling.StatusAnswered || a.Answerer != bob || a.SDPAnswer != "v=0 answer" {
		t.Fatalf("AnswerFromRTC: %+v, %v", a, err)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallAnswerViaMatrix {
		t.Fatalf("event %s, want CallAnswerViaMatrix", ev.Type)
	}
	var te *signaling.TransitionError
	if err := e.svc.Negotiate(ctx, "alice", c.ID, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: "v=0 again"}}); !errors.As(err, &te) || te.Code != "not_supported" {
		t.Fatalf("Negotiate on a bridged call: %v, want not_supported", err)
	}
	if _, err := e.svc.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	outboxEmpty(t, e)
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("the ended call's credentials were not revoked")
	}
	if _, _, ended, cands := steps.counts(); ended != 1 || cands != 1 {
		t.Fatalf("gateway heard %d ends, %d candidates; want 1, 1", ended, cands)
	}
}

// TestRTCDeclineAndEnd: a decline from the MatrixRTC side rejects a
// ringing bridged call, a second end is call_ended; a failure of the
// gateway ends an answered call with its reason and no user.
func TestRTCDeclineAndEnd(t *testing.T) {
	ctx := context.Background()
	e, steps := rtcEnv(t)
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "rtc", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := e.svc.EndFromRTC(ctx, c.ID, bob, signaling.ReasonRejected, true)
	if err != nil || r.Status != signaling.StatusRejected || r.EndedBy != bob {
		t.Fatalf("decline: %+v, %v", r, err)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallRejectedViaMatrix {
		t.Fatalf("event %s", ev.Type)
	}
	var te *signaling.TransitionError
	if _, err := e.svc.EndFromRTC(ctx, c.ID, bob, signaling.ReasonUserHangup, false); !errors.As(err, &te) || te.Code != "call_ended" {
		t.Fatalf("second end: %v, want call_ended", err)
	}

	c2, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "rtc", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AnswerFromRTC(ctx, c2.ID, bob, "", "v=0 answer"); err != nil {
		t.Fatal(err)
	}
	f, err := e.svc.EndFromRTC(ctx, c2.ID, "", signaling.ReasonGatewayFailed, false)
	if err != nil || f.Status != signaling.StatusEnded || f.EndReason != signaling.ReasonGatewayFailed || f.EndedBy != "" {
		t.Fatalf("gateway failure: %+v, %v", f, err)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallHangup {
		t.Fatalf("event %s, want CallHangup", ev.Type)
	}
	if _, _, ended, _ := steps.counts(); ended != 2 {
		t.Fatalf("gateway heard %d ends, want 2", ended)
	}
	// A legacy call is not the gateway's to end.
	legacyProto := signaling.CallProtocolLegacy
	if _, err := e.svc.PutConversationSpec(ctx, "legacy", signaling.ConversationSpec{
		Participants: []string{"alice", bob}, RoomID: "!legacy:example.org", CallProtocol: &legacyProto}); err != nil {
		t.Fatal(err)
	}
	legacy, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "legacy", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.EndFromRTC(ctx, legacy.ID, "", signaling.ReasonGatewayFailed, false); !errors.Is(err, signaling.ErrInvalid) {
		t.Fatalf("EndFromRTC of a legacy call: %v, want ErrInvalid", err)
	}
}

// TestRTCInboundCall: a MatrixRTC ring becomes a ringing call of the
// room's conversation (CallInviteViaMatrix, protocol matrixrtc, the
// gateway's offer); the icebox client's answer goes to the gateway. A
// caller who is not a participant is refused, an expired ring is stale.
func TestRTCInboundCall(t *testing.T) {
	ctx := context.Background()
	e, steps := rtcEnv(t)
	in := signaling.RTCInvite{ID: "rtc-call-1", RoomID: rtcRoom, Sender: bob, DeviceID: "BOBDEVICE",
		NotificationEventID: "$ring", SDPOffer: "v=0 gateway offer", Lifetime: 30 * time.Second}
	c, err := e.svc.InviteFromRTC(ctx, in)
	if err != nil || c.Protocol != signaling.CallProtocolMatrixRTC || c.Initiator != bob || c.PartyID != "BOBDEVICE" || c.MatrixInviteEventID != "$ring" {
		t.Fatalf("InviteFromRTC: %+v, %v", c, err)
	}
	ev := e.rec.last()
	if inv, ok := ev.Payload.(signaling.InvitePayload); ev.Type != signaling.EventCallInviteViaMatrix || !ok || inv.Protocol != "matrixrtc" || inv.SDPOffer != in.SDPOffer {
		t.Fatalf("event %s %+v", ev.Type, ev.Payload)
	}
	if _, err := e.svc.Answer(ctx, "alice", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 client answer"}); err != nil {
		t.Fatal(err)
	}
	if _, answered, _, _ := steps.counts(); answered != 1 {
		t.Fatalf("gateway heard %d answers, want 1", answered)
	}
	outboxEmpty(t, e)

	stranger := in
	stranger.ID, stranger.Sender = "rtc-call-2", "@mallory:example.org"
	if _, err := e.svc.InviteFromRTC(ctx, stranger); !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("a stranger's ring: %v, want ErrForbidden", err)
	}
	stale := in
	stale.ID, stale.Lifetime = "rtc-call-3", time.Second
	if _, err := e.svc.InviteFromRTC(ctx, stale); !errors.Is(err, signaling.ErrStale) {
		t.Fatalf("a stale ring: %v, want ErrStale", err)
	}
}

// TestRTCCallsEndedAtStart: a bridged call a previous run left ringing or
// answered is ended when the service starts again (its leg lived in that
// process), with gateway_restarted and its credentials revoked; a legacy
// call, and a call this run bridged before Run looked, are left alone.
func TestRTCCallsEndedAtStart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "s"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	if err := st.PutConversation(ctx, signaling.Conversation{ID: "rtc", Participants: []string{"alice", bob}, RoomID: rtcRoom, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []signaling.Call{
		{ID: "bridged-ringing", Protocol: signaling.CallProtocolMatrixRTC, Status: signaling.StatusRinging},
		{ID: "bridged-answered", Protocol: signaling.CallProtocolMatrixRTC, Status: signaling.StatusAnswered, Answerer: bob, AnsweredAt: &now},
		{ID: "legacy-ringing", Status: signaling.StatusRinging},
	} {
		c.ConversationID, c.RoomID, c.Initiator, c.PartyID, c.SDPOffer, c.LifetimeMS, c.CreatedAt = "rtc", rtcRoom, "alice", "p", "v=0", 60_000, now
		if err := st.CreateCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder()
	svc, err := signaling.NewService(signaling.ServiceConfig{Store: st, Relay: rec, Publisher: rec, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	// Bridged by this run before Run looked (the API and the Matrix bridge
	// take calls as soon as they are up): not the previous run's.
	fresh := signaling.Call{ID: "bridged-this-run", Protocol: signaling.CallProtocolMatrixRTC, Status: signaling.StatusRinging,
		ConversationID: "rtc", RoomID: rtcRoom, Initiator: "alice", PartyID: "p", SDPOffer: "v=0", LifetimeMS: 60_000,
		CreatedAt: time.Now().UTC()}
	if err := st.CreateCall(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := st.Call(ctx, "bridged-ringing")
		b, _ := st.Call(ctx, "bridged-answered")
		if a.Status.Terminal() && b.Status.Terminal() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridged calls not ended at start: %s, %s", a.Status, b.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"bridged-ringing", "bridged-answered"} {
		c, _ := st.Call(ctx, id)
		if c.Status != signaling.StatusEnded || c.EndReason != signaling.ReasonGatewayRestarted || c.RevokedUntil == nil {
			t.Errorf("%s: %+v", id, c)
		}
		if _, ok := rec.revokedUntil(id); !ok {
			t.Errorf("%s: relay not told to revoke", id)
		}
	}
	if c, _ := st.Call(ctx, "legacy-ringing"); c.Status != signaling.StatusRinging {
		t.Errorf("legacy call: %s, want ringing", c.Status)
	}
	if c, _ := st.Call(ctx, fresh.ID); c.Status != signaling.StatusRinging {
		t.Errorf("a call bridged by this run before Run looked: %s (%s), want ringing", c.Status, c.EndReason)
	}
}

// TestRTCReasonsValid: every reason the gateway ends a call with passes
// the reason grammar (a reason with a digit was refused once, leaving the
// call ringing).
func TestRTCReasonsValid(t *testing.T) {
	ctx := context.Background()
	e, _ := rtcEnv(t)
	for _, reason := range []string{signaling.ReasonGatewayFailed, signaling.ReasonE2EEUnavailable, signaling.ReasonGatewayRestarted, signaling.ReasonBusy} {
		c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "rtc", SDPOffer: "v=0 offer"})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := e.svc.EndFromRTC(ctx, c.ID, "", reason, false); err != nil || got.EndReason != reason {
			t.Errorf("EndFromRTC(%s): %+v, %v", reason, got, err)
		}
	}
}
