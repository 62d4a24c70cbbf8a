package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// Calls live in bucket calls: key = call ID, value = JSON of callRecord
// (callrecord.go) without its SDPs, which are kept apart as bytes (sdp.go).
// Two index buckets (schema 2) are kept in step by putCall, inside the
// transaction that writes the call:
//
//   - calls_by_conversation: key = conversation ID, 0x00, CreatedAt as
//     sortable big-endian unix nanoseconds, 0x00, call ID; empty value. Calls
//     walks one conversation's keys backwards for newest first, reading only
//     the calls it returns (plus, with ActiveOnly, the ended ones it skips).
//   - calls_ringing: key = call ID of each call in StatusRinging; empty
//     value. RingingCalls runs at every start; calls are never deleted, so
//     a scan would grow with the whole history (SDP bodies included) while
//     the ringing set stays a handful. One extra Put or Delete per write is
//     the cost.
//
// Schema 4 adds calls_active: key = call ID of each call in StatusRinging or
// StatusAnswered; empty value. ActiveCalls reads it so that the service can
// end answered calls that outlived their maximum duration without scanning
// the whole history. It is kept by putCall like calls_ringing.
//
// A third, calls_by_matrix_event (key = MatrixInviteEventID, value = call
// ID; bucket of schema 1), maps the Matrix invite of each call that has one
// to the call (CallByMatrixEvent, outbox.go). It needs no migration: nothing
// set MatrixInviteEventID before putCall kept it.
//
// Schema 5 adds calls_ended (retention.go): key = end time and call ID of
// each call in a terminal status; empty value. PruneEndedCalls walks it
// oldest first and deletes a call with every index entry it has; putCall
// keeps it like the others.

// CreateCall stores a new call; signaling.ErrConflict if the ID exists. The
// conversation is not checked (the service does). It is CreateCallOutbox
// (outbox.go) with no entries.
func (s *Store) CreateCall(ctx context.Context, c signaling.Call) error {
	return s.CreateCallOutbox(ctx, c, nil)
}

// UpdateCall applies fn to the stored call in one transaction and returns
// the result. If fn returns an error, nothing is written and that error is
// returned as is. fn may not change the call's ID or ConversationID
// (signaling.ErrInvalid). When fn sets RevokedUntil, or moves it later, the
// revocation is written in the same transaction; moving it earlier or
// clearing it leaves the stored revocation in force until it expires.
// signaling.ErrNotFound if there is no such call. It is UpdateCallOutbox
// (outbox.go) with an fn that appends nothing.
func (s *Store) UpdateCall(ctx context.Context, id string, fn func(*signaling.Call) error) (signaling.Call, error) {
	return s.UpdateCallOutbox(ctx, id, func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
		return nil, fn(c)
	})
}

// Call returns signaling.ErrNotFound if there is none with that ID.
func (s *Store) Call(ctx context.Context, id string) (signaling.Call, error) {
	const op = "get call"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Call{}, err
	}
	var c signaling.Call
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		c, err = getCall(tx, []byte(id))
		return err
	})
	if err != nil {
		return signaling.Call{}, fmt.Errorf("store: %s %q: %w", op, id, err)
	}
	return c, nil
}

// Calls lists a conversation's calls, newest first (by CreatedAt; calls
// created in the same nanosecond come in descending ID order).
// f.ConversationID is required; a negative Limit is invalid.
func (s *Store) Calls(ctx context.Context, f signaling.CallFilter) ([]signaling.Call, error) {
	const op = "list calls"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := checkKey("conversation ID", f.ConversationID); err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	if f.Limit < 0 {
		return nil, fmt.Errorf("store: %s: %w: limit %d is negative", op, signaling.ErrInvalid, f.Limit)
	}
	var out []signaling.Call
	err := s.db.View(func(tx *bolt.Tx) error {
		prefix := convPrefix(f.ConversationID)
		cur := tx.Bucket(bucketCallsByConv).Cursor()
		// The conversation's keys are the last ones before conv+0x01.
		k, _ := cur.Seek(append([]byte(f.ConversationID), 1))
		if k == nil {
			k, _ = cur.Last()
		} else {
			k, _ = cur.Prev()
		}
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) <= len(prefix)+9 || k[len(prefix)+8] != 0 {
				return fmt.Errorf("%w: malformed %s key %q", ErrCorrupt, bucketCallsByConv, k)
			}
			id := k[len(prefix)+9:]
			c, err := getCallRecord(tx, id)
			if err != nil {
				return fmt.Errorf("%s entry %q: %w", bucketCallsByConv, k, err)
			}
			if f.ActiveOnly && !isActive(c.Status) {
				continue
			}
			if !f.NoSDP {
				fillSDPs(tx, id, &c)
			}
			out = append(out, c)
			if f.Limit > 0 && len(out) == f.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s of conversation %q: %w", op, f.ConversationID, err)
	}
	return out, nil
}

