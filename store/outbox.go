package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// The outbox lives in bucket outbox: key = Seq as big-endian uint64 (so key
// order is Seq order), value = JSON of signaling.OutboxEntry with Seq filled
// in. Seq comes from the bucket's sequence (NextSequence), which bbolt
// stores with the bucket: it survives restarts and deletes, and rolls back
// with a failed transaction, so committed entries never share a Seq.
//
// The calls service appends entries in the transaction of the call
// transition that produced them (CreateCallOutbox, UpdateCallOutbox) or on
// their own (AppendOutbox). The Matrix bridge's worker reads them in order
// (PendingOutbox), and finishes each with CompleteOutbox, RetryOutbox or
// DropOutbox.

var _ signaling.OutboxStore = (*Store)(nil)

// eventCallInvite is the event type whose sending gives a call its
// MatrixInviteEventID (CompleteOutbox).
const eventCallInvite = "m.call.invite"

// CreateCallOutbox is CreateCall that also appends out, in one transaction:
// if the call cannot be created (signaling.ErrConflict, an invalid entry…),
// no entry is written either. Entries are stamped as AppendOutbox says.
func (s *Store) CreateCallOutbox(ctx context.Context, c signaling.Call, out []signaling.OutboxEntry) error {
	const op = "create call"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := checkKey("call ID", c.ID); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if err := checkKey("conversation ID", c.ConversationID); err != nil {
		return fmt.Errorf("store: %s %q: %w", op, c.ID, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putIdempotency(ctx, tx, c.ID); err != nil {
			return err
		}
		if tx.Bucket(bucketCalls).Get([]byte(c.ID)) != nil {
			return signaling.ErrConflict
		}
		if err := putCall(tx, nil, c); err != nil {
			return err
		}
		return appendOutbox(tx, out)
	})
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, c.ID, err)
	}
	signaling.IdempotencyFrom(ctx).Committed()
	return nil
}

// UpdateCallOutbox is UpdateCall (calls.go; same guards, revocation and
// indexes) whose fn also returns entries to append in the same transaction.
// If fn returns an error, nothing is written (neither the call nor any
// entry) and that error is returned as is. An invalid entry fails the whole
// update with signaling.ErrInvalid.
func (s *Store) UpdateCallOutbox(ctx context.Context, id string, fn func(*signaling.Call) ([]signaling.OutboxEntry, error)) (signaling.Call, error) {
	const op = "update call"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Call{}, err
	}
	var (
		c     signaling.Call
		fnErr error
	)
	err := s.db.Update(func(tx *bolt.Tx) error {
		old, err := getCall(tx, []byte(id))
		if err != nil {
			return err
		}
		if err := putIdempotency(ctx, tx, id); err != nil {
			return err
		}
		c = old
		// fn gets a copy whose pointer fields it may overwrite in place;
		// old's must keep the stored values for putCall's comparisons.
		c.AnsweredAt = clonePtr(old.AnsweredAt)
		c.EndedAt = clonePtr(old.EndedAt)
		c.RevokedUntil = clonePtr(old.RevokedUntil)
		var out []signaling.OutboxEntry
		if out, fnErr = fn(&c); fnErr != nil {
			return fnErr // rolls back: nothing written
		}
		if c.ID != old.ID || c.ConversationID != old.ConversationID {
			return fmt.Errorf("%w: the update changed the call's ID or conversation", signaling.ErrInvalid)
		}
		if err := putCall(tx, &old, c); err != nil {
			return err
		}
		return appendOutbox(tx, out)
	})
	if fnErr != nil {
		return signaling.Call{}, fnErr
	}
	if err != nil {
		return signaling.Call{}, fmt.Errorf("store: %s %q: %w", op, id, err)
	}
	signaling.IdempotencyFrom(ctx).Committed()
	return c, nil
}

