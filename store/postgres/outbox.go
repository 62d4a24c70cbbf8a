package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// The outbox lives in icebox_outbox: seq from the sequence
// icebox_outbox_seq, the entry's JSON (as on bbolt). A sequence does not
// roll back, so seqs may have gaps; they never repeat.
//
// Order per call: a transaction that appends a call's entries first takes
// a transaction-scoped advisory lock on the call ID, then draws its seqs;
// so for any one call, seq order is commit order, and the Matrix worker,
// which sends in seq order per call, never sees a later entry of a call
// commit before an earlier one (PostgreSQL, unlike bbolt, has more than
// one writer at a time).

var _ signaling.OutboxStore = (*Store)(nil)

// CreateCallOutbox is CreateCall that also appends out, in one transaction.
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
	if !storable(c.ID) || !storable(c.ConversationID) {
		return fmt.Errorf("store: %s %q: %w: the ID or conversation ID is not valid UTF-8", op, c.ID, signaling.ErrInvalid)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := putIdempotency(ctx, tx, c.ID); err != nil {
			return err
		}
		// The row lock of a new call is its insert: a second create of
		// the same ID waits for the first and then finds it.
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM icebox_calls WHERE id = $1)`, c.ID).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return signaling.ErrConflict
		}
		if err := s.putCall(ctx, tx, nil, c); err != nil {
			if isUnique(err) {
				return signaling.ErrConflict
			}
			return err
		}
		if err := s.appendOutbox(ctx, tx, out); err != nil {
			return err
		}
		items, err := s.txFeed(ctx, revoked(nil, c))
		if err != nil {
			return err
		}
		return s.writeFeed(ctx, tx, items)
	})
	if err != nil {
		if isUnique(err) { // the same ID created on another node meanwhile
			err = signaling.ErrConflict
		}
		return wrap(fmt.Sprintf("%s %q", op, c.ID), err)
	}
	signaling.IdempotencyFrom(ctx).Committed()
	return nil
}

// UpdateCallOutbox is UpdateCall whose fn also returns entries to append in
// the same transaction. The call's row is locked (FOR UPDATE) before fn
// sees it: a transition racing on another node waits, then applies its fn
// to the call this one committed.
func (s *Store) UpdateCallOutbox(ctx context.Context, id string, fn func(*signaling.Call) ([]signaling.OutboxEntry, error)) (signaling.Call, error) {
	const op = "update call"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Call{}, err
	}
	if !storable(id) {
		return signaling.Call{}, fmt.Errorf("store: %s %q: %w", op, id, signaling.ErrNotFound)
	}
	var (
		c     signaling.Call
		fnErr error
	)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// Before the call's row lock: a retry of this request waits on
		// the key, not on the call (and every transition takes them in
		// this order).
		if err := putIdempotency(ctx, tx, id); err != nil {
			return err
		}
		old, err := s.getCall(ctx, tx, id, " FOR UPDATE")
		if err != nil {
			return err
		}
		c = old
		c.AnsweredAt = clonePtr(old.AnsweredAt)
		c.EndedAt = clonePtr(old.EndedAt)
		c.RevokedUntil = clonePtr(old.RevokedUntil)
		var out []signaling.OutboxEntry
		if out, fnErr = fn(&c); fnErr != nil {
			return fnErr
		}
		if c.ID != old.ID || c.ConversationID != old.ConversationID {
			return fmt.Errorf("%w: the update changed the call's ID or conversation", signaling.ErrInvalid)
		}
		if err := s.putCall(ctx, tx, &old, c); err != nil {
			return err
		}
		if err := s.appendOutbox(ctx, tx, out); err != nil {
			return err
		}
		items, err := s.txFeed(ctx, revoked(&old, c))
		if err != nil {
			return err
		}
		return s.writeFeed(ctx, tx, items)
	})
	if fnErr != nil {
		return signaling.Call{}, fnErr
	}
	if err != nil {
		return signaling.Call{}, wrap(fmt.Sprintf("%s %q", op, id), err)
	}
	signaling.IdempotencyFrom(ctx).Committed()
	return c, nil
}

// AppendOutbox appends out in one transaction (see store.Store.AppendOutbox
// for how entries are stamped).
func (s *Store) AppendOutbox(ctx context.Context, out []signaling.OutboxEntry) error {
	const op = "append outbox"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	claim := signaling.IdempotencyFrom(ctx)
	if len(out) == 0 && (!s.feed || signaling.TxEventsFrom(ctx) == nil) && claim == nil {
		return nil
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		callID := ""
		if len(out) > 0 {
			callID = out[0].CallID
		}
		if err := putIdempotency(ctx, tx, callID); err != nil {
			return err
		}
		if err := s.appendOutbox(ctx, tx, out); err != nil {
			return err
		}
		items, err := s.txFeed(ctx, nil)
		if err != nil {
			return err
		}
		return s.writeFeed(ctx, tx, items)
	})
	if err != nil {
		return wrap(op, err)
	}
	claim.Committed()
	return nil
}

// appendOutbox writes out at the end of the outbox in tx.
func (s *Store) appendOutbox(ctx context.Context, tx pgx.Tx, out []signaling.OutboxEntry) error {
	if len(out) == 0 {
		return nil
	}
	calls := make([]string, 0, len(out))
	for i, e := range out {
		if err := checkEntry(e); err != nil {
			return fmt.Errorf("outbox entry %d: %w", i, err)
		}
		if !storable(e.CallID) {
			return fmt.Errorf("outbox entry %d: %w: call ID is not valid UTF-8", i, signaling.ErrInvalid)
		}
		calls = append(calls, e.CallID)
	}
	// Sorted, so that two transactions appending for the same calls take
	// the locks in the same order and cannot deadlock.
	slices.Sort(calls)
	for _, id := range slices.Compact(calls) {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, id); err != nil {
			return err
		}
	}
	now := time.Now().UTC()
	for i, e := range out { // e is a copy
		var seq int64
		if err := tx.QueryRow(ctx, `SELECT nextval('icebox_outbox_seq')`).Scan(&seq); err != nil {
			return err
		}
		e.Seq = uint64(seq)
		if e.CreatedAt.IsZero() {
			e.CreatedAt = now
		}
		if e.TxnID == "" {
			e.TxnID = "icebox-" + s.instance + "-" + strconv.FormatUint(e.Seq, 10)
		}
		raw, err := encode(e)
		if err != nil {
			return fmt.Errorf("outbox entry %d: encode: %w", i, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO icebox_outbox (seq, call_id, record) VALUES ($1, $2, $3)`, seq, e.CallID, raw); err != nil {
			return err
		}
	}
	return nil
}

