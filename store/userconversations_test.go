package store

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

func convOf(id string, created time.Duration, users ...string) signaling.Conversation {
	return signaling.Conversation{ID: id, Participants: users, CreatedAt: at(created), UpdatedAt: at(created)}
}

func convIDs(cs []signaling.Conversation) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

// listAll walks user's conversations page by page (limit a page).
func listAll(t *testing.T, s testStore, user string, limit int) []string {
	t.Helper()
	var (
		out   []string
		after signaling.ConversationCursor
	)
	for range 100 {
		page, err := s.UserConversations(t.Context(), user, after, limit)
		if err != nil {
			t.Fatalf("UserConversations(%s, %+v, %d): %v", user, after, limit, err)
		}
		if len(page) > limit {
			t.Fatalf("UserConversations(%s, limit %d) returned %d", user, limit, len(page))
		}
		out = append(out, convIDs(page)...)
		if len(page) < limit {
			return out
		}
		after = signaling.CursorAfter(page[len(page)-1])
	}
	t.Fatalf("%s's list did not end in 100 pages", user)
	return nil
}

// TestUserConversations: each user sees the conversations they take part
// in and no other, newest first (ties by ID, descending), page by page
// with a cursor; the index follows a conversation's participants as it is
// replaced and deleted, and a cursor whose conversation was deleted still
// marks its place.
func TestUserConversations(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		for _, c := range []signaling.Conversation{
			convOf("a", 0, "@alice:x", "@bob:x"),
			convOf("b", time.Second, "@alice:x"),
			convOf("c", 2*time.Second, "@bob:x", "@carol:x"),
			convOf("d", 2*time.Second, "@alice:x", "@carol:x"),
			convOf("e", 3*time.Second, "@alice:x"),
			convOf("a-b", 4*time.Second, "@alice:xb"), // a user whose ID extends alice's
		} {
			if err := s.PutConversation(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		want := map[string][]string{
			"@alice:x": {"e", "d", "b", "a"}, "@bob:x": {"c", "a"}, "@carol:x": {"d", "c"},
			"@alice:xb": {"a-b"}, "@dave:x": {}, "@alice": {},
		}
		for user, w := range want {
			for _, limit := range []int{1, 2, 3, 10} {
				if got := listAll(t, s, user, limit); !slices.Equal(got, w) {
					t.Errorf("%s, pages of %d: %v, want %v", user, limit, got, w)
				}
			}
		}
		page, err := s.UserConversations(ctx, "@alice:x", signaling.ConversationCursor{}, 2)
		if err != nil || !slices.Equal(convIDs(page), []string{"e", "d"}) {
			t.Fatalf("alice's first page of 2: %v, %v", convIDs(page), err)
		}
		cursor := signaling.CursorAfter(page[1])

		// Replaced: b leaves alice for bob; deleted: d.
		if err := s.PutConversation(ctx, convOf("b", time.Second, "@bob:x")); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteConversation(ctx, "d"); err != nil {
			t.Fatal(err)
		}
		next, err := s.UserConversations(ctx, "@alice:x", cursor, 2)
		if err != nil || !slices.Equal(convIDs(next), []string{"a"}) {
			t.Errorf("alice's page after the deleted d: %v, %v; want [a]", convIDs(next), err)
		}
		for user, w := range map[string][]string{"@alice:x": {"e", "a"}, "@bob:x": {"c", "b", "a"}, "@carol:x": {"c"}} {
			if got := listAll(t, s, user, 2); !slices.Equal(got, w) {
				t.Errorf("after replace and delete: %s: %v, want %v", user, got, w)
			}
		}
		// Put again, created at another time: listed once, at its new place.
		if err := s.PutConversation(ctx, convOf("a", 5*time.Second, "@alice:x", "@bob:x")); err != nil {
			t.Fatal(err)
		}
		if got := listAll(t, s, "@alice:x", 10); !slices.Equal(got, []string{"a", "e"}) {
			t.Errorf("after a moved in time: %v, want [a e]", got)
		}
		checkIndexes(t, s)

		if _, err := s.UserConversations(ctx, "@alice:x", signaling.ConversationCursor{}, 0); !errors.Is(err, signaling.ErrInvalid) {
			t.Errorf("limit 0: %v, want ErrInvalid", err)
		}
		if _, err := s.UserConversations(ctx, "", signaling.ConversationCursor{}, 1); !errors.Is(err, signaling.ErrInvalid) {
			t.Errorf("empty user: %v, want ErrInvalid", err)
		}
	})
}

// TestUserConversationsMany: 120 conversations of alice among 240, read
// in pages of 7, come out whole, once each, newest first.
func TestUserConversationsMany(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		var want []string
		for i := range 240 {
			id := fmt.Sprintf("c%03d", i)
			users := []string{"@bob:x"}
			if i%2 == 0 {
				users = append(users, "@alice:x")
				want = append(want, id)
			}
			// Three conversations per second: ties are ordered by ID.
			if err := s.PutConversation(t.Context(), convOf(id, time.Duration(i/3)*time.Second, users...)); err != nil {
				t.Fatal(err)
			}
		}
		slices.Reverse(want)
		if got := listAll(t, s, "@alice:x", 7); !slices.Equal(got, want) {
			t.Errorf("alice's %d conversations in pages of 7: got %d %v", len(want), len(got), got)
		}
	})
}

// TestMigrateSchema5To6 writes a schema-5 file holding conversations, then
// opens it with this build: each user's conversations are listed.
func TestMigrateSchema5To6(t *testing.T) {
	dir := t.TempDir()
	writeSchemaFixture(t, dir, oldSchema{version: 5, absent: [][]byte{bucketConvsByUser}, convs: []signaling.Conversation{
		convOf("a", 0, "@alice:x", "@bob:x"),
		convOf("b", time.Second, "@bob:x"),
		convOf("c", 2*time.Second, "@alice:x"),
	}})
	s := openTemp(t, dir)
	if v, err := s.Version(); err != nil || v != SchemaVersion() {
		t.Fatalf("after migration: version %d, %v; want %d", v, err, SchemaVersion())
	}
	for user, w := range map[string][]string{"@alice:x": {"c", "a"}, "@bob:x": {"b", "a"}} {
		if got := listAll(t, s, user, 10); !slices.Equal(got, w) {
			t.Errorf("%s after migration: %v, want %v", user, got, w)
		}
	}
	checkIndexes(t, s)
}
