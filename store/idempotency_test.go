package store

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// idemRecord is user's record of key for op, created at t0+d.
func idemRecord(user, key, op, callID string, d time.Duration) signaling.IdempotencyRecord {
	return signaling.IdempotencyRecord{
		User: user, Key: key, Op: op, Hash: "hash-of-" + op, CallID: callID,
		CreatedAt: at(d), ExpiresAt: at(d + signaling.IdempotencyTTL),
	}
}

func withKey(ctx context.Context, rec signaling.IdempotencyRecord) context.Context {
	return signaling.WithIdempotency(ctx, rec)
}

// TestIdempotencyRecordedWithTransition: the record of a key is committed
// by the transition it comes with (create, update, append), with the
// transition's call; a second transition under the same key is
// ErrIdempotencyReplay and writes nothing (no call, no entry, no change).
func TestIdempotencyRecordedWithTransition(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()

		rec := idemRecord("@alice:x", "k1", "initiate", "", 0)
		if err := s.CreateCallOutbox(withKey(ctx, rec), ringingCall("call-1", "c", 0), []signaling.OutboxEntry{entry("call-1", typeInvite)}); err != nil {
			t.Fatalf("CreateCallOutbox with a key: %v", err)
		}
		got, err := s.IdempotencyRecord(ctx, "@alice:x", "k1", at(time.Second))
		rec.CallID = "call-1" // the store names the created call
		if err != nil || got != rec {
			t.Fatalf("IdempotencyRecord = %+v, %v; want %+v", got, err, rec)
		}
		// The retry made a call of another ID before it found the key.
		err = s.CreateCallOutbox(withKey(ctx, idemRecord("@alice:x", "k1", "initiate", "", time.Second)), ringingCall("call-2", "c", 0),
			[]signaling.OutboxEntry{entry("call-2", typeInvite)})
		if !errors.Is(err, signaling.ErrIdempotencyReplay) {
			t.Fatalf("CreateCallOutbox retried: %v, want ErrIdempotencyReplay", err)
		}
		if _, err := s.Call(ctx, "call-2"); !errors.Is(err, signaling.ErrNotFound) {
			t.Errorf("the refused retry's call: %v, want not found", err)
		}
		if n := len(pending(t, s)); n != 1 {
			t.Errorf("after the refused retry: %d outbox entries, want 1", n)
		}

		// Another user's key of the same name is another key.
		if err := s.CreateCallOutbox(withKey(ctx, idemRecord("@bob:x", "k1", "initiate", "", 0)), ringingCall("call-3", "c", 0), nil); err != nil {
			t.Fatalf("bob's key k1: %v", err)
		}

		hangup := func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
			c.Status, c.EndedAt, c.EndReason = signaling.StatusEnded, ptr(at(time.Minute)), "user_hangup"
			return []signaling.OutboxEntry{entry(c.ID, typeHangup)}, nil
		}
		hrec := idemRecord("@alice:x", "k2", "hangup", "call-1", time.Minute)
		if _, err := s.UpdateCallOutbox(withKey(ctx, hrec), "call-1", hangup); err != nil {
			t.Fatalf("UpdateCallOutbox with a key: %v", err)
		}
		ran := false
		_, err = s.UpdateCallOutbox(withKey(ctx, hrec), "call-1", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
			ran = true
			return hangup(c)
		})
		if !errors.Is(err, signaling.ErrIdempotencyReplay) || ran {
			t.Errorf("UpdateCallOutbox retried: %v (fn ran: %v), want ErrIdempotencyReplay without running fn", err, ran)
		}
		if n := len(pending(t, s)); n != 2 {
			t.Errorf("after the hangup and its retry: %d outbox entries, want 2", n)
		}

		// An fn that fails rolls the record back with the transition.
		frec := idemRecord("@alice:x", "k3", "answer", "call-3", time.Minute)
		boom := errors.New("refused")
		if _, err := s.UpdateCallOutbox(withKey(ctx, frec), "call-3", func(*signaling.Call) ([]signaling.OutboxEntry, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("failing fn: %v", err)
		}
		if _, err := s.IdempotencyRecord(ctx, "@alice:x", "k3", at(time.Minute)); !errors.Is(err, signaling.ErrNotFound) {
			t.Errorf("the key of a transition that failed: %v, want not found", err)
		}

		// AppendOutbox records the key even with nothing to append.
		crec := idemRecord("@alice:x", "k4", "candidates", "call-3", time.Minute)
		if err := s.AppendOutbox(withKey(ctx, crec), nil); err != nil {
			t.Fatalf("AppendOutbox of nothing with a key: %v", err)
		}
		if err := s.AppendOutbox(withKey(ctx, crec), []signaling.OutboxEntry{entry("call-3", typeCandidates)}); !errors.Is(err, signaling.ErrIdempotencyReplay) {
			t.Errorf("AppendOutbox retried: %v, want ErrIdempotencyReplay", err)
		}
		if n := len(pending(t, s)); n != 2 {
			t.Errorf("after the refused append: %d outbox entries, want 2", n)
		}
		checkIndexes(t, s)

		// Committed: a second transition of the same request (same
		// context) writes no record and is not refused.
		kctx := withKey(ctx, idemRecord("@carol:x", "k5", "initiate", "", 0))
		if err := s.CreateCallOutbox(kctx, ringingCall("call-5", "c", 0), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateCallOutbox(kctx, "call-5", hangup); err != nil {
			t.Errorf("a second transition of one keyed request: %v", err)
		}
		if got, err := s.IdempotencyRecord(ctx, "@carol:x", "k5", at(0)); err != nil || got.CallID != "call-5" {
			t.Errorf("carol's k5 = %+v, %v; want call-5's", got, err)
		}
		checkIdemIndexes(t, s)
	})
}

