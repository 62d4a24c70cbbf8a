package store

import (
	"context"
	"encoding/binary"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

// seenEvents reads seen_matrix_events directly, decoding the times.
func seenEvents(t *testing.T, st testStore) map[string]time.Time {
	t.Helper()
	if p := pgOf(st); p != nil {
		return pgSeenEvents(t, p)
	}
	s := st.(*Store)
	got := map[string]time.Time{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSeenEvents).ForEach(func(k, v []byte) error {
			if len(v) != 8 {
				t.Errorf("seen event %q: value %x is not 8 bytes", k, v)
				return nil
			}
			got[string(k)] = time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC()
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func mustMark(t *testing.T, s testStore, events map[string]time.Time) {
	t.Helper()
	for id, when := range events {
		if first, err := s.MarkEventSeen(t.Context(), id, when); err != nil || !first {
			t.Fatalf("MarkEventSeen(%q) = %v, %v; want true, nil", id, first, err)
		}
	}
}

func TestMarkEventSeen(t *testing.T) {
	pre1970 := time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)
	steps := []struct {
		event     string
		at        time.Time
		wantFirst bool
	}{
		{"$a:x", at(0), true},
		{"$a:x", at(time.Hour), false},
		{"$b:x", at(time.Minute), true},
		{"$a:x", at(0), false},
		{"$old:x", pre1970, true},
		{"$old:x", pre1970, false},
	}
	s := openTemp(t, t.TempDir())
	for i, st := range steps {
		before := txID(t, s)
		first, err := s.MarkEventSeen(t.Context(), st.event, st.at)
		if err != nil || first != st.wantFirst {
			t.Fatalf("step %d: MarkEventSeen(%q) = %v, %v; want %v, nil", i, st.event, first, err, st.wantFirst)
		}
		if committed := txID(t, s) != before; committed != st.wantFirst {
			t.Errorf("step %d: committed = %v, want %v", i, committed, st.wantFirst)
		}
	}
	// The first time is kept, big-endian unix nanoseconds.
	want := map[string]time.Time{"$a:x": at(0), "$b:x": at(time.Minute), "$old:x": pre1970}
	if got := seenEvents(t, s); !maps.EqualFunc(got, want, time.Time.Equal) {
		t.Errorf("stored: got %v, want %v", got, want)
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		got := tx.Bucket(bucketSeenEvents).Get([]byte("$a:x"))
		if want := binary.BigEndian.AppendUint64(nil, uint64(t0.UnixNano())); string(got) != string(want) {
			t.Errorf("raw value of $a:x: got %x, want %x", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestMarkEventSeenErrors(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		canceled, cancel := context.WithCancel(t.Context())
		cancel()
		before := txID(t, s)
		tests := []struct {
			name    string
			ctx     context.Context
			event   string
			at      time.Time
			want    error
			wantMsg string
		}{
			{"empty ID", t.Context(), "", at(0), signaling.ErrInvalid,
				`store: mark event seen: invalid request: event ID is empty`},
			{"NUL in ID", t.Context(), "$a\x00b", at(0), signaling.ErrInvalid,
				`store: mark event seen: invalid request: event ID contains NUL`},
			{"zero time", t.Context(), "$a:x", time.Time{}, signaling.ErrInvalid,
				`store: mark event seen "$a:x": invalid request: time 0001-01-01T00:00:00Z is out of range`},
			{"after 2262", t.Context(), "$a:x", time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), signaling.ErrInvalid,
				`store: mark event seen "$a:x": invalid request: time 2300-01-01T00:00:00Z is out of range`},
			{"canceled", canceled, "$a:x", at(0), context.Canceled,
				`store: mark event seen: context canceled`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				first, err := s.MarkEventSeen(tt.ctx, tt.event, tt.at)
				if first || !errors.Is(err, tt.want) {
					t.Fatalf("got %v, %v; want false, %v", first, err, tt.want)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("got message %q, want %q", err, tt.wantMsg)
				}
			})
		}
		if after := txID(t, s); after != before {
			t.Errorf("transaction committed: ID %v → %v", before, after)
		}
		if got := seenEvents(t, s); len(got) != 0 {
			t.Errorf("stored: got %v, want nothing", got)
		}
	})
}

// TestMarkEventSeenConcurrent: of many handlers racing on one event (sync
// and a late decryption, say), exactly one is told it is the first.
func TestMarkEventSeenConcurrent(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		const n = 16
		var (
			firsts atomic.Int32
			wg     sync.WaitGroup
		)
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				first, err := s.MarkEventSeen(t.Context(), "$race:x", at(time.Duration(i)))
				if err != nil {
					errs <- err
				}
				if first {
					firsts.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("MarkEventSeen: %v", err)
		}
		if got := firsts.Load(); got != 1 {
			t.Errorf("got %d firsts, want 1", got)
		}
	})
}

func TestPruneSeenEvents(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		events := map[string]time.Time{
			"$1969:x": time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC),
			"$m2h:x":  at(-2 * time.Hour),
			"$m1h:x":  at(-time.Hour),
			"$t0:x":   at(0),
			"$p1h:x":  at(time.Hour),
		}
		tests := []struct {
			name   string
			before time.Time
			kept   []string
		}{
			{"nothing that old", time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
				[]string{"$1969:x", "$m2h:x", "$m1h:x", "$t0:x", "$p1h:x"}},
			{"the ones before, not the one at", at(0), []string{"$t0:x", "$p1h:x"}},
			{"just after", at(1), []string{"$p1h:x"}},
			{"all", at(2 * time.Hour), nil},
			{"zero time removes nothing", time.Time{},
				[]string{"$1969:x", "$m2h:x", "$m1h:x", "$t0:x", "$p1h:x"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				mustMark(t, s, events)
				before := txID(t, s)

				removed, err := s.PruneSeenEvents(t.Context(), tt.before)
				if wantRemoved := len(events) - len(tt.kept); err != nil || removed != wantRemoved {
					t.Fatalf("PruneSeenEvents = %d, %v; want %d, nil", removed, err, wantRemoved)
				}
				if committed := txID(t, s) != before; committed != (removed > 0) {
					t.Errorf("committed = %v, want %v", committed, removed > 0)
				}
				want := map[string]time.Time{}
				for _, id := range tt.kept {
					want[id] = events[id]
				}
				if got := seenEvents(t, s); !maps.EqualFunc(got, want, time.Time.Equal) {
					t.Errorf("kept: got %v, want %v", got, want)
				}

				// Pruning again finds nothing and commits nothing.
				before = txID(t, s)
				if removed, err := s.PruneSeenEvents(t.Context(), tt.before); err != nil || removed != 0 {
					t.Errorf("second PruneSeenEvents = %d, %v; want 0, nil", removed, err)
				}
				if after := txID(t, s); after != before {
					t.Errorf("second prune committed: ID %v → %v", before, after)
				}
				// A pruned event is new again.
				for id := range events {
					_, kept := want[id]
					if first, err := s.MarkEventSeen(t.Context(), id, at(3*time.Hour)); err != nil || first == kept {
						t.Errorf("MarkEventSeen(%q) after prune = %v, %v; want %v, nil", id, first, err, !kept)
					}
				}
			})
		}
	})
}

