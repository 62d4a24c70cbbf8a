package store

import (
	"context"
	"errors"
	"maps"
	"reflect"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

func conv(id, room string) signaling.Conversation {
	return signaling.Conversation{ID: id, Participants: []string{"@alice:example.org"}, RoomID: room, CreatedAt: at(0), UpdatedAt: at(0)}
}

func TestConversationByRoomFollowsWrites(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		put := func(c signaling.Conversation) func(testStore) error {
			return func(s testStore) error { return s.PutConversation(context.Background(), c) }
		}
		del := func(id string) func(testStore) error {
			return func(s testStore) error { return s.DeleteConversation(context.Background(), id) }
		}
		tests := []struct {
			name  string
			steps []func(testStore) error
			want  map[string]string // room → conversation
			gone  []string          // rooms ConversationByRoom must not find
		}{
			{"new with room", []func(testStore) error{put(conv("c1", "!a:x"))},
				map[string]string{"!a:x": "c1"}, nil},
			{"new without room", []func(testStore) error{put(conv("c1", ""))},
				map[string]string{}, nil},
			{"replace keeps room", []func(testStore) error{put(conv("c1", "!a:x")), put(conv("c1", "!a:x"))},
				map[string]string{"!a:x": "c1"}, nil},
			{"room moves with its conversation", []func(testStore) error{put(conv("c1", "!a:x")), put(conv("c1", "!b:x"))},
				map[string]string{"!b:x": "c1"}, []string{"!a:x"}},
			{"room cleared", []func(testStore) error{put(conv("c1", "!a:x")), put(conv("c1", ""))},
				map[string]string{}, []string{"!a:x"}},
			{"delete frees the room", []func(testStore) error{put(conv("c1", "!a:x")), del("c1"), put(conv("c2", "!a:x"))},
				map[string]string{"!a:x": "c2"}, nil},
			{"delete without room", []func(testStore) error{put(conv("c1", "!a:x")), put(conv("c2", "")), del("c2")},
				map[string]string{"!a:x": "c1"}, nil},
			{"swap through a free room", []func(testStore) error{
				put(conv("c1", "!a:x")), put(conv("c2", "!b:x")),
				put(conv("c1", "!tmp:x")), put(conv("c2", "!a:x")), put(conv("c1", "!b:x")),
			}, map[string]string{"!a:x": "c2", "!b:x": "c1"}, []string{"!tmp:x"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				for i, step := range tt.steps {
					if err := step(s); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				}
				if got := roomIndex(t, s); !maps.Equal(got, tt.want) {
					t.Errorf("index: got %v, want %v", got, tt.want)
				}
				for room, id := range tt.want {
					got, err := s.ConversationByRoom(t.Context(), room)
					if err != nil || got.ID != id || got.RoomID != room {
						t.Errorf("ConversationByRoom(%q): got %q (room %q), %v; want %q", room, got.ID, got.RoomID, err, id)
					}
				}
				for _, room := range tt.gone {
					if _, err := s.ConversationByRoom(t.Context(), room); !errors.Is(err, signaling.ErrNotFound) {
						t.Errorf("ConversationByRoom(%q): got %v, want ErrNotFound", room, err)
					}
				}
				checkIndexes(t, s)
			})
		}
	})
}

func TestConversationByRoomReturnsStored(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		want := signaling.Conversation{
			ID:           "standup",
			Participants: []string{"@alice:example.org", "@bob:example.org"},
			RoomID:       "!room:example.org",
			CreatedAt:    at(0),
			UpdatedAt:    at(time.Second),
		}
		if err := s.PutConversation(t.Context(), want); err != nil {
			t.Fatal(err)
		}
		got, err := s.ConversationByRoom(t.Context(), want.RoomID)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, %v; want %+v", got, err, want)
		}
	})
}

