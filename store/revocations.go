package store

import (
	"context"
	"fmt"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// Revocations live in bucket revocations: key = call ID, value = JSON of
// signaling.Revocation. They are written by putCall (calls.go) in the
// transaction that sets a call's RevokedUntil, and pruned by Revocations.

// Revocations lists the revocations still in force at now (Until after now),
// in call ID order, and deletes the others in the same transaction. When
// none has expired it only reads: a bbolt commit always fsyncs, even with
// nothing to write, and this is called whenever the relay's list is loaded.
func (s *Store) Revocations(ctx context.Context, now time.Time) ([]signaling.Revocation, error) {
	const op = "revocations"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	var (
		live    []signaling.Revocation
		expired [][]byte
	)
	scan := func(tx *bolt.Tx) error {
		live, expired = nil, nil
		return tx.Bucket(bucketRevocations).ForEach(func(k, v []byte) error {
			var r signaling.Revocation
			if err := decode("revocation", k, v, &r); err != nil {
				return err
			}
			if r.Until.After(now) {
				live = append(live, r)
			} else {
				// k is only valid in tx, and deleting while ForEach walks
				// the bucket is not allowed: keep a copy for later.
				expired = append(expired, append([]byte(nil), k...))
			}
			return nil
		})
	}
	if err := s.db.View(scan); err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	if len(expired) == 0 {
		return live, nil
	}
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		// Scan again: a revocation may have been written since the View.
		if err := scan(tx); err != nil {
			return err
		}
		b := tx.Bucket(bucketRevocations)
		for _, k := range expired {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: prune: %w", op, err)
	}
	return live, nil
}

// putRevocation writes a call's revocation. One already stored for the call
// is only ever extended: a later write cannot shorten the time the call's
// credentials are refused.
func putRevocation(tx *bolt.Tx, r signaling.Revocation) error {
	b := tx.Bucket(bucketRevocations)
	key := []byte(r.CallID)
	if raw := b.Get(key); raw != nil {
		var old signaling.Revocation
		if err := decode("revocation", key, raw, &old); err != nil {
			return err
		}
		if !r.Until.After(old.Until) {
			return nil
		}
	}
	raw, err := encode(r)
	if err != nil {
		return fmt.Errorf("encode revocation: %w", err)
	}
	return b.Put(key, raw)
}
