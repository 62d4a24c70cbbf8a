package signaling_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// TestSecurityStateFileRetentionSweep: the service's sweep deletes calls
// that ended more than CallRetention ago, and keeps recent and active calls
// and the revocations of the deleted ones.
func TestSecurityStateFileRetentionSweep(t *testing.T) {
	clock := newFakeClock()
	e := newEnv(t, func(cfg *signaling.ServiceConfig) {
		cfg.Now = clock.Now
		cfg.CredentialTTL = 200 * time.Hour
		cfg.MaxCallDuration = 1000 * time.Hour
		cfg.CallRetention = 72 * time.Hour
		cfg.SweepInterval = 20 * time.Millisecond
	})
	ctx := context.Background()
	hangup := func(c signaling.Call) {
		t.Helper()
		if _, err := e.svc.Hangup(ctx, "alice", c.ID, signaling.EndRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	old := e.initiate(t)
	hangup(old)
	clock.Advance(48 * time.Hour)
	recent := e.initiate(t)
	hangup(recent)
	answered := e.answer(t, e.initiate(t), "bob")
	clock.Advance(25 * time.Hour) // old ended 73 h ago, recent 25 h ago

	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.st.Call(ctx, old.ID)
		if errors.Is(err, signaling.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("call %s, ended 73 h ago, still stored 10 s after the retention of 72 h passed", old.ID)
		}
		<-poll.C
	}
	for _, c := range []signaling.Call{recent, answered} {
		if _, err := e.st.Call(ctx, c.ID); err != nil {
			t.Errorf("call %s (%s) pruned: %v", c.ID, c.Status, err)
		}
	}
	revs, err := e.st.Revocations(ctx, clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, r := range revs {
		kept = kept || r.CallID == old.ID
	}
	if !kept {
		t.Errorf("the revocation of pruned call %s went with it: %+v", old.ID, revs)
	}

	// Once the credentials would have expired, the sweep deletes the
	// revocation too (reading at the zero time lists what is stored
	// without pruning anything).
	clock.Advance(200 * time.Hour)
	deadline = time.Now().Add(10 * time.Second)
	for {
		stored, err := e.st.Revocations(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(stored) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("expired revocations still stored: %+v", stored)
		}
		<-poll.C
	}
}

func TestRetentionDefaults(t *testing.T) {
	if _, err := signaling.NewService(signaling.ServiceConfig{Store: nopStore{}, CallRetention: -time.Second}); err == nil {
		t.Error("negative CallRetention accepted")
	}
}
