package postgres_test

import (
	"slices"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestMigrateConversationUsers: a database at schema 2 holding
// conversations (written as that schema did: no participant rows) is
// brought to this build's schema, and each user's conversations are
// listed, newest first, in the nanosecond order of their records.
func TestMigrateConversationUsers(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	restore := postgres.OldSchema(2)
	old := open(t, dsn)
	restore()
	t0 := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	for _, c := range []signaling.Conversation{
		{ID: "a", Participants: []string{"@alice:x", "@bob:x"}, CreatedAt: t0},
		{ID: "b", Participants: []string{"@bob:x"}, CreatedAt: t0.Add(1)}, // 1 ns later: timestamptz would tie them
		{ID: "c", Participants: []string{"@alice:x"}, CreatedAt: t0.Add(2)},
	} {
		raw := []byte(`{"id":"` + c.ID + `","participants":["` + c.Participants[0] + `"`)
		if len(c.Participants) > 1 {
			raw = append(raw, `,"`+c.Participants[1]+`"`...)
		}
		raw = append(raw, `],"created_at":"`+c.CreatedAt.Format(time.RFC3339Nano)+`","updated_at":"`+c.CreatedAt.Format(time.RFC3339Nano)+`"}`...)
		if _, err := old.Pool().Exec(t.Context(), `INSERT INTO icebox_conversations (id, record) VALUES ($1, $2)`, c.ID, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, dsn)
	for user, want := range map[string][]string{"@alice:x": {"c", "a"}, "@bob:x": {"b", "a"}} {
		got, err := s.UserConversations(t.Context(), user, signaling.ConversationCursor{}, 10)
		var ids []string
		for _, c := range got {
			ids = append(ids, c.ID)
		}
		if err != nil || !slices.Equal(ids, want) {
			t.Errorf("%s after the migration: %v, %v; want %v", user, ids, err, want)
		}
	}
}
