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

// Ended calls are kept for calls.retention after they end, then deleted
// with their index entries by PruneEndedCalls: without that, every call
// ever made (SDP bodies included) stayed in the file for good, and one user
// at the allowed call rate grew it by gigabytes an hour (issue 13).
//
// calls_ended (schema 5): key = the call's EndedAt (CreatedAt if it has
// none) as big-endian unix nanoseconds with the sign bit flipped, then the
// call ID; empty value. Key order is end order, so a prune reads only the
// calls it deletes.
//
// A call's revocation is not deleted with it: it lives in its own bucket
// until its credentials would have expired (Revocations), whatever the
// retention. Nor are its outbox entries: the Matrix worker sends or drops
// them on its own schedule and does not need the call for either.

// PruneEndedCalls deletes up to limit calls that ended before before
// (oldest first), with their entries in calls_by_conversation,
// calls_by_matrix_event and calls_ended, in one transaction, and returns
// how many it deleted. The caller repeats it while it returns limit: a
// bounded batch keeps bbolt's single writer free for calls between
// batches, however large the backlog. When nothing is due it only reads (a
// bbolt commit fsyncs even with nothing to write). limit must be positive.
func (s *Store) PruneEndedCalls(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "prune ended calls"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, fmt.Errorf("store: %s: %w: limit %d is not positive", op, signaling.ErrInvalid, limit)
	}
	cutoff := endedPrefix(before)
	due := func(tx *bolt.Tx) ([][]byte, error) {
		var keys [][]byte
		cur := tx.Bucket(bucketCallsEnded).Cursor()
		for k, _ := cur.First(); k != nil && len(keys) < limit; k, _ = cur.Next() {
			if len(k) <= 8 {
				return nil, fmt.Errorf("%w: malformed %s key %x", ErrCorrupt, bucketCallsEnded, k)
			}
			if bytes.Compare(k[:8], cutoff) >= 0 {
				break
			}
			keys = append(keys, bytes.Clone(k)) // k is only valid in tx
		}
		return keys, nil
	}
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		keys, err := due(tx)
		n = len(keys)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	if n == 0 {
		return 0, nil
	}
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		// Look again: a call may have been pruned since the View.
		keys, err := due(tx)
		if err != nil {
			return err
		}
		if n = len(keys); n == 0 {
			return errNoChange
		}
		for _, k := range keys {
			if err := deleteCall(tx, k); err != nil {
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
	return n, nil
}

// deleteCall deletes the call of calls_ended key k and every index entry
// that names it. An index entry whose call is already gone is deleted
// alone.
func deleteCall(tx *bolt.Tx, k []byte) error {
	id := k[8:]
	ended := tx.Bucket(bucketCallsEnded)
	c, err := getCall(tx, id)
	if errors.Is(err, signaling.ErrNotFound) {
		return ended.Delete(k)
	}
	if err != nil {
		return err
	}
	if !c.Status.Terminal() {
		return fmt.Errorf("%w: call %q in %s is %s", ErrCorrupt, id, bucketCallsEnded, c.Status)
	}
	if c.MatrixInviteEventID != "" {
		b := tx.Bucket(bucketCallsByMatrixEv)
		if ev := []byte(c.MatrixInviteEventID); bytes.Equal(b.Get(ev), id) {
			if err := b.Delete(ev); err != nil {
				return err
			}
		}
	}
	for _, del := range []struct {
		bucket []byte
		key    []byte
	}{
		{bucketCallsByConv, convKey(c)},
		{bucketCallsRinging, id},
		{bucketCallsActive, id},
		{bucketCallsEnded, k},
		{bucketCalls, id},
	} {
		if err := tx.Bucket(del.bucket).Delete(del.key); err != nil {
			return err
		}
	}
	return deleteSDPs(tx, id)
}

// indexEnded brings calls_ended in step with c (old is the stored call, nil
// when c is new).
func indexEnded(tx *bolt.Tx, old *signaling.Call, c signaling.Call) error {
	b := tx.Bucket(bucketCallsEnded)
	key := endedKey(c)
	if old != nil && old.Status.Terminal() {
		if oldKey := endedKey(*old); !c.Status.Terminal() || !bytes.Equal(oldKey, key) {
			if err := b.Delete(oldKey); err != nil {
				return err
			}
		}
	}
	if !c.Status.Terminal() {
		return nil
	}
	return b.Put(key, nil)
}

// endedKey is c's calls_ended key.
func endedKey(c signaling.Call) []byte {
	at := c.CreatedAt
	if c.EndedAt != nil {
		at = *c.EndedAt
	}
	return append(endedPrefix(at), c.ID...)
}

// endedPrefix is the time part of a calls_ended key; the sign bit is
// flipped so that times before 1970 still sort first.
func endedPrefix(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(t.UnixNano())^(1<<63))
}

// migrateEndedIndex is migration 4 → 5: it creates calls_ended and indexes
// the ended calls already stored, and creates call_sdps (sdp.go; records
// keep their inline SDPs until they are next written).
func migrateEndedIndex(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketCallSDPs); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketCallSDPs, err)
	}
	ended, err := tx.CreateBucketIfNotExists(bucketCallsEnded)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketCallsEnded, err)
	}
	return tx.Bucket(bucketCalls).ForEach(func(k, v []byte) error {
		c, err := decodeCall(k, v)
		if err != nil {
			return err
		}
		if c.Status.Terminal() {
			return ended.Put(endedKey(c), nil)
		}
		return nil
	})
}
