package signaling_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// fakeClock is a ServiceConfig.Now the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (e *env) answer(t *testing.T, c signaling.Call, user string) signaling.Call {
	t.Helper()
	c, err := e.svc.Answer(context.Background(), user, c.ID, signaling.AnswerRequest{SDPAnswer: "v=0 answer"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// hangupOf waits for the CallHangup event of callID.
func (r *recorder) hangupOf(t *testing.T, callID string) signaling.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		for _, ev := range r.events {
			if ev.Type == signaling.EventCallHangup && ev.CallID == callID {
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			t.Fatalf("no %s event for call %s", signaling.EventCallHangup, callID)
		}
	}
}

func (r *recorder) eventsOf(callID string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.events {
		if ev.CallID == callID {
			out = append(out, ev.Type)
		}
	}
	return out
}

// checkTimedOut asserts that c was ended for outliving MaxCallDuration: the
// stored call, its revocation, the relay and the event.
func checkTimedOut(t *testing.T, e *env, id string, now time.Time) {
	t.Helper()
	ctx := context.Background()
	ev := e.rec.hangupOf(t, id)
	p, ok := ev.Payload.(signaling.EndPayload)
	if !ok || p.Reason != signaling.ReasonCallTimeout || p.Status != signaling.StatusEnded || p.ParticipantID != "" {
		t.Errorf("hangup event payload = %+v", ev.Payload)
	}
	if len(ev.Recipients) != 3 {
		t.Errorf("hangup event recipients = %v", ev.Recipients)
	}
	c, err := e.st.Call(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != signaling.StatusEnded || c.EndReason != signaling.ReasonCallTimeout || c.EndedBy != "" ||
		c.EndedAt == nil || !c.EndedAt.Equal(now) || c.RevokedUntil == nil {
		t.Fatalf("timed-out call = %+v", c)
	}
	if want := now.Add(time.Hour + time.Minute); !c.RevokedUntil.Equal(want) {
		t.Errorf("RevokedUntil = %v, want %v", c.RevokedUntil, want)
	}
	until, ok := e.rec.revokedUntil(id)
	if !ok || !until.Equal(*c.RevokedUntil) {
		t.Errorf("relay revocation = %v, %v; want %v", until, ok, *c.RevokedUntil)
	}
	revs, err := e.st.Revocations(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range revs {
		if r.CallID == id {
			found = r.Until.Equal(*c.RevokedUntil)
		}
	}
	if !found {
		t.Errorf("stored revocations %+v lack call %s until %v", revs, id, *c.RevokedUntil)
	}
}

func TestSweepEndsAnsweredCallsPastMaxDuration(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, func(cfg *signaling.ServiceConfig) {
		cfg.Now = clock.Now
		cfg.MaxCallDuration = time.Hour
		cfg.SweepInterval = 50 * time.Millisecond
	})
	old := e.answer(t, e.initiate(t), "bob")
	clock.Advance(30 * time.Minute)
	fresh := e.answer(t, e.initiate(t), "carol")
	clock.Advance(40 * time.Minute) // old answered 70 min ago, fresh 40 min ago
	ringing := e.initiate(t)

	checkTimedOut(t, e, old.ID, clock.Now())

	time.Sleep(6 * 50 * time.Millisecond) // several more sweeps
	ctx := context.Background()
	for _, tc := range []struct {
		c    signaling.Call
		want signaling.Status
	}{{fresh, signaling.StatusAnswered}, {ringing, signaling.StatusRinging}} {
		got, err := e.st.Call(ctx, tc.c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != tc.want || got.RevokedUntil != nil {
			t.Errorf("call %s: status %s, revoked until %v; want %s, not revoked", got.ID, got.Status, got.RevokedUntil, tc.want)
		}
		if _, ok := e.rec.revokedUntil(tc.c.ID); ok {
			t.Errorf("call %s revoked on the relay", tc.c.ID)
		}
		for _, typ := range e.rec.eventsOf(tc.c.ID) {
			if typ == signaling.EventCallHangup {
				t.Errorf("call %s got a hangup event", tc.c.ID)
			}
		}
	}
	if got := e.rec.eventsOf(old.ID); len(got) != 3 { // invite, answer, hangup
		t.Errorf("events of the timed-out call = %v, want exactly one hangup after invite and answer", got)
	}

	// The fresh call goes too once it is past the limit.
	clock.Advance(30 * time.Minute)
	checkTimedOut(t, e, fresh.ID, clock.Now())
}

// TestSweepAtStart: Run sweeps at once, without waiting a SweepInterval
// (a call that outlived the limit while icebox was down).
func TestSweepAtStart(t *testing.T) {
	clock := newFakeClock()
	var cfg signaling.ServiceConfig
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Now = clock.Now
		c.MaxCallDuration = time.Hour
		c.SweepInterval = time.Hour
		cfg = *c
	})
	c := e.answer(t, e.initiate(t), "bob")
	clock.Advance(2 * time.Hour)

	// A second service on the same store stands for icebox restarting.
	svc, err := signaling.NewService(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	checkTimedOut(t, e, c.ID, clock.Now())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestSweepDefaults(t *testing.T) {
	if _, err := signaling.NewService(signaling.ServiceConfig{Store: nopStore{}, MaxCallDuration: -time.Second}); err == nil {
		t.Error("negative MaxCallDuration accepted")
	}
}

// nopStore satisfies signaling.Store for configuration checks only.
type nopStore struct{ signaling.Store }
