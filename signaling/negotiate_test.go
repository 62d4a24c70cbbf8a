package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
)

// clock is a settable time for the service.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// count is how many events were published.
func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// newBridgedEnv is newMatrixEnv with a settable clock: the conversation mx
// = {alice (icebox), bob (Matrix)} has the room !room:example.org.
func newBridgedEnv(t *testing.T) (*env, *clock) {
	t.Helper()
	clk := &clock{now: time.Now().UTC()}
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Outbound = &matrix.Encoder{}
		c.RoomIndex = c.Store.(signaling.RoomIndex)
		c.Now = clk.Now
	})
	if _, err := e.svc.PutConversation(context.Background(), "mx", []string{"alice", bob}, "!room:example.org"); err != nil {
		t.Fatal(err)
	}
	return e, clk
}

func offer(sdp string) signaling.NegotiateRequest {
	return signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: sdp}}
}

func answer(sdp string) signaling.NegotiateRequest {
	return signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "answer", SDP: sdp}}
}

func desc(typ, sdp string) signaling.SessionDescription {
	return signaling.SessionDescription{Type: typ, SDP: sdp}
}

// outboxTypes lists the Matrix event types waiting in the outbox.
func (e *env) outboxTypes(t *testing.T) []string {
	t.Helper()
	out, err := e.st.PendingOutbox(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, o := range out {
		types = append(types, o.EventType)
	}
	return types
}

// lastOutbox is the content of the newest outbox entry.
func (e *env) lastOutbox(t *testing.T) (string, map[string]any) {
	t.Helper()
	out, err := e.st.PendingOutbox(context.Background(), 0)
	if err != nil || len(out) == 0 {
		t.Fatalf("outbox: %d entries, %v", len(out), err)
	}
	last := out[len(out)-1]
	var m map[string]any
	if err := json.Unmarshal(last.Content, &m); err != nil {
		t.Fatal(err)
	}
	return last.EventType, m
}

// TestNegotiateGlareBetweenIceboxClients: the rule is the same without
// Matrix. alice placed the call (impolite), bob answered (polite): bob's
// offer waits; alice's crossing offer wins; bob's offer crossing alice's
// is refused; answers only to the other party's pending offer.
func TestNegotiateGlareBetweenIceboxClients(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c := e.initiate(t)
	if err := e.svc.Negotiate(ctx, "alice", c.ID, offer("v=0 early")); err != nil {
		wantTransitionErr(t, err, "not_answered")
	} else {
		t.Fatal("a negotiate on a ringing call was accepted")
	}
	if _, err := e.svc.Answer(ctx, "bob", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 answer"}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		user  string
		req   signaling.NegotiateRequest
		code  string // "" = relayed
		party string // OfferParty after the step
	}{
		{"alice", answer("v=0"), "no_offer", ""},                                            // nothing to answer
		{"bob", offer("v=0 bob hold"), "", signaling.PartyIDFor("bob")},                     // bob's offer waits
		{"bob", answer("v=0"), "no_offer", signaling.PartyIDFor("bob")},                     // bob cannot answer his own
		{"alice", offer("v=0 alice"), "", signaling.PartyIDFor("alice")},                    // glare: the caller wins
		{"bob", offer("v=0 bob again"), "negotiation_glare", signaling.PartyIDFor("alice")}, // the callee yields
		{"bob", answer("v=0 bob answers"), "", ""},                                          // and answers the caller's offer
		{"bob", answer("v=0"), "no_offer", ""},                                              // once
		{"alice", offer("v=0 a1"), "", signaling.PartyIDFor("alice")},
		{"alice", offer("v=0 a2"), "", signaling.PartyIDFor("alice")}, // a newer offer replaces the pending one
		{"bob", answer("v=0"), "", ""},
	}
	for i, st := range steps {
		before := e.rec.count()
		err := e.svc.Negotiate(ctx, st.user, c.ID, st.req)
		switch {
		case st.code == "" && err != nil:
			t.Fatalf("step %d (%s %s): %v", i, st.user, st.req.Description.Type, err)
		case st.code != "":
			wantTransitionErr(t, err, st.code)
			if e.rec.count() != before {
				t.Fatalf("step %d: a refused negotiate published %s", i, e.rec.last().Type)
			}
		default:
			ev := e.rec.last()
			p, ok := ev.Payload.(signaling.NegotiatePayload)
			if ev.Type != signaling.EventCallNegotiate || !ok || p.Description != st.req.Description || p.ParticipantID != st.user {
				t.Fatalf("step %d: event %s %+v", i, ev.Type, ev.Payload)
			}
		}
		got, err := e.st.Call(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.OfferParty != st.party {
			t.Fatalf("step %d: pending offer of %q, want %q", i, got.OfferParty, st.party)
		}
	}

	// carol is in the conversation but not in the call.
	err := e.svc.Negotiate(ctx, "carol", c.ID, offer("v=0"))
	if !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("negotiate by a participant outside the call: %v", err)
	}
	// An ended call takes no negotiate.
	if _, err := e.svc.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
		t.Fatal(err)
	}
	wantTransitionErr(t, e.svc.Negotiate(ctx, "bob", c.ID, offer("v=0")), "call_ended")
}

