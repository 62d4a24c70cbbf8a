package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// callColumns are what a call is read from: its record and SDPs.
const callColumns = `id, record, sdp_offer, sdp_answer`

// CreateCall stores a new call; signaling.ErrConflict if the ID exists.
func (s *Store) CreateCall(ctx context.Context, c signaling.Call) error {
	return s.CreateCallOutbox(ctx, c, nil)
}

// UpdateCall applies fn to the stored call in one transaction, holding the
// call's row lock, and returns the result; see store.Store.UpdateCall.
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
	if !storable(id) {
		return signaling.Call{}, fmt.Errorf("store: %s %q: %w", op, id, signaling.ErrNotFound)
	}
	c, err := s.getCall(ctx, s.pool, id, "")
	if err != nil {
		return signaling.Call{}, wrap(fmt.Sprintf("%s %q", op, id), err)
	}
	return c, nil
}

// Calls lists a conversation's calls, newest first (by CreatedAt; calls
// created in the same nanosecond come in descending ID order).
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
	if !storable(f.ConversationID) {
		return nil, nil
	}
	cols := callColumns
	if f.NoSDP {
		cols = `id, record, NULL::bytea, NULL::bytea`
	}
	q := `SELECT ` + cols + ` FROM icebox_calls WHERE conversation_id = $1`
	if f.ActiveOnly {
		q += ` AND status IN ('ringing', 'answered')`
	}
	q += ` ORDER BY created_ns DESC, id DESC`
	args := []any{f.ConversationID}
	if f.Limit > 0 {
		q += ` LIMIT $2`
		args = append(args, f.Limit)
	}
	out, err := s.queryCalls(ctx, s.pool, q, args...)
	if err != nil {
		return nil, wrap(fmt.Sprintf("%s of conversation %q", op, f.ConversationID), err)
	}
	return out, nil
}