// AppendOutbox appends out in one transaction; an empty out starts none.
// Each entry gets the next Seq (any Seq it carries is ignored); CreatedAt
// is kept if set, else the time of the append; TxnID is kept if set, else
// "icebox-<instance>-<Seq>", which stays the same however often the entry is retried.
// CallID, RoomID and EventType are required and Content must be a JSON
// object (signaling.ErrInvalid); one invalid entry writes none. The
// caller's slice is not modified.
func (s *Store) AppendOutbox(ctx context.Context, out []signaling.OutboxEntry) error {
	const op = "append outbox"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	claim := signaling.IdempotencyFrom(ctx)
	if len(out) == 0 && claim == nil {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		callID := ""
		if len(out) > 0 {
			callID = out[0].CallID
		}
		if err := putIdempotency(ctx, tx, callID); err != nil {
			return err
		}
		return appendOutbox(tx, out)
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	claim.Committed()
	return nil
}

// PendingOutbox returns the oldest entries, in Seq order, at most limit of
// them (0 = all; negative is signaling.ErrInvalid). It returns entries
// whose NextAttempt is still ahead too: the worker sends in order per call,
// so a call's entry that waits holds back the ones behind it, and only the
// worker knows which calls it has given up on.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]signaling.OutboxEntry, error) {
	const op = "pending outbox"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("store: %s: %w: limit %d is negative", op, signaling.ErrInvalid, limit)
	}
	var out []signaling.OutboxEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketOutbox).Cursor()
		for k, v := cur.First(); k != nil; k, v = cur.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			e, err := decodeEntry(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			if limit > 0 && len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return out, nil
}

// OutboxDepth is the number of entries in the outbox (for the outbox depth
// gauge).
func (s *Store) OutboxDepth(ctx context.Context) (int, error) {
	const op = "outbox depth"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketOutbox).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: %s: %w", op, err)
	}
	return n, nil
}

// CompleteOutbox deletes entry seq once it was sent as Matrix event
// eventID. If the entry is an m.call.invite and eventID is not empty, its
// call (if it exists and has none yet) gets MatrixInviteEventID = eventID,
// indexed for CallByMatrixEvent, in the same transaction. An unknown seq
// (already completed or dropped) is not an error, and commits nothing.
func (s *Store) CompleteOutbox(ctx context.Context, seq uint64, eventID string) error {
	op := "complete outbox entry " + strconv.FormatUint(seq, 10)
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		key := seqKey(seq)
		raw := b.Get(key)
		if raw == nil {
			return errNoChange
		}
		e, err := decodeEntry(key, raw)
		if err != nil {
			return err
		}
		if e.EventType == eventCallInvite && eventID != "" {
			if err := setInviteEvent(tx, e.CallID, eventID); err != nil {
				return err
			}
		}
		return b.Delete(key)
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// RetryOutbox records a failed send of entry seq: its Attempts and
// NextAttempt become attempts and next. signaling.ErrNotFound if there is
// no such entry; signaling.ErrInvalid if attempts is negative.
func (s *Store) RetryOutbox(ctx context.Context, seq uint64, attempts int, next time.Time) error {
	op := "retry outbox entry " + strconv.FormatUint(seq, 10)
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if attempts < 0 {
		return fmt.Errorf("store: %s: %w: attempts %d is negative", op, signaling.ErrInvalid, attempts)
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		key := seqKey(seq)
		raw := b.Get(key)
		if raw == nil {
			return signaling.ErrNotFound
		}
		e, err := decodeEntry(key, raw)
		if err != nil {
			return err
		}
		e.Attempts = attempts
		e.NextAttempt = next
		return putEntry(b, e)
	})
	if err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// DropOutbox deletes entry seq without sending it and without side effects
// (a dropped invite gives its call no MatrixInviteEventID). The value is
// not decoded, so a corrupt entry can be dropped. An unknown seq is not an
// error, and commits nothing.
func (s *Store) DropOutbox(ctx context.Context, seq uint64) error {
	op := "drop outbox entry " + strconv.FormatUint(seq, 10)
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOutbox)
		key := seqKey(seq)
		if b.Get(key) == nil {
			return errNoChange
		}
		return b.Delete(key)
	})
	if err != nil && !errors.Is(err, errNoChange) {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// CallByMatrixEvent returns the call whose Matrix invite is eventID;
// signaling.ErrNotFound if there is none.
func (s *Store) CallByMatrixEvent(ctx context.Context, eventID string) (signaling.Call, error) {
	const op = "call by Matrix event"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Call{}, err
	}
	var c signaling.Call
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketCallsByMatrixEv).Get([]byte(eventID))
		if id == nil {
			return signaling.ErrNotFound
		}
		var err error
		c, err = getCall(tx, id)
		if errors.Is(err, signaling.ErrNotFound) {
			return fmt.Errorf("%w: %s entry points to missing call %q", ErrCorrupt, bucketCallsByMatrixEv, id)
		}
		return err
	})
	if err != nil {
		return signaling.Call{}, fmt.Errorf("store: %s %q: %w", op, eventID, err)
	}
	return c, nil
}