// TestPutConversationRoomConflict: a room mapped to another conversation is
// refused, and nothing at all is written.
func TestPutConversationRoomConflict(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		tests := []struct {
			name    string
			put     signaling.Conversation
			wantMsg string
		}{
			{"existing conversation takes another's room", conv("c2", "!a:x"),
				`store: put conversation "c2": already exists: room "!a:x" belongs to conversation "c1"`},
			{"new conversation takes another's room", conv("c3", "!a:x"),
				`store: put conversation "c3": already exists: room "!a:x" belongs to conversation "c1"`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				ctx := t.Context()
				c1, c2 := conv("c1", "!a:x"), conv("c2", "!b:x")
				for _, c := range []signaling.Conversation{c1, c2} {
					if err := s.PutConversation(ctx, c); err != nil {
						t.Fatal(err)
					}
				}
				before := txID(t, s)

				err := s.PutConversation(ctx, tt.put)
				if !errors.Is(err, signaling.ErrConflict) {
					t.Fatalf("got %v, want ErrConflict", err)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("got message %q, want %q", err, tt.wantMsg)
				}

				if after := txID(t, s); after != before {
					t.Errorf("transaction committed: ID %v → %v", before, after)
				}
				want := map[string]string{"!a:x": "c1", "!b:x": "c2"}
				if got := roomIndex(t, s); !maps.Equal(got, want) {
					t.Errorf("index: got %v, want %v", got, want)
				}
				for _, c := range []signaling.Conversation{c1, c2} {
					if got, err := s.Conversation(ctx, c.ID); err != nil || !reflect.DeepEqual(got, c) {
						t.Errorf("Conversation(%s): got %+v, %v; want %+v", c.ID, got, err, c)
					}
				}
				if _, err := s.Conversation(ctx, "c3"); !errors.Is(err, signaling.ErrNotFound) {
					t.Errorf("Conversation(c3): got %v, want ErrNotFound", err)
				}
				checkIndexes(t, s)
			})
		}
	})
}

