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

// Idempotency keys (schema 7; signaling/callsidempotency.go says why): the
// record of a user's key is written by the transition it belongs to, in
// that transition's transaction (CreateCallOutbox, UpdateCallOutbox,
// AppendOutbox call putIdempotency), so a retry finds it if and only if the
// transition committed. Three buckets, kept in step by putIdempotency and
// deleteIdempotency:
//
//   - idempotency_keys: key = idemKey(user, key), value = JSON of
//     signaling.IdempotencyRecord.
//   - idempotency_by_user: key = user part, CreatedAt (sortable
//     nanoseconds), key; empty value. The user's oldest record comes first:
//     the one deleted when the user reaches IdempotencyMaxPerUser.
//   - idempotency_expiry: key = ExpiresAt (sortable nanoseconds), user
//     part, key; empty value. PruneIdempotency walks it oldest first.
//
// The user part is the user's length as a uvarint, then the user: user IDs
// are not checked here, so no separator byte could be trusted not to occur
// in one.

var (
	bucketIdemKeys   = []byte("idempotency_keys")
	bucketIdemByUser = []byte("idempotency_by_user")
	bucketIdemExpiry = []byte("idempotency_expiry")
)

var _ signaling.IdempotencyStore = (*Store)(nil)

// migrateIdempotency is migration 6 → 7: the idempotency buckets, empty.
func migrateIdempotency(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketIdemKeys, bucketIdemByUser, bucketIdemExpiry} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return nil
}

func userPart(user string) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(user))), user...)
}

func idemKey(user, key string) []byte { return append(userPart(user), key...) }

// sortableNanos is t as big-endian unix nanoseconds with the sign bit
// flipped, so that byte order is time order.
func sortableNanos(t time.Time) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())^(1<<63))
}

func idemByUserKey(r signaling.IdempotencyRecord) []byte {
	k := append(userPart(r.User), sortableNanos(r.CreatedAt)...)
	return append(k, r.Key...)
}

func idemExpiryKey(r signaling.IdempotencyRecord) []byte {
	k := append(sortableNanos(r.ExpiresAt), userPart(r.User)...)
	return append(k, r.Key...)
}

// IdempotencyRecord returns the record of user's key that has not expired
// at now; signaling.ErrNotFound if there is none.
func (s *Store) IdempotencyRecord(ctx context.Context, user, key string, now time.Time) (signaling.IdempotencyRecord, error) {
	const op = "idempotency record"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.IdempotencyRecord{}, err
	}
	var rec signaling.IdempotencyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		r, ok, err := getIdempotency(tx, user, key)
		switch {
		case err != nil:
			return err
		case !ok || !now.Before(r.ExpiresAt):
			return signaling.ErrNotFound
		}
		rec = r
		return nil
	})
	if err != nil {
		return signaling.IdempotencyRecord{}, fmt.Errorf("store: %s: %w", op, err)
	}
	return rec, nil
}

func getIdempotency(tx *bolt.Tx, user, key string) (signaling.IdempotencyRecord, bool, error) {
	raw := tx.Bucket(bucketIdemKeys).Get(idemKey(user, key))
	if raw == nil {
		return signaling.IdempotencyRecord{}, false, nil
	}
	var r signaling.IdempotencyRecord
	if err := decode("idempotency record", idemKey(user, key), raw, &r); err != nil {
		return signaling.IdempotencyRecord{}, false, err
	}
	return r, true, nil
}

