package signaling_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// TestSetInitiateLimits: a changed rate and burst apply to a running
// service without resetting anyone's bucket — a user who spent theirs
// stays refused after the burst is raised (not refilled), a new user gets
// the new burst, the spent user's bucket fills at the new rate, and a
// lowered burst caps a full bucket.
func TestSetInitiateLimits(t *testing.T) {
	var (
		mu  sync.Mutex
		now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = now.Add(d) }
	e := newEnv(t, func(c *signaling.ServiceConfig) { c.InitiateRate = 0.001; c.InitiateBurst = 2; c.Now = clock })
	ctx := context.Background()
	// initiates counts the initiations user gets before the first refusal,
	// of tries tried.
	initiates := func(user string, tries int) int {
		t.Helper()
		for i := range tries {
			_, err := e.svc.Initiate(ctx, user, signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "x"})
			if errors.Is(err, signaling.ErrRateLimited) {
				return i
			}
			if err != nil {
				t.Fatalf("%s's initiate %d: %v", user, i+1, err)
			}
		}
		return tries
	}
	if got := initiates("alice", 3); got != 2 {
		t.Fatalf("before: alice initiated %d calls, want 2 (the burst)", got)
	}
	if got := initiates("bob", 1); got != 1 {
		t.Fatalf("before: bob initiated %d, want 1", got)
	}

	if err := e.svc.SetInitiateLimits(0.001, 5); err != nil {
		t.Fatal(err)
	}
	if got := initiates("alice", 2); got != 0 {
		t.Errorf("after raising the burst: alice (bucket spent) initiated %d, want 0: her bucket was refilled", got)
	}
	if got := initiates("bob", 3); got != 1 {
		t.Errorf("after raising the burst: bob (one token left) initiated %d, want 1", got)
	}
	if got := initiates("carol", 6); got != 5 {
		t.Errorf("after raising the burst: carol (new) initiated %d, want 5", got)
	}

	// The new rate fills existing buckets: 2/s for 1.5 s is 3 tokens.
	if err := e.svc.SetInitiateLimits(2, 5); err != nil {
		t.Fatal(err)
	}
	advance(1500 * time.Millisecond)
	if got := initiates("alice", 5); got != 3 {
		t.Errorf("after raising the rate and 1.5 s: alice initiated %d, want 3", got)
	}
	// A lowered burst caps a full bucket.
	advance(time.Hour)
	if err := e.svc.SetInitiateLimits(2, 1); err != nil {
		t.Fatal(err)
	}
	if got := initiates("carol", 3); got != 1 {
		t.Errorf("after lowering the burst to 1: carol (full bucket) initiated %d, want 1", got)
	}

	for _, bad := range []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}} {
		if err := e.svc.SetInitiateLimits(bad.rate, bad.burst); !errors.Is(err, signaling.ErrInvalid) {
			t.Errorf("SetInitiateLimits(%v, %d) = %v, want invalid", bad.rate, bad.burst, err)
		}
	}
}