func TestConversationByRoomErrors(t *testing.T) {
	s := openTemp(t, t.TempDir())
	if err := s.PutConversation(t.Context(), conv("c1", "!a:x")); err != nil {
		t.Fatal(err)
	}
	// Two broken entries, written behind the store's back.
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConvsByRoom)
		if err := b.Put([]byte("!orphan:x"), []byte("gone")); err != nil {
			return err
		}
		return b.Put([]byte("!wrong:x"), []byte("c1"))
	})
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()

	tests := []struct {
		name    string
		ctx     context.Context
		room    string
		want    error
		wantMsg string
	}{
		{"missing", t.Context(), "!nope:x", signaling.ErrNotFound,
			`store: conversation by room "!nope:x": not found`},
		{"empty", t.Context(), "", signaling.ErrNotFound,
			`store: conversation by room "": not found`},
		{"canceled", canceled, "!a:x", context.Canceled,
			`store: conversation by room: context canceled`},
		{"entry without conversation", t.Context(), "!orphan:x", ErrCorrupt,
			`store: conversation by room "!orphan:x": state file corrupt: conversations_by_room entry points to missing conversation "gone"`},
		{"entry for another room", t.Context(), "!wrong:x", ErrCorrupt,
			`store: conversation by room "!wrong:x": state file corrupt: conversations_by_room entry points to conversation "c1" of room "!a:x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.ConversationByRoom(tt.ctx, tt.room)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("got message %q, want %q", err, tt.wantMsg)
			}
		})
	}
}

func TestConversationWritesHonourContext(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		if err := s.PutConversation(t.Context(), conv("c1", "!a:x")); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		before := txID(t, s)
		tests := []struct {
			name    string
			do      func() error
			wantMsg string
		}{
			{"put", func() error { return s.PutConversation(ctx, conv("c1", "!b:x")) },
				`store: put conversation: context canceled`},
			{"delete", func() error { return s.DeleteConversation(ctx, "c1") },
				`store: delete conversation: context canceled`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do()
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("got %v, want context.Canceled", err)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("got message %q, want %q", err, tt.wantMsg)
				}
			})
		}
		if after := txID(t, s); after != before {
			t.Errorf("transaction committed: ID %v → %v", before, after)
		}
		if got, want := roomIndex(t, s), map[string]string{"!a:x": "c1"}; !maps.Equal(got, want) {
			t.Errorf("index: got %v, want %v", got, want)
		}
	})
}

// TestCorruptConversationRepaired: a conversation whose stored value does
// not decode can still be replaced or deleted, and its stale room entries go
// with it.
func TestCorruptConversationRepaired(t *testing.T) {
	tests := []struct {
		name string
		do   func(*Store) error
		want map[string]string
	}{
		{"put", func(s *Store) error { return s.PutConversation(context.Background(), conv("c1", "!b:x")) },
			map[string]string{"!b:x": "c1", "!other:x": "c2"}},
		{"delete", func(s *Store) error { return s.DeleteConversation(context.Background(), "c1") },
			map[string]string{"!other:x": "c2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t, t.TempDir())
			if err := s.PutConversation(t.Context(), conv("c2", "!other:x")); err != nil {
				t.Fatal(err)
			}
			err := s.db.Update(func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketConversations).Put([]byte("c1"), []byte("{not json")); err != nil {
					return err
				}
				return tx.Bucket(bucketConvsByRoom).Put([]byte("!a:x"), []byte("c1"))
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.ConversationByRoom(t.Context(), "!a:x"); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ConversationByRoom before repair: got %v, want ErrCorrupt", err)
			}
			if err := tt.do(s); err != nil {
				t.Fatalf("repair: %v", err)
			}
			if got := roomIndex(t, s); !maps.Equal(got, tt.want) {
				t.Errorf("index: got %v, want %v", got, tt.want)
			}
			checkIndexes(t, s)
		})
	}
}

// TestMigrateSchema2To3 writes a schema-2 file holding conversations, two
// pairs of them sharing a room (schema 2 allowed it), then opens it with
// this build.
func TestMigrateSchema2To3(t *testing.T) {
	dir := t.TempDir()
	convs := []signaling.Conversation{
		conv("a", "!x:h"), // loses !x:h to b, updated later
		conv("b", "!x:h"),
		conv("c", ""),
		conv("d", "!y:h"), // wins !y:h from e: same time, first in ID order
		conv("e", "!y:h"),
		conv("f", "!z:h"),
	}
	convs[1].UpdatedAt = at(time.Second)

	writeSchemaFixture(t, dir, oldSchema{version: 2, absent: [][]byte{bucketConvsByRoom}, convs: convs})

	s := openTemp(t, dir)
	ctx := t.Context()
	if v, err := s.Version(); err != nil || v != SchemaVersion() {
		t.Fatalf("after migration: version %d, %v; want %d", v, err, SchemaVersion())
	}
	want := map[string]string{"!x:h": "b", "!y:h": "d", "!z:h": "f"}
	if got := roomIndex(t, s); !maps.Equal(got, want) {
		t.Errorf("index: got %v, want %v", got, want)
	}
	for room, id := range want {
		if got, err := s.ConversationByRoom(ctx, room); err != nil || got.ID != id {
			t.Errorf("ConversationByRoom(%q): got %q, %v; want %q", room, got.ID, err, id)
		}
	}

	// The losers keep their RoomID, unindexed, until the admin moves them.
	err := s.PutConversation(ctx, convs[0])
	if wantMsg := `store: put conversation "a": already exists: room "!x:h" belongs to conversation "b"`; !errors.Is(err, signaling.ErrConflict) || err.Error() != wantMsg {
		t.Errorf("PutConversation(a) with the shared room: got %v, want %q", err, wantMsg)
	}
	// Deleting a loser leaves the winner's entry.
	if err := s.DeleteConversation(ctx, "e"); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ConversationByRoom(ctx, "!y:h"); err != nil || got.ID != "d" {
		t.Errorf("ConversationByRoom(!y:h) after deleting e: got %q, %v; want d", got.ID, err)
	}
	if err := s.PutConversation(ctx, conv("a", "!w:h")); err != nil {
		t.Fatalf("moving a: %v", err)
	}
	checkIndexes(t, s)
}