// RingingCalls lists every call in StatusRinging, in ID order.
func (s *Store) RingingCalls(ctx context.Context) ([]signaling.Call, error) {
	const op = "ringing calls"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	out, err := s.queryCalls(ctx, s.pool, `SELECT `+callColumns+` FROM icebox_calls WHERE status = 'ringing' ORDER BY id`)
	if err != nil {
		return nil, wrap(op, err)
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
	out, err := s.queryCalls(ctx, s.pool, `SELECT `+callColumns+` FROM icebox_calls WHERE status IN ('ringing', 'answered') ORDER BY id`)
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// PruneEndedCalls deletes up to limit calls that ended before before,
// oldest first, in one transaction, and returns how many it deleted. Rows
// another node is deleting are skipped (SKIP LOCKED), so two nodes pruning
// at once delete each call once.
func (s *Store) PruneEndedCalls(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "prune ended calls"
	if err := checkCtx(ctx, op); err != nil {
		return 0, err
	}
	if limit <= 0 {
		return 0, fmt.Errorf("store: %s: %w: limit %d is not positive", op, signaling.ErrInvalid, limit)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM icebox_calls WHERE id IN (
		SELECT id FROM icebox_calls WHERE ended_ns IS NOT NULL AND ended_ns < $1
		ORDER BY ended_ns, id LIMIT $2 FOR UPDATE SKIP LOCKED)`, before.UnixNano(), limit)
	if err != nil {
		return 0, wrap(op, err)
	}
	return int(tag.RowsAffected()), nil
}

// rowQuerier is a pool or a transaction.
type rowQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// getCall reads one call; signaling.ErrNotFound if there is none. lock is
// "" or " FOR UPDATE" (in a transaction).
func (s *Store) getCall(ctx context.Context, q rowQuerier, id, lock string) (signaling.Call, error) {
	var (
		rid                string
		raw, offer, answer []byte
	)
	err := q.QueryRow(ctx, `SELECT `+callColumns+` FROM icebox_calls WHERE id = $1`+lock, id).Scan(&rid, &raw, &offer, &answer)
	if errors.Is(err, pgx.ErrNoRows) {
		return signaling.Call{}, signaling.ErrNotFound
	}
	if err != nil {
		return signaling.Call{}, err
	}
	return s.decodeCall(rid, raw, offer, answer)
}

func (s *Store) decodeCall(id string, raw, offer, answer []byte) (signaling.Call, error) {
	c, err := s.records.DecodeCall(id, raw)
	if err != nil {
		return signaling.Call{}, err
	}
	if c.SDPOffer == "" {
		c.SDPOffer = string(offer)
	}
	if c.SDPAnswer == "" {
		c.SDPAnswer = string(answer)
	}
	return c, nil
}

func (s *Store) queryCalls(ctx context.Context, q rowQuerier, sql string, args ...any) ([]signaling.Call, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []signaling.Call
	for rows.Next() {
		var (
			id                 string
			raw, offer, answer []byte
		)
		if err := rows.Scan(&id, &raw, &offer, &answer); err != nil {
			return nil, err
		}
		c, err := s.decodeCall(id, raw, offer, answer)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// putCall writes c (old is the stored call, nil when c is new) and its
// revocation. The caller holds c's row lock (or is inserting it).
func (s *Store) putCall(ctx context.Context, tx pgx.Tx, old *signaling.Call, c signaling.Call) error {
	raw, err := s.records.EncodeCall(c)
	if err != nil {
		return err
	}
	if !storable(c.MatrixInviteEventID) {
		return fmt.Errorf("%w: Matrix event ID %q cannot be stored", signaling.ErrInvalid, c.MatrixInviteEventID)
	}
	if c.MatrixInviteEventID != "" && (old == nil || old.MatrixInviteEventID != c.MatrixInviteEventID) {
		var other string
		err := tx.QueryRow(ctx, `SELECT id FROM icebox_calls WHERE matrix_invite_id = $1 AND id <> $2`, c.MatrixInviteEventID, c.ID).Scan(&other)
		switch {
		case err == nil:
			return fmt.Errorf("%w: Matrix event %q is the invite of call %q", signaling.ErrConflict, c.MatrixInviteEventID, other)
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
	}
	if err := writeCallRow(ctx, tx, old == nil, c, raw); err != nil {
		return err
	}
	if c.RevokedUntil != nil && (old == nil || old.RevokedUntil == nil || !old.RevokedUntil.Equal(*c.RevokedUntil)) {
		return putRevocation(ctx, tx, signaling.Revocation{CallID: signaling.CredentialID(c.ID), Until: *c.RevokedUntil})
	}
	return nil
}

// writeCallRow inserts (insert) or updates c's row, its record raw.
func writeCallRow(ctx context.Context, tx pgx.Tx, insert bool, c signaling.Call, raw []byte) error {
	var ended *int64
	if c.Status.Terminal() {
		at := c.CreatedAt
		if c.EndedAt != nil {
			at = *c.EndedAt
		}
		n := at.UnixNano()
		ended = &n
	}
	args := []any{c.ID, c.ConversationID, c.CreatedAt.UnixNano(), string(c.Status), ended,
		nullText(c.MatrixInviteEventID), raw, nullBytes(c.SDPOffer), nullBytes(c.SDPAnswer)}
	var err error
	if insert {
		_, err = tx.Exec(ctx, `INSERT INTO icebox_calls (id, conversation_id, created_ns, status, ended_ns, matrix_invite_id, record, sdp_offer, sdp_answer)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, args...)
	} else {
		_, err = tx.Exec(ctx, `UPDATE icebox_calls SET conversation_id = $2, created_ns = $3, status = $4, ended_ns = $5,
			matrix_invite_id = $6, record = $7, sdp_offer = $8, sdp_answer = $9 WHERE id = $1`, args...)
	}
	switch {
	case isUniqueOn(err, "icebox_calls_pkey"): // created on another node meanwhile
		return signaling.ErrConflict
	case isUnique(err):
		return fmt.Errorf("%w: Matrix event %q is the invite of another call", signaling.ErrConflict, c.MatrixInviteEventID)
	}
	return err
}

// storable reports whether s can be a PostgreSQL text value (bbolt takes
// any bytes; text takes neither NUL nor invalid UTF-8). An unstorable ID
// cannot be stored, so looking it up finds nothing.
func storable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func nullText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}