// TestIdempotencySurvivesRestart: a key committed before the store closes
// (a process killed after its commit) is found after it opens again.
func TestIdempotencySurvivesRestart(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		dir := t.TempDir()
		s := d.open(t, dir)
		if err := s.CreateCallOutbox(withKey(t.Context(), idemRecord("@alice:x", "k", "initiate", "", 0)), ringingCall("call-1", "c", 0), nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = d.open(t, dir)
		if got, err := s.IdempotencyRecord(t.Context(), "@alice:x", "k", at(time.Hour)); err != nil || got.CallID != "call-1" {
			t.Errorf("after reopening: %+v, %v; want call-1's record", got, err)
		}
	})
}

// TestIdempotencyExpiry: a key is not found once it expired, may then be
// used again, and PruneIdempotency deletes the expired records in batches.
func TestIdempotencyExpiry(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		for i := range 5 {
			id := "call-" + strconv.Itoa(i)
			if err := s.CreateCallOutbox(withKey(ctx, idemRecord("@alice:x", "k"+strconv.Itoa(i), "initiate", "", time.Duration(i)*time.Hour)), ringingCall(id, "c", 0), nil); err != nil {
				t.Fatal(err)
			}
		}
		expired := at(signaling.IdempotencyTTL + 2*time.Hour) // k0, k1, k2 expired
		if _, err := s.IdempotencyRecord(ctx, "@alice:x", "k0", expired); !errors.Is(err, signaling.ErrNotFound) {
			t.Errorf("an expired key: %v, want not found", err)
		}
		if _, err := s.IdempotencyRecord(ctx, "@alice:x", "k3", expired); err != nil {
			t.Errorf("a live key: %v", err)
		}
		// k0 again, after it expired: a new request.
		if err := s.CreateCallOutbox(withKey(ctx, idemRecord("@alice:x", "k0", "initiate", "", signaling.IdempotencyTTL+time.Hour)), ringingCall("call-new", "c", 0), nil); err != nil {
			t.Fatalf("an expired key used again: %v", err)
		}
		if got, err := s.IdempotencyRecord(ctx, "@alice:x", "k0", expired); err != nil || got.CallID != "call-new" {
			t.Errorf("k0 used again: %+v, %v", got, err)
		}
		n1, err := s.PruneIdempotency(ctx, expired, 1)
		if err != nil || n1 != 1 {
			t.Fatalf("PruneIdempotency(limit 1) = %d, %v; want 1", n1, err)
		}
		n2, err := s.PruneIdempotency(ctx, expired, 10)
		if err != nil || n2 != 1 {
			t.Fatalf("PruneIdempotency = %d, %v; want 1 (k1 and k2 expired; k0 is new)", n2, err)
		}
		if n, err := s.PruneIdempotency(ctx, expired, 10); err != nil || n != 0 {
			t.Errorf("PruneIdempotency with nothing due = %d, %v", n, err)
		}
		for _, k := range []string{"k0", "k3", "k4"} {
			if _, err := s.IdempotencyRecord(ctx, "@alice:x", k, expired); err != nil {
				t.Errorf("%s after pruning: %v", k, err)
			}
		}
		checkIdemIndexes(t, s)
		if n, err := s.PruneIdempotency(ctx, expired, 0); err == nil || n != 0 {
			t.Errorf("PruneIdempotency(limit 0) = %d, %v; want an error", n, err)
		}
	})
}

// TestIdempotencyBoundPerUser: a user keeps at most the bound's number of
// keys; recording one more forgets that user's oldest, not another user's.
func TestIdempotencyBoundPerUser(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		const bound = 3
		if err := s.CreateCallOutbox(withKey(ctx, idemRecord("@bob:x", "b", "initiate", "", 0)), ringingCall("call-b", "c", 0), nil); err != nil {
			t.Fatal(err)
		}
		for i := range bound + 2 {
			id := "call-" + strconv.Itoa(i)
			kctx := signaling.WithIdempotencyBound(ctx, idemRecord("@alice:x", "k"+strconv.Itoa(i), "initiate", "", time.Duration(i)*time.Second), bound)
			if err := s.CreateCallOutbox(kctx, ringingCall(id, "c", 0), nil); err != nil {
				t.Fatal(err)
			}
		}
		for i := range bound + 2 {
			_, err := s.IdempotencyRecord(ctx, "@alice:x", "k"+strconv.Itoa(i), at(time.Minute))
			if kept := i >= 2; kept != (err == nil) {
				t.Errorf("k%d: %v; want kept %v (the newest %d of alice's)", i, err, kept, bound)
			}
		}
		if _, err := s.IdempotencyRecord(ctx, "@bob:x", "b", at(time.Minute)); err != nil {
			t.Errorf("bob's key after alice's were bounded: %v", err)
		}
		checkIdemIndexes(t, s)
	})
}

