package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// icebox_conversation_users (schema 3) lists each user's conversations, as
// bbolt's conversations_by_user: one row per participant, keyed by user,
// the conversation's CreatedAt in unix nanoseconds and its ID, so that a
// page of a user's conversations, newest first, is an index range. Rows go
// with their conversation (ON DELETE CASCADE); PutConversation rewrites a
// conversation's rows in its transaction (indexUsers).

// indexUsers replaces the rows of c's participants.
func indexUsers(ctx context.Context, tx pgx.Tx, c signaling.Conversation) error {
	for _, u := range c.Participants {
		if !storable(u) {
			return fmt.Errorf("%w: a participant is not valid UTF-8 or holds NUL", signaling.ErrInvalid)
		}
	}
	if _, err := tx.Exec(ctx, `DELETE FROM icebox_conversation_users WHERE conversation_id = $1`, c.ID); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO icebox_conversation_users (user_id, created_ns, conversation_id)
		SELECT DISTINCT unnest($1::text[]), $2::bigint, $3::text`, c.Participants, c.CreatedAt.UnixNano(), c.ID)
	return err
}

// UserConversations lists the conversations user takes part in, newest
// first, at most limit, after the cursor.
func (s *Store) UserConversations(ctx context.Context, user string, after signaling.ConversationCursor, limit int) ([]signaling.Conversation, error) {
	const op = "list conversations of user"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	if err := checkKey("user ID", user); err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	if limit < 1 {
		return nil, fmt.Errorf("store: %s: %w: limit %d is not positive", op, signaling.ErrInvalid, limit)
	}
	if !storable(user) || !storable(after.ID) {
		return nil, nil // no such user or conversation can be stored
	}
	const q = `SELECT c.id, c.record FROM icebox_conversation_users u JOIN icebox_conversations c ON c.id = u.conversation_id
		WHERE u.user_id = $1 %s ORDER BY u.created_ns DESC, u.conversation_id DESC LIMIT %d`
	var (
		rows pgx.Rows
		err  error
	)
	if after.IsZero() {
		rows, err = s.pool.Query(ctx, fmt.Sprintf(q, "", limit), user)
	} else {
		rows, err = s.pool.Query(ctx, fmt.Sprintf(q, "AND (u.created_ns, u.conversation_id) < ($2, $3)", limit),
			user, after.CreatedAt.UnixNano(), after.ID)
	}
	if err != nil {
		return nil, wrap(fmt.Sprintf("%s %q", op, user), err)
	}
	defer rows.Close()
	var out []signaling.Conversation
	for rows.Next() {
		var (
			id  string
			raw []byte
			c   signaling.Conversation
		)
		if err := rows.Scan(&id, &raw); err != nil {
			return nil, wrap(fmt.Sprintf("%s %q", op, user), err)
		}
		if err := decode("conversation", id, raw, &c); err != nil {
			return nil, wrap(fmt.Sprintf("%s %q", op, user), err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(fmt.Sprintf("%s %q", op, user), err)
	}
	return out, nil
}

// fillConversationUsers indexes the conversations stored before schema 3
// (migration 2 → 3): their CreatedAt is in the JSON record, in
// nanoseconds, which SQL's timestamptz would round to microseconds.
func fillConversationUsers(ctx context.Context, tx pgx.Tx) error {
	rows, err := tx.Query(ctx, `SELECT id, record FROM icebox_conversations`)
	if err != nil {
		return err
	}
	var convs []signaling.Conversation
	for rows.Next() {
		var (
			id  string
			raw []byte
			c   signaling.Conversation
		)
		if err := rows.Scan(&id, &raw); err != nil {
			rows.Close()
			return err
		}
		if err := decode("conversation", id, raw, &c); err != nil {
			rows.Close()
			return err
		}
		convs = append(convs, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range convs {
		if err := indexUsers(ctx, tx, c); err != nil {
			return fmt.Errorf("conversation %q: %w", c.ID, err)
		}
	}
	return nil
}
