package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// Conversations live in icebox_conversations: the JSON of
// signaling.Conversation (as on bbolt) and its room, unique (the room
// index of bbolt's conversations_by_room).

// PutConversation creates or replaces a conversation. A RoomID that
// belongs to another conversation is signaling.ErrConflict, and nothing is
// written.
func (s *Store) PutConversation(ctx context.Context, c signaling.Conversation) error {
	const op = "put conversation"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if err := checkKey("conversation ID", c.ID); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	if !storable(c.ID) || !storable(c.RoomID) {
		return fmt.Errorf("store: %s %q: %w: the ID or room ID is not valid UTF-8", op, c.ID, signaling.ErrInvalid)
	}
	raw, err := encode(c)
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, c.ID, err)
	}
	err = s.tx(ctx, func(tx pgx.Tx) error {
		if c.RoomID != "" {
			var other string
			err := tx.QueryRow(ctx, `SELECT id FROM icebox_conversations WHERE room_id = $1 AND id <> $2`, c.RoomID, c.ID).Scan(&other)
			switch {
			case err == nil:
				return fmt.Errorf("%w: room %q belongs to conversation %q", signaling.ErrConflict, c.RoomID, other)
			case !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO icebox_conversations (id, room_id, record) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO UPDATE SET room_id = EXCLUDED.room_id, record = EXCLUDED.record`, c.ID, nullText(c.RoomID), raw)
		if isUnique(err) {
			return fmt.Errorf("%w: room %q belongs to another conversation", signaling.ErrConflict, c.RoomID)
		}
		if err != nil {
			return err
		}
		return indexUsers(ctx, tx, c)
	})
	if err != nil {
		return wrap(fmt.Sprintf("%s %q", op, c.ID), err)
	}
	return nil
}

// Conversation returns signaling.ErrNotFound if there is none with that ID.
func (s *Store) Conversation(ctx context.Context, id string) (signaling.Conversation, error) {
	const op = "get conversation"
	return s.conversationWhere(ctx, op, `id`, id)
}

// ConversationByRoom returns the conversation whose Matrix room is roomID;
// signaling.ErrNotFound if there is none.
func (s *Store) ConversationByRoom(ctx context.Context, roomID string) (signaling.Conversation, error) {
	const op = "conversation by room"
	return s.conversationWhere(ctx, op, `room_id`, roomID)
}

func (s *Store) conversationWhere(ctx context.Context, op, col, v string) (signaling.Conversation, error) {
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Conversation{}, err
	}
	if v == "" || !storable(v) {
		return signaling.Conversation{}, fmt.Errorf("store: %s %q: %w", op, v, signaling.ErrNotFound)
	}
	var (
		id  string
		raw []byte
		c   signaling.Conversation
	)
	err := s.pool.QueryRow(ctx, `SELECT id, record FROM icebox_conversations WHERE `+col+` = $1`, v).Scan(&id, &raw)
	if errors.Is(err, pgx.ErrNoRows) {
		err = signaling.ErrNotFound
	}
	if err == nil {
		err = decode("conversation", id, raw, &c)
	}
	if err != nil {
		return signaling.Conversation{}, wrap(fmt.Sprintf("%s %q", op, v), err)
	}
	return c, nil
}

// DeleteConversation returns signaling.ErrNotFound if there is none with
// that ID. Its room is freed; its calls are kept.
func (s *Store) DeleteConversation(ctx context.Context, id string) error {
	const op = "delete conversation"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	if !storable(id) {
		return fmt.Errorf("store: %s %q: %w", op, id, signaling.ErrNotFound)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM icebox_conversations WHERE id = $1`, id)
	if err == nil && tag.RowsAffected() == 0 {
		err = signaling.ErrNotFound
	}
	return wrap(fmt.Sprintf("%s %q", op, id), err)
}