// RingingCalls lists every call in StatusRinging, in ID order.
func (s *Store) RingingCalls(ctx context.Context) ([]signaling.Call, error) {
	const op = "ringing calls"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	var out []signaling.Call
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCallsRinging).ForEach(func(k, _ []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := getCall(tx, k)
			if err != nil {
				return fmt.Errorf("%s entry %q: %w", bucketCallsRinging, k, err)
			}
			if c.Status != signaling.StatusRinging {
				return fmt.Errorf("%w: call %q in %s is %s", ErrCorrupt, k, bucketCallsRinging, c.Status)
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return out, nil
}

// ActiveCalls lists every call in StatusRinging or StatusAnswered, in ID
// order.
func (s *Store) ActiveCalls(ctx context.Context) ([]signaling.Call, error) {
	const op = "active calls"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	var out []signaling.Call
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCallsActive).ForEach(func(k, _ []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			c, err := getCall(tx, k)
			if err != nil {
				return fmt.Errorf("%s entry %q: %w", bucketCallsActive, k, err)
			}
			if !isActive(c.Status) {
				return fmt.Errorf("%w: call %q in %s is %s", ErrCorrupt, k, bucketCallsActive, c.Status)
			}
			out = append(out, c)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return out, nil
}

// isActive reports whether a call in status st belongs in calls_active.
func isActive(st signaling.Status) bool {
	return st == signaling.StatusRinging || st == signaling.StatusAnswered
}

// getCall reads one call; signaling.ErrNotFound if there is none.
func getCall(tx *bolt.Tx, id []byte) (signaling.Call, error) {
	c, err := getCallRecord(tx, id)
	if err != nil {
		return signaling.Call{}, err
	}
	fillSDPs(tx, id, &c)
	return c, nil
}

// getCallRecord reads one call without the SDP bodies kept apart in
// call_sdps (records written before schema 5 may still hold theirs inline).
func getCallRecord(tx *bolt.Tx, id []byte) (signaling.Call, error) {
	raw := tx.Bucket(bucketCalls).Get(id)
	if raw == nil {
		return signaling.Call{}, signaling.ErrNotFound
	}
	return decodeCall(id, raw)
}

// putCall writes c and brings the indexes and revocations in step with it.
// old is the stored call, nil when c is new. The caller has checked that c's
// ID and ConversationID are usable keys and equal old's.
func putCall(tx *bolt.Tx, old *signaling.Call, c signaling.Call) error {
	rec := recordOf(c)
	rec.SDPOffer, rec.SDPAnswer = "", "" // stored apart, as bytes (sdp.go)
	raw, err := encode(rec)
	if err != nil {
		return fmt.Errorf("encode call: %w", err)
	}
	id := []byte(c.ID)
	if err := tx.Bucket(bucketCalls).Put(id, raw); err != nil {
		return err
	}
	if err := putSDPs(tx, old, c); err != nil {
		return err
	}

	byConv := tx.Bucket(bucketCallsByConv)
	key := convKey(c)
	if old != nil {
		if oldKey := convKey(*old); !bytes.Equal(oldKey, key) { // CreatedAt changed
			if err := byConv.Delete(oldKey); err != nil {
				return err
			}
		}
	}
	if err := byConv.Put(key, nil); err != nil {
		return err
	}

	ringing := tx.Bucket(bucketCallsRinging)
	if c.Status == signaling.StatusRinging {
		err = ringing.Put(id, nil)
	} else {
		err = ringing.Delete(id)
	}
	if err != nil {
		return err
	}

	active := tx.Bucket(bucketCallsActive)
	if isActive(c.Status) {
		err = active.Put(id, nil)
	} else {
		err = active.Delete(id)
	}
	if err != nil {
		return err
	}

	if err := indexEnded(tx, old, c); err != nil {
		return err
	}

	if err := indexMatrixInvite(tx, old, c); err != nil {
		return err
	}

	if c.RevokedUntil != nil && (old == nil || old.RevokedUntil == nil || !old.RevokedUntil.Equal(*c.RevokedUntil)) {
		return putRevocation(tx, signaling.Revocation{CallID: signaling.CredentialID(c.ID), Until: *c.RevokedUntil})
	}
	return nil
}

// indexMatrixInvite brings calls_by_matrix_event in step with c's
// MatrixInviteEventID. An event ID already indexed for another call is
// signaling.ErrConflict: Matrix event IDs are unique, so that is a bug
// upstream, and overwriting would make the other call unreachable.
func indexMatrixInvite(tx *bolt.Tx, old *signaling.Call, c signaling.Call) error {
	b := tx.Bucket(bucketCallsByMatrixEv)
	id := []byte(c.ID)
	if old != nil && old.MatrixInviteEventID != "" && old.MatrixInviteEventID != c.MatrixInviteEventID {
		oldKey := []byte(old.MatrixInviteEventID)
		if bytes.Equal(b.Get(oldKey), id) {
			if err := b.Delete(oldKey); err != nil {
				return err
			}
		}
	}
	if c.MatrixInviteEventID == "" {
		return nil
	}
	key := []byte(c.MatrixInviteEventID)
	switch v := b.Get(key); {
	case v == nil:
		return b.Put(key, id)
	case bytes.Equal(v, id):
		return nil
	default:
		return fmt.Errorf("%w: Matrix event %q is the invite of call %q", signaling.ErrConflict, key, v)
	}
}

// convPrefix is the calls_by_conversation prefix of one conversation's keys.
func convPrefix(convID string) []byte {
	return append([]byte(convID), 0)
}

// convKey is c's calls_by_conversation key. The sign bit of the nanoseconds
// is flipped so that times before 1970 still sort first.
func convKey(c signaling.Call) []byte {
	k := convPrefix(c.ConversationID)
	k = binary.BigEndian.AppendUint64(k, uint64(c.CreatedAt.UnixNano())^(1<<63))
	k = append(k, 0)
	return append(k, c.ID...)
}

// migrateCallIndexes is migration 1 → 2: it creates calls_by_conversation
// and calls_ringing and indexes the calls stored under schema 1.
func migrateCallIndexes(tx *bolt.Tx) error {
	for _, b := range [][]byte{bucketCallsByConv, bucketCallsRinging} {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("create bucket %s: %w", b, err)
		}
	}
	return tx.Bucket(bucketCalls).ForEach(func(k, v []byte) error {
		c, err := decodeCall(k, v)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketCallsByConv).Put(convKey(c), nil); err != nil {
			return err
		}
		if c.Status == signaling.StatusRinging {
			return tx.Bucket(bucketCallsRinging).Put(k, nil)
		}
		return nil
	})
}

// migrateActiveIndex is migration 3 → 4: it creates calls_active and
// indexes the ringing and answered calls already stored.
func migrateActiveIndex(tx *bolt.Tx) error {
	active, err := tx.CreateBucketIfNotExists(bucketCallsActive)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketCallsActive, err)
	}
	return tx.Bucket(bucketCalls).ForEach(func(k, v []byte) error {
		c, err := decodeCall(k, v)
		if err != nil {
			return err
		}
		if isActive(c.Status) {
			return active.Put(k, nil)
		}
		return nil
	})
}

func clonePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := *t
	return &v
}