// TestNegotiateBadInput: bad descriptions, lifetimes and metadata are
// ErrInvalid and change nothing.
func TestNegotiateBadInput(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c := e.initiate(t)
	if _, err := e.svc.Answer(ctx, "bob", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 answer"}); err != nil {
		t.Fatal(err)
	}
	bad := map[string]signaling.NegotiateRequest{
		"pranswer":            {Description: desc("pranswer", "v=0")},
		"no sdp":              {Description: desc("offer", "")},
		"sdp too large":       {Description: desc("offer", strings.Repeat("a", 64<<10+1))},
		"lifetime too short":  {Description: desc("offer", "v=0"), LifetimeMS: 10},
		"metadata an array":   {Description: desc("offer", "v=0"), Media: signaling.Media{StreamMetadata: json.RawMessage(`["a"]`)}},
		"metadata a string":   {Description: desc("offer", "v=0"), Media: signaling.Media{StreamMetadata: json.RawMessage(`"a"`)}},
		"stream not object":   {Description: desc("offer", "v=0"), Media: signaling.Media{StreamMetadata: json.RawMessage(`{"s":1}`)}},
		"unknown purpose":     {Description: desc("offer", "v=0"), Media: signaling.Media{StreamMetadata: json.RawMessage(`{"s":{"purpose":"x"}}`)}},
		"muted not a boolean": {Description: desc("offer", "v=0"), Media: signaling.Media{StreamMetadata: json.RawMessage(`{"s":{"purpose":"m.usermedia","audio_muted":1}}`)}},
		"capabilities array":  {Description: desc("offer", "v=0"), Media: signaling.Media{Capabilities: json.RawMessage(`[]`)}},
	}
	for name, req := range bad {
		if err := e.svc.Negotiate(ctx, "alice", c.ID, req); !errors.Is(err, signaling.ErrInvalid) {
			t.Errorf("%s: %v, want invalid", name, err)
		}
	}
	got, _ := e.st.Call(ctx, c.ID)
	if got.OfferParty != "" {
		t.Errorf("a refused negotiate left a pending offer of %q", got.OfferParty)
	}
	if _, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "v=0",
		Media: signaling.Media{StreamMetadata: json.RawMessage(`[1]`)}}); !errors.Is(err, signaling.ErrInvalid) {
		t.Errorf("initiate with metadata not an object: %v", err)
	}
	if calls, _ := e.st.Calls(ctx, signaling.CallFilter{ConversationID: "conv1"}); len(calls) != 1 {
		t.Errorf("a refused initiate stored a call: %d calls", len(calls))
	}
	if err := e.svc.MetadataChanged(ctx, "bob", c.ID, signaling.MetadataChangedRequest{}); !errors.Is(err, signaling.ErrInvalid) {
		t.Errorf("metadata_changed without metadata: %v", err)
	}
}

