package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// The index bucket conversations_by_user (schema 6) lists each user's
// conversations: key = user ID, NUL, the conversation's CreatedAt in unix
// nanoseconds (8 bytes big-endian, sign bit flipped as in
// calls_by_conversation), NUL, conversation ID; no value. A user's keys
// are contiguous and in time order, so a page of their conversations,
// newest first, is a walk backwards from a seek: it costs the page, not
// the number of conversations stored. PutConversation and
// DeleteConversation keep it in step in the transaction that writes the
// conversation (indexUsers). A conversation whose stored value did not
// decode may leave stale entries behind; listing skips an entry whose
// conversation is gone, does not have the user, or was created at another
// time.

func userPrefix(user string) []byte { return append([]byte(user), 0) }

// userKey is the conversations_by_user key of user in c.
func userKey(user string, c signaling.Conversation) []byte {
	return userKeyAt(user, c.CreatedAt.UnixNano(), c.ID)
}

func userKeyAt(user string, createdNs int64, id string) []byte {
	k := userPrefix(user)
	k = binary.BigEndian.AppendUint64(k, uint64(createdNs)^(1<<63))
	k = append(k, 0)
	return append(k, id...)
}

// indexUsers brings conversations_by_user in step with c; old is the
// stored conversation (nil when c is new), c nil when old is deleted.
func indexUsers(tx *bolt.Tx, old, c *signaling.Conversation) error {
	b := tx.Bucket(bucketConvsByUser)
	if old != nil {
		for _, u := range old.Participants {
			if err := b.Delete(userKey(u, *old)); err != nil {
				return err
			}
		}
	}
	if c == nil {
		return nil
	}
	for _, u := range c.Participants {
		if err := checkKey("participant", u); err != nil {
			return err
		}
		if err := b.Put(userKey(u, *c), nil); err != nil {
			return fmt.Errorf("index participant %q: %w", u, err)
		}
	}
	return nil
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
	prefix := userPrefix(user)
	var out []signaling.Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bucketConvsByUser).Cursor()
		var k []byte
		if after.IsZero() {
			// The user's keys are the last ones before user+0x01.
			if k, _ = cur.Seek(append([]byte(user), 1)); k == nil {
				k, _ = cur.Last()
			} else {
				k, _ = cur.Prev()
			}
		} else {
			// The key of the cursor's conversation, or where it was: the
			// entry before it is the next to list.
			if k, _ = cur.Seek(userKeyAt(user, after.CreatedAt.UnixNano(), after.ID)); k == nil {
				k, _ = cur.Last()
			} else {
				k, _ = cur.Prev()
			}
		}
		convs := tx.Bucket(bucketConversations)
		for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Prev() {
			if err := ctx.Err(); err != nil {
				return err
			}
			if len(k) <= len(prefix)+9 || k[len(prefix)+8] != 0 {
				return fmt.Errorf("%w: malformed %s key %q", ErrCorrupt, bucketConvsByUser, k)
			}
			id := k[len(prefix)+9:]
			raw := convs.Get(id)
			if raw == nil {
				continue // stale: see above
			}
			var c signaling.Conversation
			if err := decode("conversation", id, raw, &c); err != nil {
				continue // its entry is stale until it is put again
			}
			if !c.HasParticipant(user) || !bytes.Equal(userKey(user, c), k) {
				continue
			}
			out = append(out, c)
			if len(out) == limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: %s %q: %w", op, user, err)
	}
	return out, nil
}

// migrateUserIndex is migration 5 → 6: it creates conversations_by_user
// and indexes the conversations already stored.
func migrateUserIndex(tx *bolt.Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketConvsByUser); err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketConvsByUser, err)
	}
	return tx.Bucket(bucketConversations).ForEach(func(k, v []byte) error {
		var c signaling.Conversation
		if err := decode("conversation", k, v, &c); err != nil {
			return err
		}
		return indexUsers(tx, nil, &c)
	})
}
