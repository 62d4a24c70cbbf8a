package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// State of the Matrix bridge's inbound half:
//
//   - seen_matrix_events: key = Matrix event ID, value = when it was first
//     seen, as big-endian unix nanoseconds (two's complement). The bridge
//     marks each m.call.* event before it applies it, so an event the sync
//     delivers again (after a restart, or decrypted late) is applied once;
//     PruneSeenEvents forgets the ones old enough never to come back.
//   - sync: key = a name the Matrix client chose (e.g. "next_batch/<user>",
//     "filter/<user>"), value = its string. next_batch is saved after each
//     sync, so a restart resumes where it stopped instead of replaying the
//     room history.

// MarkEventSeen records that the Matrix event eventID was seen at at, and
// reports whether this is the first time. If the event is already recorded,
// it returns false and writes nothing (its first time is kept). Concurrent
// calls for one event: exactly one gets true.
func (s *Store) MarkEventSeen(ctx context.Context, eventID string, at time.Time) (first bool, err error) {
	const op = "mark event seen"
	if err := checkCtx(ctx, op); err != nil {
		return false, err
	}
	if err := checkKey("event ID", eventID); err != nil {
		return false, fmt.Errorf("store: %s: %w", op, err)
	}
	val, err := nanosValue(at)
	if err != nil {
		return false, fmt.Errorf("store: %s %q: %w", op, eventID, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSeenEvents)
		if b.Get([]byte(eventID)) != nil {
			return errNoChange
		}
		return b.Put([]byte(eventID), val)
	})
	switch {
	case errors.Is(err, errNoChange):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("store: %s %q: %w", op, eventID, err)
	}
	return true, nil
}

// PruneSeenEvents deletes the seen events recorded before before (an event
// seen exactly at before is kept) and returns how many it deleted, in one
// transaction. When none is that old it only reads: a bbolt commit fsyncs
// even with nothing to write.
func (s *Store) PruneSeenEvents(ctx context.Context, before time.Time) (removed int, err error) {
	const op = "prune seen events"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var old [][]byte
	scan := func(tx *bolt.Tx) error {
		old = nil
		return tx.Bucket(bucketSeenEvents).ForEach(func(k, v []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(v) != 8 {
				return fmt.Errorf("%w: seen event %q has a %d-byte time", ErrCorrupt, k, len(v))
			}
			if time.Unix(0, int64(binary.BigEndian.Uint64(v))).Before(before) {
				// k is only valid in tx, and ForEach forbids deleting.
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
	}
	if err := s.db.View(scan); err != nil {
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	if len(old) == 0 {
		return 0, nil
	}
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		// Scan again: the set may have changed since the View.
		if err := scan(tx); err != nil {
			return err
		}
		if len(old) == 0 {
			return errNoChange
		}
		b := tx.Bucket(bucketSeenEvents)
		for _, k := range old {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errNoChange):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	return len(old), nil
}

// nanosValue encodes t for seen_matrix_events. A time whose unix nanoseconds
// overflow an int64 (the zero time.Time among them) is signaling.ErrInvalid:
// it would be stored as some other time and pruned at random.
func nanosValue(t time.Time) ([]byte, error) {
	n := t.UnixNano()
	if !time.Unix(0, n).Equal(t) {
		return nil, fmt.Errorf("%w: time %s is out of range", signaling.ErrInvalid, t.Format(time.RFC3339))
	}
	return binary.BigEndian.AppendUint64(nil, uint64(n)), nil
}

// SaveSyncValue stores value under key in bucket sync. Saving the value
// already stored writes nothing; saving "" deletes the key (LoadSyncValue
// returns "" for both).
func (s *Store) SaveSyncValue(ctx context.Context, key, value string) error {
	const op = "save sync value"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := checkKey("sync key", key); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSync)
		old := b.Get([]byte(key))
		switch {
		case value == "" && old == nil, old != nil && string(old) == value:
			return errNoChange
		case value == "":
			return b.Delete([]byte(key))
		}
		return b.Put([]byte(key), []byte(value))
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return fmt.Errorf("store: %s %q: %w", op, key, err)
	}
	return nil
}

// LoadSyncValue returns the value stored under key in bucket sync; "" and
// nil if there is none.
func (s *Store) LoadSyncValue(ctx context.Context, key string) (string, error) {
	const op = "load sync value"
	if err := checkCtx(ctx, op); err != nil {
		return "", err
	}
	if err := checkKey("sync key", key); err != nil {
		return "", fmt.Errorf("store: %s: %w", op, err)
	}
	var value string
	err := s.db.View(func(tx *bolt.Tx) error {
		value = string(tx.Bucket(bucketSync).Get([]byte(key)))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("store: %s %q: %w", op, key, err)
	}
	return value, nil
}