// TestIdempotencyRace: eight retries of one keyed initiate, each with a
// call ID of its own, racing (on PostgreSQL through two pools, as two
// nodes): one call is created, the others are ErrIdempotencyReplay.
func TestIdempotencyRace(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		dir := t.TempDir()
		a := d.open(t, dir)
		b := a
		if pgOf(a) != nil {
			b = d.open(t, dir) // the same database, another pool
		}
		ctx := t.Context()
		const racers = 8
		var (
			wg              sync.WaitGroup
			mu              sync.Mutex
			created, replay int
		)
		for r := range racers {
			wg.Go(func() {
				s := a
				if r%2 == 1 {
					s = b
				}
				id := "race-" + strconv.Itoa(r)
				err := s.CreateCallOutbox(withKey(ctx, idemRecord("@alice:x", "same", "initiate", "", 0)), ringingCall(id, "c", 0),
					[]signaling.OutboxEntry{entry(id, typeInvite)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					created++
				case errors.Is(err, signaling.ErrIdempotencyReplay):
					replay++
				default:
					t.Errorf("racer %d: %v", r, err)
				}
			})
		}
		wg.Wait()
		if created != 1 || replay != racers-1 {
			t.Errorf("%d racers: %d created, %d replayed; want 1 and %d", racers, created, replay, racers-1)
		}
		if n := len(pending(t, a)); n != 1 {
			t.Errorf("%d outbox entries, want 1", n)
		}
		calls, err := a.Calls(ctx, signaling.CallFilter{ConversationID: "c"})
		if err != nil || len(calls) != 1 {
			t.Errorf("calls %v, %v; want one", ids(calls), err)
		}
	})
}

// checkIdemIndexes asserts, on bbolt, that idempotency_by_user and
// idempotency_expiry hold exactly one entry per record, built from it.
func checkIdemIndexes(t *testing.T, st testStore) {
	t.Helper()
	s, ok := st.(*Store)
	if !ok {
		return // PostgreSQL: one row, no index kept by hand
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		wantUser, wantExp := map[string]bool{}, map[string]bool{}
		if err := tx.Bucket(bucketIdemKeys).ForEach(func(k, v []byte) error {
			var r signaling.IdempotencyRecord
			if err := decode("idempotency record", k, v, &r); err != nil {
				return err
			}
			if !bytes.Equal(k, idemKey(r.User, r.Key)) {
				t.Errorf("record %+v under key %x", r, k)
			}
			wantUser[string(idemByUserKey(r))] = true
			wantExp[string(idemExpiryKey(r))] = true
			return nil
		}); err != nil {
			return err
		}
		for b, want := range map[string]map[string]bool{string(bucketIdemByUser): wantUser, string(bucketIdemExpiry): wantExp} {
			got := map[string]bool{}
			_ = tx.Bucket([]byte(b)).ForEach(func(k, _ []byte) error { got[string(k)] = true; return nil })
			if !maps.Equal(got, want) {
				t.Errorf("%s holds %d entries, want one per record (%d)", b, len(got), len(want))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMigrateSchema6To7: a schema-6 file (no idempotency buckets) opens at
// schema 7 with its calls kept, and a keyed transition then records its key.
func TestMigrateSchema6To7(t *testing.T) {
	dir := t.TempDir()
	writeSchemaFixture(t, dir, oldSchema{
		version: 6,
		absent:  [][]byte{bucketIdemKeys, bucketIdemByUser, bucketIdemExpiry},
		calls:   []signaling.Call{ringingCall("old", "c", 0)},
	})
	s, err := Open(dir, Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if v, err := s.Version(); err != nil || v != 7 || SchemaVersion() != 7 {
		t.Fatalf("after migration: version %d, %v; this build %d; want 7", v, err, SchemaVersion())
	}
	if _, err := s.Call(t.Context(), "old"); err != nil {
		t.Fatalf("the schema-6 call after migration: %v", err)
	}
	rec := idemRecord("@alice:x", "k", "hangup", "old", time.Minute)
	if _, err := s.UpdateCallOutbox(withKey(t.Context(), rec), "old", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
		c.Status, c.EndedAt, c.EndReason = signaling.StatusEnded, ptr(at(time.Minute)), "user_hangup"
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.IdempotencyRecord(t.Context(), "@alice:x", "k", at(time.Minute)); err != nil || got != rec {
		t.Errorf("key after migration: %+v, %v", got, err)
	}
	checkIndexes(t, s)
	checkIdemIndexes(t, s)
}
