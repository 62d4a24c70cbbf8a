package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// The index bucket conversations_by_room (schema 3) maps each Matrix room
// to the conversation it belongs to: key = room ID, value = conversation ID.
// The Matrix bridge receives events by room and needs the conversation for
// them (ConversationByRoom). PutConversation and DeleteConversation keep it
// in step, in the transaction that writes the conversation (indexRoom,
// unindexRoom, replacedConversation). A room belongs to at most one conversation: the bridge could
// not tell which one an inbound invite is for.
//
// The bucket rooms_by_conversation of schema 1 was never written; the
// conversation's own RoomID is the other direction.

// ConversationByRoom returns the conversation whose Matrix room is roomID;
// signaling.ErrNotFound if there is none.
func (s *Store) ConversationByRoom(ctx context.Context, roomID string) (signaling.Conversation, error) {
	const op = "conversation by room"
	if err := checkCtx(ctx, op); err != nil {
		return signaling.Conversation{}, err
	}
	var c signaling.Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketConvsByRoom).Get([]byte(roomID))
		if id == nil {
			return signaling.ErrNotFound
		}
		raw := tx.Bucket(bucketConversations).Get(id)
		if raw == nil {
			return fmt.Errorf("%w: %s entry points to missing conversation %q", ErrCorrupt, bucketConvsByRoom, id)
		}
		if err := decode("conversation", id, raw, &c); err != nil {
			return err
		}
		if c.RoomID != roomID {
			return fmt.Errorf("%w: %s entry points to conversation %q of room %q", ErrCorrupt, bucketConvsByRoom, id, c.RoomID)
		}
		return nil
	})
	if err != nil {
		return signaling.Conversation{}, fmt.Errorf("store: %s %q: %w", op, roomID, err)
	}
	return c, nil
}

// indexRoom brings conversations_by_room in step with c's RoomID. old is the
// stored conversation, nil when c is new. A room already indexed for another
// conversation is signaling.ErrConflict, checked before anything is written:
// overwriting would take the room from the other conversation while its
// RoomID still names it.
func indexRoom(tx *bolt.Tx, old *signaling.Conversation, c signaling.Conversation) error {
	b := tx.Bucket(bucketConvsByRoom)
	id := []byte(c.ID)
	key := []byte(c.RoomID)
	if c.RoomID != "" {
		if v := b.Get(key); v != nil && !bytes.Equal(v, id) {
			return fmt.Errorf("%w: room %q belongs to conversation %q", signaling.ErrConflict, key, v)
		}
	}
	if old != nil && old.RoomID != "" && old.RoomID != c.RoomID {
		if err := unindexRoom(tx, c.ID, old.RoomID); err != nil {
			return err
		}
	}
	if c.RoomID == "" {
		return nil
	}
	return b.Put(key, id)
}

// unindexRoom removes roomID's entry if it points to conversation id (after
// migrateRoomIndex, a room another conversation also named points to that
// one, and stays).
func unindexRoom(tx *bolt.Tx, id, roomID string) error {
	b := tx.Bucket(bucketConvsByRoom)
	if bytes.Equal(b.Get([]byte(roomID)), []byte(id)) {
		return b.Delete([]byte(roomID))
	}
	return nil
}

// replacedConversation returns the stored conversation id, which is about
// to be replaced or deleted; nil if there is none. If its value does not
// decode, its room is unknown: every room index entry pointing to id is
// removed and nil returned, so that putting or deleting the conversation
// repairs it instead of failing for good.
func replacedConversation(tx *bolt.Tx, id string) (*signaling.Conversation, error) {
	raw := tx.Bucket(bucketConversations).Get([]byte(id))
	if raw == nil {
		return nil, nil
	}
	var old signaling.Conversation
	err := decode("conversation", []byte(id), raw, &old)
	if err == nil {
		return &old, nil
	}
	if !errors.Is(err, ErrCorrupt) {
		return nil, err
	}
	b := tx.Bucket(bucketConvsByRoom)
	var stale [][]byte
	err = b.ForEach(func(k, v []byte) error {
		if bytes.Equal(v, []byte(id)) {
			// k is only valid in tx, and ForEach forbids deleting.
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range stale {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// migrateRoomIndex is migration 2 → 3: it creates conversations_by_room and
// indexes the conversations stored before it. Schema 2 let two conversations
// name the same room; refusing to open the file would leave the operator no
// way to fix that (the admin API runs in the same process), so the room goes
// to the conversation updated last (on a tie, the first in ID order), the
// admin's latest word. The other keeps its RoomID, unindexed: events from
// the room reach the winner, and putting the other with that room again is
// signaling.ErrConflict until it is moved or deleted.
func migrateRoomIndex(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketConvsByRoom); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketConvsByRoom, err)
	}
	winner := map[string]signaling.Conversation{} // room ID → conversation
	err := tx.Bucket(bucketConversations).ForEach(func(k, v []byte) error {
		var c signaling.Conversation
		if err := decode("conversation", k, v, &c); err != nil {
			return err
		}
		if c.RoomID == "" {
			return nil
		}
		if w, ok := winner[c.RoomID]; !ok || c.UpdatedAt.After(w.UpdatedAt) {
			winner[c.RoomID] = c
		}
		return nil
	})
	if err != nil {
		return err
	}
	b := tx.Bucket(bucketConvsByRoom)
	for room, c := range winner {
		if err := b.Put([]byte(room), []byte(c.ID)); err != nil {
			return fmt.Errorf("index room %q: %w", room, err)
		}
	}
	return nil
}
