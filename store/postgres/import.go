package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/snapshot"
)

// Import writes snap into this database in one transaction: all of it, or
// (on any error) nothing. A database that holds any state already is
// ErrNotEmpty: a copy never merges. The database takes snap's instance ID
// and continues the outbox's seqs above snap.OutboxSeq, so entries
// appended after the copy never reuse a transaction ID of the source's.
func (s *Store) Import(ctx context.Context, snap *snapshot.Snapshot) error {
	return s.ImportWithDevice(ctx, snap, nil)
}

// ImportWithDevice is Import, and writes the Matrix device dev (nil: none)
// in the same transaction; a database that holds a device already is
// ErrDeviceExists, and nothing is written.
func (s *Store) ImportWithDevice(ctx context.Context, snap *snapshot.Snapshot, dev *MatrixDevice) error {
	const op = "import"
	err := s.tx(ctx, func(tx pgx.Tx) error {
		// Nothing else may write while the copy runs (a node started too
		// early): it would merge, or be overwritten.
		if _, err := tx.Exec(ctx, `LOCK TABLE icebox_conversations, icebox_calls, icebox_revocations, icebox_outbox,
			icebox_seen_events, icebox_sync IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		n, err := counts(ctx, tx)
		if err != nil {
			return err
		}
		if n != (snapshot.Counts{}) {
			return fmt.Errorf("%w: it holds %+v; copy into an empty database (or drop its icebox_* tables)", ErrNotEmpty, n)
		}
		if err := s.importConversations(ctx, tx, snap); err != nil {
			return err
		}
		for _, c := range snap.Calls {
			if !storable(c.ID) || !storable(c.ConversationID) || !storable(c.MatrixInviteEventID) {
				return fmt.Errorf("%w: call %q: an ID is not valid UTF-8 or holds NUL, which PostgreSQL cannot store", signaling.ErrInvalid, c.ID)
			}
			raw, err := s.records.EncodeCall(c)
			if err != nil {
				return err
			}
			// The row only: the source's revocations are copied as they
			// are below (a call's may have expired and been pruned).
			if err := writeCallRow(ctx, tx, true, c, raw); err != nil {
				return fmt.Errorf("call %q: %w", c.ID, err)
			}
		}
		for _, r := range snap.Revocations {
			if err := putRevocation(ctx, tx, r); err != nil {
				return fmt.Errorf("revocation %q: %w", r.CallID, err)
			}
		}
		maxSeq := snap.OutboxSeq
		for _, e := range snap.Outbox {
			raw, err := encode(e)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO icebox_outbox (seq, call_id, record) VALUES ($1, $2, $3)`, int64(e.Seq), e.CallID, raw); err != nil {
				return fmt.Errorf("outbox entry %d: %w", e.Seq, err)
			}
			maxSeq = max(maxSeq, e.Seq)
		}
		if maxSeq > 0 {
			if _, err := tx.Exec(ctx, `SELECT setval('icebox_outbox_seq', $1)`, int64(maxSeq)); err != nil {
				return err
			}
		}
		for _, ev := range snap.SeenEvents {
			if _, err := tx.Exec(ctx, `INSERT INTO icebox_seen_events (event_id, seen_ns) VALUES ($1, $2)`, ev.ID, ev.At.UnixNano()); err != nil {
				return fmt.Errorf("seen event %q: %w", ev.ID, err)
			}
		}
		for k, v := range snap.Sync {
			if _, err := tx.Exec(ctx, `INSERT INTO icebox_sync (key, value) VALUES ($1, $2)`, k, v); err != nil {
				return fmt.Errorf("sync value %q: %w", k, err)
			}
		}
		if dev != nil {
			if err := importDevice(ctx, tx, dev); err != nil {
				return err
			}
		}
		if snap.InstanceID != "" {
			if _, err := tx.Exec(ctx, `UPDATE icebox_meta SET value = $1 WHERE key = 'instance_id'`, snap.InstanceID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap(op, err)
	}
	if snap.InstanceID != "" {
		s.instance = snap.InstanceID
	}
	return nil
}

// importConversations writes the conversations, each room indexed as the
// source indexed it (a room an old schema let two conversations name stays
// with the one the source routes it to; the other keeps it in its record
// only, as on bbolt).
func (s *Store) importConversations(ctx context.Context, tx pgx.Tx, snap *snapshot.Snapshot) error {
	for _, c := range snap.Conversations {
		if !storable(c.ID) || !storable(c.RoomID) {
			return fmt.Errorf("%w: conversation %q: an ID is not valid UTF-8 or holds NUL, which PostgreSQL cannot store", signaling.ErrInvalid, c.ID)
		}
		raw, err := encode(c)
		if err != nil {
			return err
		}
		room := c.RoomID
		if room != "" && snap.RoomIndex[room] != c.ID {
			room = ""
		}
		if _, err := tx.Exec(ctx, `INSERT INTO icebox_conversations (id, room_id, record) VALUES ($1, $2, $3)`, c.ID, nullText(room), raw); err != nil {
			return fmt.Errorf("conversation %q: %w", c.ID, err)
		}
		if err := indexUsers(ctx, tx, c); err != nil {
			return fmt.Errorf("conversation %q: %w", c.ID, err)
		}
	}
	return nil
}

// Counts is how many of each the database holds.
func (s *Store) Counts(ctx context.Context) (snapshot.Counts, error) {
	n, err := counts(ctx, s.pool)
	return n, wrap("counts", err)
}

func counts(ctx context.Context, q rowQuerier) (snapshot.Counts, error) {
	var n snapshot.Counts
	err := q.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM icebox_conversations), (SELECT count(*) FROM icebox_calls),
		(SELECT count(*) FROM icebox_outbox), (SELECT count(*) FROM icebox_revocations),
		(SELECT count(*) FROM icebox_seen_events), (SELECT count(*) FROM icebox_sync)`).
		Scan(&n.Conversations, &n.Calls, &n.Outbox, &n.Revocations, &n.SeenEvents, &n.Sync)
	return n, err
}