func TestPruneSeenEventsErrors(t *testing.T) {
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		corrupt bool
		want    error
		wantMsg string
	}{
		{"canceled", canceled, false, context.Canceled,
			`store: prune seen events: context canceled`},
		{"value not 8 bytes", t.Context(), true, ErrCorrupt,
			`store: prune seen events: state file corrupt: seen event "$bad:x" has a 3-byte time`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTemp(t, t.TempDir())
			mustMark(t, s, map[string]time.Time{"$a:x": at(0)})
			if tt.corrupt {
				err := s.db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket(bucketSeenEvents).Put([]byte("$bad:x"), []byte{1, 2, 3})
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			before := txID(t, s)
			removed, err := s.PruneSeenEvents(tt.ctx, at(time.Hour))
			if removed != 0 || !errors.Is(err, tt.want) {
				t.Fatalf("got %d, %v; want 0, %v", removed, err, tt.want)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("got message %q, want %q", err, tt.wantMsg)
			}
			if after := txID(t, s); after != before {
				t.Errorf("transaction committed: ID %v → %v", before, after)
			}
		})
	}
}

func TestSyncValues(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		const (
			batch  = "next_batch/@icebox:example.org"
			filter = "filter/@icebox:example.org"
		)
		type step struct {
			save       bool // else load
			key, value string
			commits    bool // for a save
		}
		tests := []struct {
			name  string
			steps []step
		}{
			{"absent is empty", []step{{key: batch, value: ""}}},
			{"save then load", []step{
				{save: true, key: batch, value: "s72594_4483_1934", commits: true},
				{key: batch, value: "s72594_4483_1934"},
				{key: filter, value: ""},
			}},
			{"overwrite", []step{
				{save: true, key: batch, value: "s1", commits: true},
				{save: true, key: batch, value: "s2", commits: true},
				{key: batch, value: "s2"},
			}},
			{"same value writes nothing", []step{
				{save: true, key: batch, value: "s1", commits: true},
				{save: true, key: batch, value: "s1", commits: false},
				{key: batch, value: "s1"},
			}},
			{"keys are independent", []step{
				{save: true, key: batch, value: "s1", commits: true},
				{save: true, key: filter, value: "42", commits: true},
				{key: batch, value: "s1"},
				{key: filter, value: "42"},
			}},
			{"empty deletes", []step{
				{save: true, key: batch, value: "s1", commits: true},
				{save: true, key: batch, value: "", commits: true},
				{key: batch, value: ""},
				{save: true, key: batch, value: "", commits: false},
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				for i, st := range tt.steps {
					if !st.save {
						if got, err := s.LoadSyncValue(t.Context(), st.key); err != nil || got != st.value {
							t.Errorf("step %d: LoadSyncValue(%q) = %q, %v; want %q, nil", i, st.key, got, err, st.value)
						}
						continue
					}
					before := txID(t, s)
					if err := s.SaveSyncValue(t.Context(), st.key, st.value); err != nil {
						t.Fatalf("step %d: SaveSyncValue(%q, %q): %v", i, st.key, st.value, err)
					}
					if committed := txID(t, s) != before; committed != st.commits {
						t.Errorf("step %d: committed = %v, want %v", i, committed, st.commits)
					}
				}
			})
		}
	})
}

