package store

import (
	"context"
	"fmt"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// Conversations live in bucket conversations: key = conversation ID, value =
// JSON of signaling.Conversation. The index conversations_by_room (rooms.go)
// is kept in step in the same transaction.

// PutConversation creates or replaces a conversation. Its room moves with
// it: a new RoomID replaces the old one in the room index. A RoomID that
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
	raw, err := encode(c)
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, c.ID, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		old, err := replacedConversation(tx, c.ID)
		if err != nil {
			return err
		}
		if err := indexRoom(tx, old, c); err != nil {
			return err
		}
		if err := indexUsers(tx, old, &c); err != nil {
			return err
		}
		return tx.Bucket(bucketConversations).Put([]byte(c.ID), raw)
	})
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, c.ID, err)
	}
	return nil
}

// Conversation returns signaling.ErrNotFound if there is none with that ID.
func (s *Store) Conversation(ctx context.Context, id string) (signaling.Conversation, error) {
	const op = "get conversation"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Conversation{}, err
	}
	var c signaling.Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketConversations).Get([]byte(id))
		if raw == nil {
			return signaling.ErrNotFound
		}
		return decode("conversation", []byte(id), raw, &c)
	})
	if err != nil {
		return signaling.Conversation{}, fmt.Errorf("store: %s %q: %w", op, id, err)
	}
	return c, nil
}

// DeleteConversation returns signaling.ErrNotFound if there is none with that
// ID. Its room is freed for another conversation. The conversation's calls
// are kept: they stay readable by ID (the service shows them to their caller
// and answerer) and their revocations stay in force. A conversation later created with the same ID lists them
// again, since calls_by_conversation is keyed by conversation ID.
func (s *Store) DeleteConversation(ctx context.Context, id string) error {
	const op = "delete conversation"
	if err := checkCtx(ctx, op); err != nil {
		return err
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConversations)
		if b.Get([]byte(id)) == nil {
			return signaling.ErrNotFound
		}
		old, err := replacedConversation(tx, id)
		if err != nil {
			return err
		}
		if old != nil && old.RoomID != "" {
			if err := unindexRoom(tx, id, old.RoomID); err != nil {
				return err
			}
		}
		if err := indexUsers(tx, old, nil); err != nil {
			return err
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", op, id, err)
	}
	return nil
}
