package signaling_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// recorder collects what the service publishes and revokes.
type recorder struct {
	mu      sync.Mutex
	events  []signaling.Event
	revoked map[string]time.Time
	notify  chan struct{}
}

func newRecorder() *recorder {
	return &recorder{revoked: map[string]time.Time{}, notify: make(chan struct{}, 1000)}
}

func (r *recorder) Publish(ev signaling.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.notify <- struct{}{}
}

func (r *recorder) RevokeCall(id string, until time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.revoked[id] = until
	return 0
}

func (r *recorder) last() signaling.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		return signaling.Event{}
	}
	return r.events[len(r.events)-1]
}

func (r *recorder) revokedUntil(id string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.revoked[id]
	return t, ok
}

type env struct {
	svc *signaling.Service
	st  *store.Store
	rec *recorder
	now time.Time
}

func newEnv(t *testing.T, mutate func(*signaling.ServiceConfig)) *env {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	rec := newRecorder()
	cfg := signaling.ServiceConfig{
		Store: st, Relay: rec, Publisher: rec,
		CredentialTTL: time.Hour, InitiateRate: 100, InitiateBurst: 100,
		Logger: zerolog.Nop(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	svc, err := signaling.NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	e := &env{svc: svc, st: st, rec: rec}
	if _, err := svc.PutConversation(context.Background(), "conv1", []string{"alice", "bob", "carol"}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PutConversation(context.Background(), "conv2", []string{"dave", "erin"}, ""); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) initiate(t *testing.T) signaling.Call {
	t.Helper()
	c, err := e.svc.Initiate(context.Background(), "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "v=0 offer"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantTransitionErr(t *testing.T, err error, code string) {
	t.Helper()
	var te *signaling.TransitionError
	if !errors.As(err, &te) || te.Code != code {
		t.Fatalf("got %v, want a transition error %q", err, code)
	}
}

func TestCallLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c := e.initiate(t)
	if c.Status != signaling.StatusRinging || c.PartyID != signaling.PartyIDFor("alice") {
		t.Fatalf("initiated call = %+v", c)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallInvite || len(ev.Recipients) != 3 {
		t.Fatalf("event after initiate = %+v", ev)
	}

	c, err := e.svc.Answer(ctx, "bob", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 answer"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != signaling.StatusAnswered || c.Answerer != "bob" || c.AnsweredAt == nil {
		t.Fatalf("answered call = %+v", c)
	}
	// A second answer loses: first answer wins.
	_, err = e.svc.Answer(ctx, "carol", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 late"})
	wantTransitionErr(t, err, "already_answered")
	// Carol was not chosen: her candidates are refused.
	err = e.svc.Candidates(ctx, "carol", c.ID, signaling.CandidatesRequest{Candidates: []signaling.Candidate{{Candidate: "candidate:1"}}})
	if !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("candidates from a non-chosen party: %v", err)
	}
	if err := e.svc.Candidates(ctx, "bob", c.ID, signaling.CandidatesRequest{Candidates: []signaling.Candidate{{Candidate: "candidate:1"}, {Candidate: ""}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SelectAnswer(ctx, "alice", c.ID, signaling.SelectAnswerRequest{SelectedPartyID: signaling.PartyIDFor("bob")}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.SelectAnswer(ctx, "alice", c.ID, signaling.SelectAnswerRequest{SelectedPartyID: signaling.PartyIDFor("carol")})
	wantTransitionErr(t, err, "answer_already_selected")
	if err := e.svc.Negotiate(ctx, "bob", c.ID, signaling.NegotiateRequest{Description: signaling.SessionDescription{Type: "offer", SDP: "v=0 re"}}); err != nil {
		t.Fatal(err)
	}

	c, err = e.svc.Hangup(ctx, "alice", c.ID, signaling.EndRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != signaling.StatusEnded || c.EndReason != signaling.ReasonUserHangup || c.RevokedUntil == nil {
		t.Fatalf("hung-up call = %+v", c)
	}
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("the relay was not told to revoke the call")
	}
	// The revocation was stored with the transition.
	revs, err := e.st.Revocations(ctx, time.Now())
	if err != nil || len(revs) != 1 || revs[0].CallID != c.ID {
		t.Fatalf("stored revocations = %v, %v", revs, err)
	}
	_, err = e.svc.Answer(ctx, "bob", c.ID, signaling.AnswerRequest{SDPAnswer: "v=0"})
	wantTransitionErr(t, err, "call_ended")
	_, err = e.svc.Hangup(ctx, "bob", c.ID, signaling.EndRequest{})
	wantTransitionErr(t, err, "call_ended")
}

func TestRejectAndPermissions(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c := e.initiate(t)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"outsider reads", func() error { _, err := e.svc.Get(ctx, "dave", c.ID); return err }(), signaling.ErrForbidden},
		{"outsider answers", func() error {
			_, err := e.svc.Answer(ctx, "dave", c.ID, signaling.AnswerRequest{SDPAnswer: "x"})
			return err
		}(), signaling.ErrForbidden},
		{"outsider initiates", func() error {
			_, err := e.svc.Initiate(ctx, "dave", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x"})
			return err
		}(), signaling.ErrForbidden},
		{"unknown call", func() error { _, err := e.svc.Get(ctx, "alice", "nope"); return err }(), signaling.ErrNotFound},
		{"unknown conversation", func() error {
			_, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "nope", SDPOffer: "x"})
			return err
		}(), signaling.ErrNotFound},
		{"empty offer", func() error {
			_, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1"})
			return err
		}(), signaling.ErrInvalid},
		{"invitee outside", func() error {
			_, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x", Invitee: "dave"})
			return err
		}(), signaling.ErrInvalid},
		{"caller rejects own call", func() error { _, err := e.svc.Reject(ctx, "alice", c.ID, signaling.EndRequest{}); return err }(), signaling.ErrForbidden},
		{"bad party id", func() error {
			_, err := e.svc.Answer(ctx, "bob", c.ID, signaling.AnswerRequest{SDPAnswer: "x", PartyID: "bad party"})
			return err
		}(), signaling.ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	// None of the refusals changed the call.
	got, err := e.svc.Get(ctx, "bob", c.ID)
	if err != nil || got.Status != signaling.StatusRinging || got.SDPAnswer != "" {
		t.Fatalf("call after refusals = %+v, %v", got, err)
	}
	got, err = e.svc.Reject(ctx, "bob", c.ID, signaling.EndRequest{})
	if err != nil || got.Status != signaling.StatusRejected {
		t.Fatalf("Reject = %+v, %v", got, err)
	}
	if ev := e.rec.last(); ev.Type != signaling.EventCallRejected {
		t.Fatalf("event after reject = %s", ev.Type)
	}
}

func TestInviteExpires(t *testing.T) {
	e := newEnv(t, func(c *signaling.ServiceConfig) { c.InviteLifetime = 5 * time.Second })
	ctx := context.Background()
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x", LifetimeMS: 5000})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		got, err := e.svc.Get(ctx, "alice", c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == signaling.StatusExpired {
			if got.EndReason != signaling.ReasonInviteTimeout {
				t.Fatalf("expired call reason = %q", got.EndReason)
			}
			break
		}
		select {
		case <-deadline:
			t.Fatal("the invite did not expire")
		case <-e.rec.notify:
		case <-time.After(100 * time.Millisecond):
		}
	}
	ev := e.rec.last()
	p, ok := ev.Payload.(signaling.EndPayload)
	if ev.Type != signaling.EventCallHangup || !ok || p.Reason != signaling.ReasonInviteTimeout || len(ev.Recipients) != 3 {
		t.Fatalf("expiry event = %+v", ev)
	}
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("expired call's credentials not revoked")
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, func(c *signaling.ServiceConfig) { c.InitiateRate = 0.001; c.InitiateBurst = 2 })
	ctx := context.Background()
	for i := range 3 {
		_, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x"})
		if i < 2 && err != nil {
			t.Fatal(err)
		}
		if i == 2 && !errors.Is(err, signaling.ErrRateLimited) {
			t.Fatalf("third initiate: %v, want rate limited", err)
		}
	}
	// Others are not limited by alice.
	if _, err := e.svc.Initiate(ctx, "bob", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestRevoke(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c := e.initiate(t)
	got, err := e.svc.Revoke(ctx, c.ID)
	if err != nil || got.Status != signaling.StatusEnded || got.EndReason != signaling.ReasonRevoked {
		t.Fatalf("Revoke = %+v, %v", got, err)
	}
	if _, ok := e.rec.revokedUntil(c.ID); !ok {
		t.Fatal("relay not told")
	}
	if _, err := e.svc.Revoke(ctx, "missing"); !errors.Is(err, signaling.ErrNotFound) {
		t.Fatalf("Revoke(missing) = %v", err)
	}
}

func TestRingingCallWithInviteeRefusesOthers(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c, err := e.svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x", Invitee: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Hangup(ctx, "carol", c.ID, signaling.EndRequest{}); !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("carol hangs up alice's call to bob: %v, want forbidden", err)
	}
	err = e.svc.Candidates(ctx, "carol", c.ID, signaling.CandidatesRequest{Candidates: []signaling.Candidate{{Candidate: "candidate:1"}}})
	if !errors.Is(err, signaling.ErrForbidden) {
		t.Fatalf("carol sends candidates into alice's call to bob: %v, want forbidden", err)
	}
	if err := e.svc.Candidates(ctx, "bob", c.ID, signaling.CandidatesRequest{Candidates: []signaling.Candidate{{Candidate: "candidate:1"}}}); err != nil {
		t.Fatalf("the invitee's candidates: %v", err)
	}
	if got, err := e.svc.Hangup(ctx, "bob", c.ID, signaling.EndRequest{Reason: "user_busy"}); err != nil || got.EndReason != "user_busy" {
		t.Fatalf("the invitee hangs up: %+v, %v", got, err)
	}
}

func TestCandidatesRateLimited(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	c := e.initiate(t)
	req := signaling.CandidatesRequest{Candidates: []signaling.Candidate{{Candidate: "candidate:1"}}}
	var limited int
	for range 300 { // bounded: the burst is 200
		if err := e.svc.Candidates(ctx, "alice", c.ID, req); errors.Is(err, signaling.ErrRateLimited) {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited < 50 {
		t.Fatalf("%d of 300 candidate messages in a burst were limited, want most past the burst of 200", limited)
	}
	// Another user is not affected.
	if err := e.svc.Candidates(ctx, "bob", c.ID, req); err != nil {
		t.Fatalf("bob's candidates: %v", err)
	}
}
