package signaling_test

import (
	"context"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// TestSweepExpiresOrphanedInvite: an invite whose expiry timer lives on
// another node (here: another service on the same store, whose timer is
// far off) is expired by this node's sweep once its lifetime has passed
// (issue 18 item 4: a node that dies leaves no invite ringing for good).
func TestSweepExpiresOrphanedInvite(t *testing.T) {
	clock := newFakeClock()
	var cfg signaling.ServiceConfig
	e := newEnv(t, func(c *signaling.ServiceConfig) {
		c.Now = clock.Now
		cfg = *c
	})
	other := cfg
	other.SweepInterval = 20 * time.Millisecond
	other.Publisher = e.rec
	svc, err := signaling.NewService(other)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	c := e.initiate(t) // its timer, on e's service, fires a minute of real time from now
	clock.Advance(2 * time.Minute)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := e.st.Call(context.Background(), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == signaling.StatusExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphaned invite is still %s after 5 s of sweeps every 20 ms", got.Status)
		}
		time.Sleep(10 * time.Millisecond) // pacing the poll
	}
	if ev := e.rec.hangupOf(t, c.ID); ev.Type != signaling.EventCallHangup {
		t.Errorf("event %s, want %s", ev.Type, signaling.EventCallHangup)
	}
}
