package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/snapshot"
)

// Export reads the whole file in one read transaction: what `icebox store
// migrate` copies to another driver. A value that does not decode is
// ErrCorrupt: a copy must not silently leave records behind.
func (s *Store) Export(ctx context.Context) (*snapshot.Snapshot, error) {
	const op = "export"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	snap := &snapshot.Snapshot{RoomIndex: map[string]string{}, Sync: map[string]string{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		snap.InstanceID = string(tx.Bucket(bucketMeta).Get(keyInstance))
		snap.OutboxSeq = tx.Bucket(bucketOutbox).Sequence()
		if err := tx.Bucket(bucketConversations).ForEach(func(k, v []byte) error {
			var c signaling.Conversation
			if err := decode("conversation", k, v, &c); err != nil {
				return err
			}
			snap.Conversations = append(snap.Conversations, c)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketConvsByRoom).ForEach(func(k, v []byte) error {
			snap.RoomIndex[string(k)] = string(v)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketCalls).ForEach(func(k, _ []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := getCall(tx, k)
			if err != nil {
				return err
			}
			snap.Calls = append(snap.Calls, c)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOutbox).ForEach(func(k, v []byte) error {
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			snap.Outbox = append(snap.Outbox, e)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketRevocations).ForEach(func(k, v []byte) error {
			var r signaling.Revocation
			if err := decode("revocation", k, v, &r); err != nil {
				return err
			}
			snap.Revocations = append(snap.Revocations, r)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bucketSeenEvents).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("%w: seen event %q has a %d-byte time", ErrCorrupt, k, len(v))
			}
			snap.SeenEvents = append(snap.SeenEvents, snapshot.SeenEvent{ID: string(k), At: time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()})
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketSync).ForEach(func(k, v []byte) error {
			snap.Sync[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return snap, nil
}
