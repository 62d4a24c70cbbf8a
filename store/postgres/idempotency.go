package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// Idempotency keys (schema 5; signaling/callsidempotency.go says why) live
// in icebox_idempotency, one row per user and key. The row is inserted by
// the transition it belongs to, first thing in that transition's
// transaction: a retry running at the same time on another node waits on
// the row's unique key until the first transaction ends, then finds it
// (and writes nothing) or, if the first rolled back, takes the key itself.

var _ signaling.IdempotencyStore = (*Store)(nil)

// IdempotencyRecord returns the record of user's key that has not expired
// at now; signaling.ErrNotFound if there is none.
func (s *Store) IdempotencyRecord(ctx context.Context, user, key string, now time.Time) (signaling.IdempotencyRecord, error) {
	const op = "idempotency record"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.IdempotencyRecord{}, err
	}
	if !storable(user) || !storable(key) {
		return signaling.IdempotencyRecord{}, fmt.Errorf("store: %s: %w", op, signaling.ErrNotFound)
	}
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT record FROM icebox_idempotency WHERE user_id = $1 AND key = $2 AND expires_ns > $3`,
		user, key, now.UnixNano()).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return signaling.IdempotencyRecord{}, fmt.Errorf("store: %s: %w", op, signaling.ErrNotFound)
	}
	if err != nil {
		return signaling.IdempotencyRecord{}, wrap(op, err)
	}
	var rec signaling.IdempotencyRecord
	if err := decode("idempotency record", user+"/"+key, raw, &rec); err != nil {
		return signaling.IdempotencyRecord{}, wrap(op, err)
	}
	return rec, nil
}

// putIdempotency writes the record of ctx's claim, if any, for a transition
// of callID, in tx. A record of the same key that has not expired (at the
// new record's CreatedAt) is signaling.ErrIdempotencyReplay; the caller
// rolls back. The user's oldest records beyond IdempotencyMaxPerUser are
// deleted.
func putIdempotency(ctx context.Context, tx pgx.Tx, callID string) error {
	rec, maxPerUser, ok := signaling.IdempotencyFrom(ctx).Record(callID)
	if !ok {
		return nil
	}
	if !storable(rec.User) || !storable(rec.Key) {
		return fmt.Errorf("%w: idempotency key or user is not valid UTF-8", signaling.ErrInvalid)
	}
	raw, err := encode(rec)
	if err != nil {
		return fmt.Errorf("encode idempotency record: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO icebox_idempotency (user_id, key, created_ns, expires_ns, record)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, key) DO UPDATE
		SET created_ns = EXCLUDED.created_ns, expires_ns = EXCLUDED.expires_ns, record = EXCLUDED.record
		WHERE icebox_idempotency.expires_ns <= EXCLUDED.created_ns`,
		rec.User, rec.Key, rec.CreatedAt.UnixNano(), rec.ExpiresAt.UnixNano(), raw)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return signaling.IdempotencyReplayError(rec.User, rec.Key)
	}
	_, err = tx.Exec(ctx, `DELETE FROM icebox_idempotency WHERE user_id = $1 AND key IN (
		SELECT key FROM icebox_idempotency WHERE user_id = $1 ORDER BY created_ns DESC, key DESC OFFSET $2)`,
		rec.User, maxPerUser)
	return err
}

// PruneIdempotency deletes up to limit records that expired before now,
// oldest first, in one transaction; rows another node is deleting are
// skipped.
func (s *Store) PruneIdempotency(ctx context.Context, now time.Time, limit int) (int, error) {
	const op = "prune idempotency keys"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, fmt.Errorf("store: %s: %w: limit %d is not positive", op, signaling.ErrInvalid, limit)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM icebox_idempotency WHERE (user_id, key) IN (
		SELECT user_id, key FROM icebox_idempotency WHERE expires_ns <= $1
		ORDER BY expires_ns LIMIT $2 FOR UPDATE SKIP LOCKED)`, now.UnixNano(), limit)
	if err != nil {
		return 0, wrap(op, err)
	}
	return int(tag.RowsAffected()), nil
}
