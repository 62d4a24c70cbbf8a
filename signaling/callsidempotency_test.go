package signaling_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// TestIdempotencyKeysSwept: the service's sweep deletes idempotency keys
// once they expired (IdempotencyTTL after they were recorded), and keeps
// the ones still in force.
func TestIdempotencyKeysSwept(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, func(cfg *signaling.ServiceConfig) {
		cfg.Now = clock.Now
		cfg.SweepInterval = 20 * time.Millisecond
	})
	ctx := context.Background()
	initiate := func(key string) signaling.Call {
		t.Helper()
		kctx := signaling.WithIdempotency(ctx, e.svc.NewIdempotencyRecord("alice", key, "initiate", "h", ""))
		c, err := e.svc.Initiate(kctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "v=0 offer"})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := initiate("old")
	if rec, err := e.svc.IdempotencyRecordOf(ctx, "alice", "old"); err != nil || rec.CallID != old.ID {
		t.Fatalf("the key of the initiate: %+v, %v; want call %s", rec, err, old.ID)
	}
	clock.Advance(signaling.IdempotencyTTL - time.Hour)
	initiate("recent")
	clock.Advance(time.Hour) // "old" expires now, "recent" in 23 h

	st := e.st
	stored := func(key string) bool { // at the zero time nothing has expired: what is stored
		_, err := st.IdempotencyRecord(ctx, "alice", key, time.Time{})
		if err != nil && !errors.Is(err, signaling.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for stored("old") {
		if time.Now().After(deadline) {
			t.Fatal(`key "old" still stored 10 s after it expired`)
		}
		<-poll.C
	}
	if !stored("recent") {
		t.Error(`key "recent", 23 h from expiry, was pruned`)
	}
}