// PendingOutbox returns the oldest entries, in Seq order, at most limit of
// them (0 = all), whether due or not.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]signaling.OutboxEntry, error) {
	const op = "pending outbox"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if limit < 0 {
		return nil, fmt.Errorf("store: %s: %w: limit %d is negative", op, signaling.ErrInvalid, limit)
	}
	q := `SELECT seq, record FROM icebox_outbox ORDER BY seq`
	var args []any
	if limit > 0 {
		q += ` LIMIT $1`
		args = append(args, limit)
	}
	out, err := queryEntries(ctx, s.pool, q, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

func queryEntries(ctx context.Context, q rowQuerier, sql string, args ...any) ([]signaling.OutboxEntry, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []signaling.OutboxEntry
	for rows.Next() {
		var (
			seq int64
			raw []byte
		)
		if err := rows.Scan(&seq, &raw); err != nil {
			return nil, err
		}
		e, err := decodeEntry(seq, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func decodeEntry(seq int64, raw []byte) (signaling.OutboxEntry, error) {
	var e signaling.OutboxEntry
	if err := decode("outbox entry", strconv.FormatInt(seq, 10), raw, &e); err != nil {
		return signaling.OutboxEntry{}, err
	}
	if e.Seq != uint64(seq) {
		return signaling.OutboxEntry{}, fmt.Errorf("%w: outbox entry %d has seq %d", ErrCorrupt, seq, e.Seq)
	}
	return e, nil
}

// OutboxDepth is the number of entries in the outbox.
func (s *Store) OutboxDepth(ctx context.Context) (int, error) {
	const op = "outbox depth"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM icebox_outbox`).Scan(&n); err != nil {
		return 0, wrap(op, err)
	}
	return n, nil
}

// CompleteOutbox deletes entry seq once it was sent as Matrix event
// eventID; an m.call.invite gives its call MatrixInviteEventID in the same
// transaction. An unknown seq is not an error.
func (s *Store) CompleteOutbox(ctx context.Context, seq uint64, eventID string) error {
	op := "complete outbox entry " + strconv.FormatUint(seq, 10)
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		e, err := lockEntry(ctx, tx, seq)
		if err != nil {
			return err
		}
		if e.EventType == eventCallInvite && eventID != "" {
			if err := s.setInviteEvent(ctx, tx, e.CallID, eventID); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `DELETE FROM icebox_outbox WHERE seq = $1`, int64(seq))
		return err
	})
	if err != nil && !errors.Is(err, signaling.ErrNotFound) {
		return wrap(op, err)
	}
	return nil
}

// lockEntry reads entry seq, locking its row; signaling.ErrNotFound if
// there is none.
func lockEntry(ctx context.Context, tx pgx.Tx, seq uint64) (signaling.OutboxEntry, error) {
	if seq > 1<<63-1 {
		return signaling.OutboxEntry{}, signaling.ErrNotFound
	}
	var raw []byte
	err := tx.QueryRow(ctx, `SELECT record FROM icebox_outbox WHERE seq = $1 FOR UPDATE`, int64(seq)).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return signaling.OutboxEntry{}, signaling.ErrNotFound
	}
	if err != nil {
		return signaling.OutboxEntry{}, err
	}
	return decodeEntry(int64(seq), raw)
}

// RetryOutbox records a failed send of entry seq. signaling.ErrNotFound if
// there is no such entry; signaling.ErrInvalid if attempts is negative.
func (s *Store) RetryOutbox(ctx context.Context, seq uint64, attempts int, next time.Time) error {
	op := "retry outbox entry " + strconv.FormatUint(seq, 10)
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if attempts < 0 {
		return fmt.Errorf("store: %s: %w: attempts %d is negative", op, signaling.ErrInvalid, attempts)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		e, err := lockEntry(ctx, tx, seq)
		if err != nil {
			return err
		}
		e.Attempts, e.NextAttempt = attempts, next
		raw, err := encode(e)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE icebox_outbox SET record = $2 WHERE seq = $1`, int64(seq), raw)
		return err
	})
	return wrap(op, err)
}

// DropOutbox deletes entry seq without sending it and without side
// effects. An unknown seq is not an error.
func (s *Store) DropOutbox(ctx context.Context, seq uint64) error {
	op := "drop outbox entry " + strconv.FormatUint(seq, 10)
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if seq > 1<<63-1 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM icebox_outbox WHERE seq = $1`, int64(seq))
	return wrap(op, err)
}

// CallByMatrixEvent returns the call whose Matrix invite is eventID;
// signaling.ErrNotFound if there is none.
func (s *Store) CallByMatrixEvent(ctx context.Context, eventID string) (signaling.Call, error) {
	const op = "call by Matrix event"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Call{}, err
	}
	if eventID == "" || !storable(eventID) {
		return signaling.Call{}, fmt.Errorf("store: %s %q: %w", op, eventID, signaling.ErrNotFound)
	}
	out, err := s.queryCalls(ctx, s.pool, `SELECT `+callColumns+` FROM icebox_calls WHERE matrix_invite_id = $1`, eventID)
	if err == nil && len(out) == 0 {
		err = signaling.ErrNotFound
	}
	if err != nil {
		return signaling.Call{}, wrap(fmt.Sprintf("%s %q", op, eventID), err)
	}
	return out[0], nil
}

// setInviteEvent gives call id its Matrix invite's event ID, unless the
// call is gone or already has one.
func (s *Store) setInviteEvent(ctx context.Context, tx pgx.Tx, id, eventID string) error {
	old, err := s.getCall(ctx, tx, id, " FOR UPDATE")
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
	return s.putCall(ctx, tx, &old, c)
}

func clonePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := *t
	return &v
}
