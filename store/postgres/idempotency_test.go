package postgres_test

import (
	"errors"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestMigrateIdempotency: a database at schema 4 (no icebox_idempotency)
// holding a call is brought to schema 5; a keyed transition of that call
// then records its key, and its retry is refused as a replay.
func TestMigrateIdempotency(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	restore := postgres.OldSchema(4)
	old := open(t, dsn)
	restore()
	if err := old.CreateCall(t.Context(), ringing("old")); err != nil {
		t.Fatal(err)
	}
	var exists bool
	if err := old.Pool().QueryRow(t.Context(), `SELECT to_regclass('icebox_idempotency') IS NOT NULL`).Scan(&exists); err != nil || exists {
		t.Fatalf("icebox_idempotency at schema 4: %v, %v", exists, err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, dsn)
	if v, err := s.Version(t.Context()); err != nil || v != postgres.SchemaVersion() || v < 5 {
		t.Fatalf("after migration: schema %d, %v; this build %d; want this build's, 5 or more", v, err, postgres.SchemaVersion())
	}
	now := time.Now().UTC()
	rec := signaling.IdempotencyRecord{User: "@alice:x", Key: "k", Op: "hangup", Hash: "h", CallID: "old",
		CreatedAt: now, ExpiresAt: now.Add(signaling.IdempotencyTTL)}
	hangup := func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
		c.Status, c.EndedAt, c.EndReason = signaling.StatusEnded, &now, "user_hangup"
		return nil, nil
	}
	if _, err := s.UpdateCallOutbox(signaling.WithIdempotency(t.Context(), rec), "old", hangup); err != nil {
		t.Fatal(err)
	}
	if got, err := s.IdempotencyRecord(t.Context(), "@alice:x", "k", now); err != nil || got.CallID != "old" || !got.CreatedAt.Equal(now) {
		t.Errorf("the key after migration: %+v, %v", got, err)
	}
	if _, err := s.UpdateCallOutbox(signaling.WithIdempotency(t.Context(), rec), "old", hangup); !errors.Is(err, signaling.ErrIdempotencyReplay) {
		t.Errorf("the retry: %v, want ErrIdempotencyReplay", err)
	}
}