// TestNegotiateAcrossMatrix: an icebox client's offer goes out as
// m.call.negotiate and Matrix's answer comes back to the client; Matrix's
// offer reaches the client and its answer goes out as m.call.negotiate of
// type answer. Answers to no offer, the polite side's crossing offer and
// anything on an ended call are refused (the bridge counts them ignored)
// and publish nothing.
func TestNegotiateAcrossMatrix(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.AnswerFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "v=0 bob"); err != nil {
		t.Fatal(err)
	}

	// Matrix answers nothing yet: ignored.
	_, err = e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("answer", "v=0 stray"), 0)
	wantTransitionErr(t, err, "no_offer")

	// alice (the caller) offers: m.call.negotiate goes out.
	if err := e.svc.Negotiate(ctx, "alice", c.ID, offer("v=0 ice restart")); err != nil {
		t.Fatal(err)
	}
	typ, content := e.lastOutbox(t)
	if d, _ := content["description"].(map[string]any); typ != matrix.TypeNegotiate || d["type"] != "offer" || d["sdp"] != "v=0 ice restart" {
		t.Fatalf("outbox after alice's offer: %s %v", typ, content)
	}
	// bob (the callee, polite) crosses it with his own: refused.
	n := e.rec.count()
	_, err = e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("offer", "v=0 bob hold"), 60000)
	wantTransitionErr(t, err, "negotiation_glare")
	if e.rec.count() != n {
		t.Fatal("a refused negotiate from Matrix was published")
	}
	// Another party of bob's is not the chosen one.
	_, err = e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobphone"), desc("answer", "v=0"), 0)
	if !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("negotiate from a party not chosen: %v", err)
	}
	// bob answers alice's offer: it reaches alice's clients, with its metadata.
	md := json.RawMessage(`{"bobstream":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true}}`)
	ev := mxEvent(c.ID, "bobdev")
	ev.Media.StreamMetadata = md
	if _, err := e.svc.NegotiateFromMatrix(ctx, ev, desc("answer", "v=0 bob answers"), 0); err != nil {
		t.Fatal(err)
	}
	got := e.rec.last()
	p, _ := got.Payload.(signaling.NegotiatePayload)
	if got.Type != signaling.EventCallNegotiateViaMatrix || p.Description.SDP != "v=0 bob answers" || string(p.StreamMetadata) != string(md) {
		t.Fatalf("event for Matrix's answer: %s %+v", got.Type, got.Payload)
	}
	if typ, _ := e.lastOutbox(t); typ != matrix.TypeNegotiate {
		t.Fatalf("Matrix's answer was echoed to the outbox: %s", typ)
	}

	// bob offers (hold): alice's clients get it; alice's answer goes to Matrix.
	if _, err := e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("offer", "v=0 a=sendonly"), 30000); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.last(); got.Type != signaling.EventCallNegotiateViaMatrix {
		t.Fatalf("event for Matrix's offer: %s", got.Type)
	}
	if err := e.svc.Negotiate(ctx, "alice", c.ID, answer("v=0 a=recvonly")); err != nil {
		t.Fatal(err)
	}
	typ, content = e.lastOutbox(t)
	if d, _ := content["description"].(map[string]any); typ != matrix.TypeNegotiate || d["type"] != "answer" || d["sdp"] != "v=0 a=recvonly" {
		t.Fatalf("outbox after alice's answer: %s %v", typ, content)
	}

	// Ended: ignored from Matrix, 409 over the API.
	if _, err := e.svc.HangupFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "user_hangup", false); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("offer", "v=0"), 0)
	wantTransitionErr(t, err, "call_ended")
	wantTransitionErr(t, e.svc.Negotiate(ctx, "alice", c.ID, offer("v=0")), "call_ended")
}

