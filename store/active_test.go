package store

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

func TestActiveCallsFollowStatus(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		if got, err := s.ActiveCalls(ctx); err != nil || len(got) != 0 {
			t.Fatalf("ActiveCalls on an empty store: got %v, %v", ids(got), err)
		}
		mustCreate(t, s,
			ringingCall("a1", "c", 0), ringingCall("a2", "c", time.Second),
			ringingCall("a3", "d", 2*time.Second), ringingCall("a4", "d", 3*time.Second))

		steps := []struct {
			name   string
			id     string
			status signaling.Status
			want   []string
		}{
			{"start", "", "", []string{"a1", "a2", "a3", "a4"}},
			{"answer a2 stays", "a2", signaling.StatusAnswered, []string{"a1", "a2", "a3", "a4"}},
			{"reject a3", "a3", signaling.StatusRejected, []string{"a1", "a2", "a4"}},
			{"expire a1", "a1", signaling.StatusExpired, []string{"a2", "a4"}},
			{"answer a4", "a4", signaling.StatusAnswered, []string{"a2", "a4"}},
			{"end a2", "a2", signaling.StatusEnded, []string{"a4"}},
			{"end a4", "a4", signaling.StatusEnded, []string{}},
		}
		for _, st := range steps {
			if st.id != "" {
				if _, err := s.UpdateCall(ctx, st.id, func(c *signaling.Call) error { c.Status = st.status; return nil }); err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
			}
			got, err := s.ActiveCalls(ctx)
			if err != nil {
				t.Fatalf("%s: ActiveCalls: %v", st.name, err)
			}
			if !slices.Equal(ids(got), st.want) {
				t.Errorf("%s: got %v, want %v", st.name, ids(got), st.want)
			}
			for _, c := range got {
				if c.Status != signaling.StatusRinging && c.Status != signaling.StatusAnswered {
					t.Errorf("%s: %s has status %s", st.name, c.ID, c.Status)
				}
			}
			checkIndexes(t, s)
		}
	})
}

func TestActiveCallsReturnsStoredCalls(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		c := ringingCall("k", "c", 0)
		mustCreate(t, s, c)
		want, err := s.UpdateCall(ctx, "k", func(c *signaling.Call) error {
			c.Status = signaling.StatusAnswered
			c.Answerer = "@bob:example.org"
			c.AnsweredAt = ptr(at(time.Minute))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.ActiveCalls(ctx)
		if err != nil || !reflect.DeepEqual(got, []signaling.Call{want}) {
			t.Errorf("ActiveCalls: got %+v, %v; want %+v", got, err, want)
		}
	})
}

func TestActiveCallsCanceled(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		mustCreate(t, s, ringingCall("k", "c", 0))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.ActiveCalls(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("ActiveCalls with a canceled context: got %v, want context.Canceled", err)
		}
	})
}

func TestActiveCallsCorruptEntry(t *testing.T) {
	s := openTemp(t, t.TempDir())
	c := ringingCall("k", "c", 0)
	c.Status = signaling.StatusEnded
	mustCreate(t, s, c)
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCallsActive).Put([]byte("k"), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ActiveCalls(t.Context()); !errors.Is(err, ErrCorrupt) {
		t.Errorf("ActiveCalls with an ended call indexed: got %v, want ErrCorrupt", err)
	}
}

// TestMigrateSchema3To4 writes a schema-3 file holding calls, then opens it
// with this build, which must create and fill calls_active.
func TestMigrateSchema3To4(t *testing.T) {
	dir := t.TempDir()
	calls := []signaling.Call{
		ringingCall("r", "c", 0),
		ringingCall("a", "c", time.Minute),
		ringingCall("e", "d", 2*time.Minute),
		ringingCall("x", "d", 3*time.Minute),
	}
	calls[1].Status = signaling.StatusAnswered
	calls[2].Status = signaling.StatusEnded
	calls[3].Status = signaling.StatusExpired

	writeSchemaFixture(t, dir, oldSchema{version: 3, absent: [][]byte{bucketCallsActive}, calls: calls})

	s := openTemp(t, dir)
	if v, err := s.Version(); err != nil || v != SchemaVersion() {
		t.Fatalf("after migration: version %d, %v; want %d", v, err, SchemaVersion())
	}
	checkIndexes(t, s)
	if got, err := s.ActiveCalls(t.Context()); err != nil || !slices.Equal(ids(got), []string{"a", "r"}) {
		t.Errorf("ActiveCalls: got %v, %v; want [a r]", ids(got), err)
	}
}