// appendOutbox writes out at the end of the outbox, stamping each entry as
// AppendOutbox says. out itself is not modified.
func appendOutbox(tx *bolt.Tx, out []signaling.OutboxEntry) error {
	if len(out) == 0 {
		return nil
	}
	b := tx.Bucket(bucketOutbox)
	instance := string(tx.Bucket(bucketMeta).Get(keyInstance))
	now := time.Now().UTC()
	for i, e := range out { // e is a copy
		if err := checkEntry(e); err != nil {
			return fmt.Errorf("outbox entry %d: %w", i, err)
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		e.Seq = seq
		if e.CreatedAt.IsZero() {
			e.CreatedAt = now
		}
		if e.TxnID == "" {
			e.TxnID = "icebox-" + instance + "-" + strconv.FormatUint(seq, 10)
		}
		if err := putEntry(b, e); err != nil {
			return fmt.Errorf("outbox entry %d: %w", i, err)
		}
	}
	return nil
}

// checkEntry rejects an entry the worker could not send.
func checkEntry(e signaling.OutboxEntry) error {
	for _, f := range []struct{ what, v string }{
		{"call ID", e.CallID}, {"room ID", e.RoomID}, {"event type", e.EventType},
	} {
		if f.v == "" {
			return fmt.Errorf("%w: %s is empty", signaling.ErrInvalid, f.what)
		}
	}
	if c := bytes.TrimLeft(e.Content, " \t\r\n"); len(c) == 0 || c[0] != '{' || !json.Valid(c) {
		return fmt.Errorf("%w: %s content is not a JSON object", signaling.ErrInvalid, e.EventType)
	}
	return nil
}

// putEntry writes e under its Seq.
func putEntry(b *bolt.Bucket, e signaling.OutboxEntry) error {
	raw, err := encode(e)
	if err != nil {
		return fmt.Errorf("encode outbox entry %d: %w", e.Seq, err)
	}
	return b.Put(seqKey(e.Seq), raw)
}

// decodeEntry reads a stored entry and checks that it is stored under its
// own Seq.
func decodeEntry(k, v []byte) (signaling.OutboxEntry, error) {
	if len(k) != 8 {
		return signaling.OutboxEntry{}, fmt.Errorf("%w: %s key %x has %d bytes", ErrCorrupt, bucketOutbox, k, len(k))
	}
	seq := binary.BigEndian.Uint64(k)
	var e signaling.OutboxEntry
	if err := decode("outbox entry", []byte(strconv.FormatUint(seq, 10)), v, &e); err != nil {
		return signaling.OutboxEntry{}, err
	}
	if e.Seq != seq {
		return signaling.OutboxEntry{}, fmt.Errorf("%w: outbox entry %d has seq %d", ErrCorrupt, seq, e.Seq)
	}
	return e, nil
}

// seqKey is the outbox key of seq.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq)
}

// setInviteEvent gives call id its Matrix invite's event ID, unless the
// call is gone or already has one (a resend that returned the same event,
// or an inbound invite's).
func setInviteEvent(tx *bolt.Tx, id, eventID string) error {
	old, err := getCall(tx, []byte(id))
	if errors.Is(err, signaling.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if old.MatrixInviteEventID != "" {
		return nil
	}
	c := old
	c.MatrixInviteEventID = eventID
	return putCall(tx, &old, c)
}