// TestNegotiateGlareMatrixCaller: bob placed the call from Matrix, so bob
// is impolite: his offer crossing alice's wins and reaches her clients;
// hers crossing his is refused. A pending offer whose lifetime passed no
// longer counts.
func TestNegotiateGlareMatrixCaller(t *testing.T) {
	e, clk := newBridgedEnv(t)
	ctx := context.Background()
	c, err := e.svc.InviteFromMatrix(ctx, signaling.MatrixInvite{MatrixEvent: mxEvent("bobcall", "bobdev"), SDPOffer: "v=0", LifetimeMS: 60000})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Answer(ctx, "alice", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 alice"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.Negotiate(ctx, "alice", c.ID, offer("v=0 alice screen")); err != nil {
		t.Fatal(err)
	}
	// bob's offer crosses alice's: the caller wins.
	if _, err := e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("offer", "v=0 bob restart"), 0); err != nil {
		t.Fatalf("the caller's crossing offer: %v", err)
	}
	if got := e.rec.last(); got.Type != signaling.EventCallNegotiateViaMatrix {
		t.Fatalf("event = %s", got.Type)
	}
	// alice offers again before answering: she yields.
	wantTransitionErr(t, e.svc.Negotiate(ctx, "alice", c.ID, offer("v=0 again")), "negotiation_glare")
	// Past the offer's lifetime (60 s by default) it no longer blocks her.
	clk.add(61 * time.Second)
	if err := e.svc.Negotiate(ctx, "alice", c.ID, offer("v=0 later")); err != nil {
		t.Fatalf("offer after the pending one expired: %v", err)
	}
	// bob's late answer to alice's offer is relayed; a second is not.
	if _, err := e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("answer", "v=0"), 0); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.NegotiateFromMatrix(ctx, mxEvent(c.ID, "bobdev"), desc("answer", "v=0"), 0)
	wantTransitionErr(t, err, "no_offer")
}

// TestStreamMetadataBothWays: an icebox client's metadata change goes out
// as m.call.sdp_stream_metadata_changed; Matrix's reaches the clients
// unchanged; only from the call's parties.
func TestStreamMetadataBothWays(t *testing.T) {
	e, _ := newBridgedEnv(t)
	ctx := context.Background()
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "mx", SDPOffer: "v=0 offer",
		Media: signaling.Media{StreamMetadata: json.RawMessage(`{"a":{"purpose":"m.usermedia"}}`), Capabilities: json.RawMessage(`{"m.call.dtmf":true}`)}})
	if err != nil {
		t.Fatal(err)
	}
	typ, content := e.lastOutbox(t)
	if typ != matrix.TypeInvite || content["capabilities"] == nil || content["sdp_stream_metadata"] == nil {
		t.Fatalf("invite = %s %v", typ, content)
	}
	if inv, _ := e.rec.last().Payload.(signaling.InvitePayload); string(inv.Capabilities) != `{"m.call.dtmf":true}` {
		t.Fatalf("CallInvite capabilities = %s", inv.Capabilities)
	}
	if _, err := e.svc.AnswerFromMatrix(ctx, mxEvent(c.ID, "bobdev"), "v=0 bob"); err != nil {
		t.Fatal(err)
	}
	md := json.RawMessage(`{"a":{"purpose":"m.usermedia","audio_muted":true,"video_muted":false}}`)
	if err := e.svc.MetadataChanged(ctx, "alice", c.ID, signaling.MetadataChangedRequest{SDPStreamMetadata: md}); err != nil {
		t.Fatal(err)
	}
	typ, content = e.lastOutbox(t)
	if typ != matrix.TypeStreamMetadataChanged || content["sdp_stream_metadata"] == nil {
		t.Fatalf("outbox = %s %v", typ, content)
	}
	if got := e.rec.last(); got.Type != signaling.EventCallStreamMetadataChanged {
		t.Fatalf("event = %s", got.Type)
	}
	theirs := json.RawMessage(`{"b":{"purpose":"m.screenshare","audio_muted":false,"video_muted":false,"extra":"kept"}}`)
	if err := e.svc.StreamMetadataFromMatrix(ctx, mxEvent(c.ID, "bobdev"), theirs); err != nil {
		t.Fatal(err)
	}
	got := e.rec.last()
	if p, _ := got.Payload.(signaling.StreamMetadataPayload); got.Type != signaling.EventCallStreamMetadataChangedViaMatrix || string(p.SDPStreamMetadata) != string(theirs) {
		t.Fatalf("event = %s %+v", got.Type, got.Payload)
	}
	if err := e.svc.StreamMetadataFromMatrix(ctx, mxEvent(c.ID, "bobphone"), theirs); !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("metadata from a party not chosen: %v", err)
	}
	if err := e.svc.StreamMetadataFromMatrix(ctx, mxEvent(c.ID, "bobdev"), json.RawMessage(`"muted"`)); !errors.Is(err, signaling.ErrInvalid) {
		t.Fatalf("metadata not an object: %v", err)
	}
}