func TestSyncValueErrors(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		canceled, cancel := context.WithCancel(t.Context())
		cancel()
		tests := []struct {
			name    string
			do      func() error
			want    error
			wantMsg string
		}{
			{"save empty key", func() error { return s.SaveSyncValue(t.Context(), "", "v") },
				signaling.ErrInvalid, `store: save sync value: invalid request: sync key is empty`},
			{"load empty key", func() error { _, err := s.LoadSyncValue(t.Context(), ""); return err },
				signaling.ErrInvalid, `store: load sync value: invalid request: sync key is empty`},
			{"save canceled", func() error { return s.SaveSyncValue(canceled, "k", "v") },
				context.Canceled, `store: save sync value: context canceled`},
			{"load canceled", func() error { _, err := s.LoadSyncValue(canceled, "k"); return err },
				context.Canceled, `store: load sync value: context canceled`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				err := tt.do()
				if !errors.Is(err, tt.want) {
					t.Fatalf("got %v, want %v", err, tt.want)
				}
				if err.Error() != tt.wantMsg {
					t.Errorf("got message %q, want %q", err, tt.wantMsg)
				}
			})
		}
		if got, err := s.LoadSyncValue(t.Context(), "k"); err != nil || got != "" {
			t.Errorf("after failed saves: LoadSyncValue = %q, %v; want empty", got, err)
		}
	})
}

// TestInboundStateSurvivesReopen: what the methods wrote is in the file
// when they return.
func TestInboundStateSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := s.MarkEventSeen(ctx, "$a:x", at(0)); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSyncValue(ctx, "next_batch/@icebox:example.org", "s9"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutConversation(ctx, conv("c1", "!a:x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTemp(t, dir)
	if first, err := s.MarkEventSeen(ctx, "$a:x", at(time.Hour)); err != nil || first {
		t.Errorf("MarkEventSeen after reopen = %v, %v; want false, nil", first, err)
	}
	if got, err := s.LoadSyncValue(ctx, "next_batch/@icebox:example.org"); err != nil || got != "s9" {
		t.Errorf("LoadSyncValue after reopen = %q, %v; want s9", got, err)
	}
	if got, err := s.ConversationByRoom(ctx, "!a:x"); err != nil || got.ID != "c1" {
		t.Errorf("ConversationByRoom after reopen = %q, %v; want c1", got.ID, err)
	}
}
