package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// MarkEventSeen records that the Matrix event eventID was seen at at, and
// reports whether this is the first time (exactly one of concurrent callers,
// on any node, gets true).
func (s *Store) MarkEventSeen(ctx context.Context, eventID string, at time.Time) (bool, error) {
	const op = "mark event seen"
	if err := checkCtx(ctx, op); err != nil {
		return false, err
	}
	if err := checkKey("event ID", eventID); err != nil {
		return false, fmt.Errorf("store: %s: %w", op, err)
	}
	if !storable(eventID) {
		return false, fmt.Errorf("store: %s: %w: event ID is not valid UTF-8", op, signaling.ErrInvalid)
	}
	n := at.UnixNano()
	if !time.Unix(0, n).Equal(at) {
		return false, fmt.Errorf("store: %s %q: %w: time %s is out of range", op, eventID, signaling.ErrInvalid, at.Format(time.RFC3339))
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO icebox_seen_events (event_id, seen_ns) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING`, eventID, n)
	if err != nil {
		return false, wrap(fmt.Sprintf("%s %q", op, eventID), err)
	}
	return tag.RowsAffected() == 1, nil
}

// PruneSeenEvents deletes the seen events recorded before before and
// returns how many it deleted.
func (s *Store) PruneSeenEvents(ctx context.Context, before time.Time) (int, error) {
	const op = "prune seen events"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM icebox_seen_events WHERE seen_ns < $1`, before.UnixNano())
	if err != nil {
		return 0, wrap(op, err)
	}
	return int(tag.RowsAffected()), nil
}

// SaveSyncValue stores value under key; "" deletes the key.
func (s *Store) SaveSyncValue(ctx context.Context, key, value string) error {
	const op = "save sync value"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := checkKey("sync key", key); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if !storable(key) || !storable(value) {
		return fmt.Errorf("store: %s %q: %w: not valid UTF-8", op, key, signaling.ErrInvalid)
	}
	var err error
	if value == "" {
		_, err = s.pool.Exec(ctx, `DELETE FROM icebox_sync WHERE key = $1`, key)
	} else {
		_, err = s.pool.Exec(ctx, `INSERT INTO icebox_sync (key, value) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value WHERE icebox_sync.value <> EXCLUDED.value`, key, value)
	}
	return wrap(fmt.Sprintf("%s %q", op, key), err)
}

// LoadSyncValue returns the value stored under key; "" and nil if none.
func (s *Store) LoadSyncValue(ctx context.Context, key string) (string, error) {
	const op = "load sync value"
	if err := checkCtx(ctx, op); err != nil {
		return "", err
	}
	if err := checkKey("sync key", key); err != nil {
		return "", fmt.Errorf("store: %s: %w", op, err)
	}
	if !storable(key) {
		return "", nil
	}
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM icebox_sync WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", wrap(fmt.Sprintf("%s %q", op, key), err)
	}
	return v, nil
}