// putIdempotency writes the record of ctx's claim, if any, for a transition
// of callID, inside tx. A record of the same key that has not expired
// (at the new record's CreatedAt) is signaling.ErrIdempotencyReplay: the
// caller rolls back and the request is answered from that record.
func putIdempotency(ctx context.Context, tx *bolt.Tx, callID string) error {
	rec, maxPerUser, ok := signaling.IdempotencyFrom(ctx).Record(callID)
	if !ok {
		return nil
	}
	old, found, err := getIdempotency(tx, rec.User, rec.Key)
	if err != nil {
		return err
	}
	if found {
		if rec.CreatedAt.Before(old.ExpiresAt) {
			return signaling.IdempotencyReplayError(rec.User, rec.Key)
		}
		if err := deleteIdempotency(tx, old); err != nil {
			return err
		}
	}
	// The user's oldest records make room (counted up to the bound only).
	prefix := userPart(rec.User)
	var keep [][]byte
	cur := tx.Bucket(bucketIdemByUser).Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		keep = append(keep, bytes.Clone(k))
	}
	for i := 0; i <= len(keep)-maxPerUser; i++ {
		k := keep[i]
		if len(k) < len(prefix)+8 {
			return fmt.Errorf("%w: malformed %s key %x", ErrCorrupt, bucketIdemByUser, k)
		}
		r, found, err := getIdempotency(tx, rec.User, string(k[len(prefix)+8:]))
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("%w: %s entry %x has no record", ErrCorrupt, bucketIdemByUser, k)
		}
		if err := deleteIdempotency(tx, r); err != nil {
			return err
		}
	}
	raw, err := encode(rec)
	if err != nil {
		return fmt.Errorf("encode idempotency record: %w", err)
	}
	if err := tx.Bucket(bucketIdemKeys).Put(idemKey(rec.User, rec.Key), raw); err != nil {
		return err
	}
	if err := tx.Bucket(bucketIdemByUser).Put(idemByUserKey(rec), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketIdemExpiry).Put(idemExpiryKey(rec), nil)
}

func deleteIdempotency(tx *bolt.Tx, r signaling.IdempotencyRecord) error {
	return errors.Join(
		tx.Bucket(bucketIdemKeys).Delete(idemKey(r.User, r.Key)),
		tx.Bucket(bucketIdemByUser).Delete(idemByUserKey(r)),
		tx.Bucket(bucketIdemExpiry).Delete(idemExpiryKey(r)),
	)
}

// PruneIdempotency deletes up to limit records expired at now (ExpiresAt
// not after it), oldest first, in one transaction; when none is due it
// only reads.
func (s *Store) PruneIdempotency(ctx context.Context, now time.Time, limit int) (int, error) {
	const op = "prune idempotency keys"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, fmt.Errorf("store: %s: %w: limit %d is not positive", op, signaling.ErrInvalid, limit)
	}
	cutoff := sortableNanos(now)
	due := func(tx *bolt.Tx) ([]signaling.IdempotencyRecord, error) {
		var out []signaling.IdempotencyRecord
		cur := tx.Bucket(bucketIdemExpiry).Cursor()
		for k, _ := cur.First(); k != nil && len(out) < limit; k, _ = cur.Next() {
			if len(k) >= 8 && bytes.Compare(k[:8], cutoff) > 0 {
				break // expired means ExpiresAt <= now, as in IdempotencyRecord
			}
			n, w := binary.Uvarint(k[min(8, len(k)):])
			if len(k) < 8 || w <= 0 || uint64(len(k)-8-w) < n {
				return nil, fmt.Errorf("%w: malformed %s key %x", ErrCorrupt, bucketIdemExpiry, k)
			}
			user := string(k[8+w : 8+w+int(n)])
			r, found, err := getIdempotency(tx, user, string(k[8+w+int(n):]))
			if err != nil {
				return nil, err
			}
			if !found {
				return nil, fmt.Errorf("%w: %s entry %x has no record", ErrCorrupt, bucketIdemExpiry, k)
			}
			out = append(out, r)
		}
		return out, nil
	}
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		recs, err := due(tx)
		n = len(recs)
		return err
	})
	if err != nil || n == 0 {
		return 0, wrapErr(op, err)
	}
	n = 0
	err = s.db.Update(func(tx *bolt.Tx) error {
		recs, err := due(tx)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if err := deleteIdempotency(tx, r); err != nil {
				return err
			}
		}
		n = len(recs)
		return nil
	})
	if err != nil {
		return 0, wrapErr(op, err)
	}
	return n, nil
}

func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
