package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	bolt "go.etcd.io/bbolt"
)

const (
	typeInvite     = "m.call.invite"
	typeCandidates = "m.call.candidates"
	typeHangup     = "m.call.hangup"
)

// entry is a valid outbox entry for callID.
func entry(callID, typ string) signaling.OutboxEntry {
	return signaling.OutboxEntry{
		CallID:    callID,
		RoomID:    "!room:example.org",
		EventType: typ,
		Content:   json.RawMessage(`{"call_id":"` + callID + `","party_id":"P","version":"1"}`),
	}
}

// stamped is e as the store writes it when e has no CreatedAt or TxnID of
// its own; createdAt is the time the store chose.
func stamped(e signaling.OutboxEntry, seq uint64, createdAt time.Time, instance string) signaling.OutboxEntry {
	e.Seq = seq
	e.CreatedAt = createdAt
	e.TxnID = "icebox-" + instance + "-" + strconv.FormatUint(seq, 10)
	return e
}

func instanceOf(t *testing.T, st testStore) string {
	t.Helper()
	if p := pgOf(st); p != nil {
		id, _ := p.InstanceID()
		return id
	}
	s := st.(*Store)
	var id string
	if err := s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyInstance))
		return nil
	}); err != nil || len(id) != 12 {
		t.Fatalf("instance id %q, %v", id, err)
	}
	return id
}

func pending(t *testing.T, s testStore) []signaling.OutboxEntry {
	t.Helper()
	got, err := s.PendingOutbox(t.Context(), 0)
	if err != nil {
		t.Fatalf("PendingOutbox: %v", err)
	}
	return got
}

func seqs(es []signaling.OutboxEntry) []uint64 {
	out := []uint64{}
	for _, e := range es {
		out = append(out, e.Seq)
	}
	return out
}

func mustAppend(t *testing.T, s testStore, out ...signaling.OutboxEntry) {
	t.Helper()
	if err := s.AppendOutbox(t.Context(), out); err != nil {
		t.Fatalf("AppendOutbox: %v", err)
	}
}

// checkCreatedAt asserts that the store stamped e between before and after,
// in UTC.
func checkCreatedAt(t *testing.T, e signaling.OutboxEntry, before, after time.Time) {
	t.Helper()
	if e.CreatedAt.Before(before) || e.CreatedAt.After(after) || e.CreatedAt.Location() != time.UTC {
		t.Errorf("entry %d: CreatedAt %v, want UTC within [%v, %v]", e.Seq, e.CreatedAt, before, after)
	}
}

func TestCreateCallOutbox(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		call := ringingCall("k", "c", 0)
		given := entry("k", typeCandidates)
		given.Seq = 99 // ignored
		given.TxnID = "client-txn"
		given.CreatedAt = at(time.Minute)
		out := []signaling.OutboxEntry{entry("k", typeInvite), given}
		orig := slices.Clone(out)

		before := time.Now().UTC()
		if err := s.CreateCallOutbox(t.Context(), call, out); err != nil {
			t.Fatalf("CreateCallOutbox: %v", err)
		}
		after := time.Now().UTC()
		if !reflect.DeepEqual(out, orig) {
			t.Errorf("the caller's slice was modified: %+v", out)
		}

		got := pending(t, s)
		if len(got) != 2 {
			t.Fatalf("got %d entries, want 2", len(got))
		}
		checkCreatedAt(t, got[0], before, after)
		given.Seq = 2
		want := []signaling.OutboxEntry{stamped(out[0], 1, got[0].CreatedAt, instanceOf(t, s)), given}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
		if c, err := s.Call(t.Context(), "k"); err != nil || !reflect.DeepEqual(c, call) {
			t.Errorf("Call: got %+v, %v; want %+v", c, err, call)
		}
		checkIndexes(t, s)
	})
}

func TestUpdateCallOutbox(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		mustCreate(t, s, ringingCall("k", "c", 0))
		hangup := entry("k", typeHangup)

		got, err := s.UpdateCallOutbox(ctx, "k", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
			c.Status = signaling.StatusEnded
			c.EndedAt = ptr(at(time.Minute))
			c.RevokedUntil = ptr(at(time.Hour))
			return []signaling.OutboxEntry{hangup}, nil
		})
		if err != nil {
			t.Fatalf("UpdateCallOutbox: %v", err)
		}
		if got.Status != signaling.StatusEnded {
			t.Errorf("returned status %s, want ended", got.Status)
		}
		if reread, err := s.Call(ctx, "k"); err != nil || !reflect.DeepEqual(reread, got) {
			t.Errorf("re-read: got %+v, %v; want %+v", reread, err, got)
		}
		if revs, want := storedRevocations(t, s), map[string]time.Time{"k": at(time.Hour)}; !reflect.DeepEqual(revs, want) {
			t.Errorf("revocations: got %v, want %v", revs, want)
		}
		out := pending(t, s)
		if want := []signaling.OutboxEntry{stamped(hangup, 1, out[0].CreatedAt, instanceOf(t, s))}; !reflect.DeepEqual(out, want) {
			t.Errorf("outbox: got %+v\nwant %+v", out, want)
		}
		if ringing, err := s.RingingCalls(ctx); err != nil || len(ringing) != 0 {
			t.Errorf("RingingCalls: got %v, %v; want none", ids(ringing), err)
		}

		// An fn returning no entries is UpdateCall.
		if _, err := s.UpdateCallOutbox(ctx, "k", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
			c.EndReason = signaling.ReasonUserHangup
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{1}) {
			t.Errorf("outbox after an update without entries: %v, want [1]", got)
		}
		checkIndexes(t, s)
	})
}

// TestOutboxAtomicity: whatever fails, neither the call nor any entry (nor
// the Seq counter) is written.
func TestOutboxAtomicity(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		boom := errors.New("boom")
		noRoom := entry("k", typeHangup)
		noRoom.RoomID = ""
		notObject := entry("k", typeCandidates)
		notObject.Content = json.RawMessage(`["a"]`)
		truncated := entry("k", typeCandidates)
		truncated.Content = json.RawMessage(`{"call_id":`)
		noType := entry("k", "")
		noCall := entry("", typeCandidates)
		ended := func(c *signaling.Call) {
			c.Status = signaling.StatusEnded
			c.EndedAt = ptr(at(time.Minute))
			c.RevokedUntil = ptr(at(time.Hour))
		}

		tests := []struct {
			name    string
			do      func(ctx context.Context, s testStore) error
			want    error
			wantMsg string // "" when the error is want itself
		}{
			{"update fn error", func(ctx context.Context, s testStore) error {
				_, err := s.UpdateCallOutbox(ctx, "k", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
					ended(c)
					return []signaling.OutboxEntry{entry("k", typeHangup)}, boom
				})
				return err
			}, boom, ""},
			{"update invalid entry", func(ctx context.Context, s testStore) error {
				_, err := s.UpdateCallOutbox(ctx, "k", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
					ended(c)
					return []signaling.OutboxEntry{entry("k", typeHangup), noRoom}, nil
				})
				return err
			}, signaling.ErrInvalid, `store: update call "k": outbox entry 1: invalid request: room ID is empty`},
			{"update changes ID", func(ctx context.Context, s testStore) error {
				_, err := s.UpdateCallOutbox(ctx, "k", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
					ended(c)
					c.ID = "new"
					return []signaling.OutboxEntry{entry("k", typeHangup)}, nil
				})
				return err
			}, signaling.ErrInvalid, `store: update call "k": invalid request: the update changed the call's ID or conversation`},
			{"update missing call", func(ctx context.Context, s testStore) error {
				_, err := s.UpdateCallOutbox(ctx, "nope", func(*signaling.Call) ([]signaling.OutboxEntry, error) {
					t.Error("fn called for a missing call")
					return []signaling.OutboxEntry{entry("nope", typeHangup)}, nil
				})
				return err
			}, signaling.ErrNotFound, `store: update call "nope": not found`},
			{"create duplicate ID", func(ctx context.Context, s testStore) error {
				return s.CreateCallOutbox(ctx, ringingCall("k", "other", time.Hour), []signaling.OutboxEntry{entry("k", typeInvite)})
			}, signaling.ErrConflict, `store: create call "k": already exists`},
			{"create invalid entry", func(ctx context.Context, s testStore) error {
				return s.CreateCallOutbox(ctx, ringingCall("new", "c", 0), []signaling.OutboxEntry{entry("new", typeInvite), notObject})
			}, signaling.ErrInvalid, `store: create call "new": outbox entry 1: invalid request: m.call.candidates content is not a JSON object`},
			{"create invalid call", func(ctx context.Context, s testStore) error {
				return s.CreateCallOutbox(ctx, ringingCall("new", "", 0), []signaling.OutboxEntry{entry("new", typeInvite)})
			}, signaling.ErrInvalid, `store: create call "new": invalid request: conversation ID is empty`},
			{"append invalid last entry", func(ctx context.Context, s testStore) error {
				return s.AppendOutbox(ctx, []signaling.OutboxEntry{entry("k", typeCandidates), noType})
			}, signaling.ErrInvalid, `store: append outbox: outbox entry 1: invalid request: event type is empty`},
			{"append without call", func(ctx context.Context, s testStore) error {
				return s.AppendOutbox(ctx, []signaling.OutboxEntry{noCall})
			}, signaling.ErrInvalid, `store: append outbox: outbox entry 0: invalid request: call ID is empty`},
			{"append truncated content", func(ctx context.Context, s testStore) error {
				return s.AppendOutbox(ctx, []signaling.OutboxEntry{entry("k", typeCandidates), truncated})
			}, signaling.ErrInvalid, `store: append outbox: outbox entry 1: invalid request: m.call.candidates content is not a JSON object`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := d.open(t, t.TempDir())
				ctx := t.Context()
				orig := ringingCall("k", "c", 0)
				mustCreate(t, s, orig)
				before := txID(t, s)

				err := tt.do(ctx, s)
				if tt.wantMsg == "" {
					if err != tt.want { //nolint:errorlint // the very same error is the contract
						t.Fatalf("got %v, want fn's error %v unchanged", err, tt.want)
					}
				} else {
					if !errors.Is(err, tt.want) {
						t.Fatalf("got %v, want %v", err, tt.want)
					}
					if err.Error() != tt.wantMsg {
						t.Errorf("got message %q, want %q", err, tt.wantMsg)
					}
				}
				if after := txID(t, s); after != before {
					t.Errorf("a transaction was committed (tx %v → %v)", before, after)
				}
				if got := pending(t, s); len(got) != 0 {
					t.Errorf("outbox: got %+v, want empty", got)
				}
				if got, err := s.Call(ctx, "k"); err != nil || !reflect.DeepEqual(got, orig) {
					t.Errorf("re-read: got %+v, %v; want %+v", got, err, orig)
				}
				if _, err := s.Call(ctx, "new"); !errors.Is(err, signaling.ErrNotFound) {
					t.Errorf("Call(new): got %v, want ErrNotFound", err)
				}
				if revs := storedRevocations(t, s); len(revs) != 0 {
					t.Errorf("revocations: got %v, want none", revs)
				}
				checkIndexes(t, s)

				// The Seq counter rolled back with the rest.
				mustAppend(t, s, entry("k", typeCandidates))
				if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{1}) {
					t.Errorf("Seq after the failure: got %v, want [1]", got)
				}
			})
		}
	})
}

func TestAppendOutboxEmpty(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		before := txID(t, s)
		for _, out := range [][]signaling.OutboxEntry{nil, {}} {
			if err := s.AppendOutbox(t.Context(), out); err != nil {
				t.Errorf("AppendOutbox(%v): %v", out, err)
			}
		}
		if after := txID(t, s); after != before {
			t.Errorf("a transaction was committed (tx %v → %v)", before, after)
		}
	})
}

// TestOutboxSeqAcrossRestarts appends through every path, empties the
// outbox and reopens the file, several times: Seq keeps growing and TxnIDs
// never repeat.
func TestOutboxSeqAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	var all []signaling.OutboxEntry
	for round := range 4 {
		s := openTemp(t, dir)
		ctx := t.Context()
		id := fmt.Sprintf("call-%d", round)
		mustAppend(t, s, entry("x", typeCandidates), entry("x", typeCandidates))
		if err := s.CreateCallOutbox(ctx, ringingCall(id, "c", 0), []signaling.OutboxEntry{entry(id, typeInvite)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UpdateCallOutbox(ctx, id, func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
			c.Status = signaling.StatusEnded
			return []signaling.OutboxEntry{entry(id, typeHangup)}, nil
		}); err != nil {
			t.Fatal(err)
		}
		got := pending(t, s)
		if len(got) != 4 {
			t.Fatalf("round %d: %d entries pending, want 4", round, len(got))
		}
		all = append(all, got...)
		// Empty the outbox both ways: an empty bucket must not restart
		// the sequence.
		for i, e := range got {
			var err error
			if i%2 == 0 {
				err = s.CompleteOutbox(ctx, e.Seq, "$ev-"+e.TxnID)
			} else {
				err = s.DropOutbox(ctx, e.Seq)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.OutboxDepth(ctx); err != nil || n != 0 {
			t.Fatalf("round %d: depth %d, %v; want 0", round, n, err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	txns := map[string]uint64{}
	for i, e := range all {
		if i > 0 && e.Seq <= all[i-1].Seq {
			t.Errorf("Seq %d after %d", e.Seq, all[i-1].Seq)
		}
		if other, dup := txns[e.TxnID]; dup {
			t.Errorf("TxnID %q of entries %d and %d", e.TxnID, other, e.Seq)
		}
		txns[e.TxnID] = e.Seq
	}
	if got, want := seqs(all), []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}; !slices.Equal(got, want) {
		t.Errorf("seqs: got %v, want %v", got, want)
	}
}

func TestOutboxSurvivesRestart(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		dir := t.TempDir()
		s := d.open(t, dir)
		ctx := t.Context()
		if err := s.CreateCallOutbox(ctx, ringingCall("k", "c", 0), []signaling.OutboxEntry{entry("k", typeInvite)}); err != nil {
			t.Fatal(err)
		}
		mustAppend(t, s, entry("k", typeCandidates), entry("k", typeCandidates))
		if err := s.RetryOutbox(ctx, 2, 3, at(time.Minute)); err != nil {
			t.Fatal(err)
		}
		want := pending(t, s)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s = d.open(t, dir)
		if got := pending(t, s); !reflect.DeepEqual(got, want) {
			t.Errorf("after reopen: got %+v\nwant %+v", got, want)
		}
		if want[1].Attempts != 3 || !want[1].NextAttempt.Equal(at(time.Minute)) {
			t.Errorf("retried entry: %+v", want[1])
		}
		if n, err := s.OutboxDepth(ctx); err != nil || n != 3 {
			t.Errorf("OutboxDepth: %d, %v; want 3", n, err)
		}
	})
}

func TestPendingOutboxOrderAndLimit(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		// Over 256 entries, so the order of the keys' higher bytes counts too.
		var out []signaling.OutboxEntry
		for i := range 300 {
			out = append(out, entry(fmt.Sprintf("call-%03d", i), typeCandidates))
		}
		mustAppend(t, s, out...)
		for i := 300; i < 303; i++ {
			mustAppend(t, s, entry(fmt.Sprintf("call-%03d", i), typeCandidates))
		}
		all := pending(t, s)
		if len(all) != 303 {
			t.Fatalf("got %d entries, want 303", len(all))
		}
		for i, e := range all {
			if want := fmt.Sprintf("call-%03d", i); e.Seq != uint64(i+1) || e.CallID != want {
				t.Fatalf("entry %d: seq %d call %s; want seq %d call %s", i, e.Seq, e.CallID, i+1, want)
			}
		}

		tests := []struct {
			limit int
			want  []signaling.OutboxEntry
		}{
			{1, all[:1]},
			{5, all[:5]},
			{257, all[:257]},
			{303, all},
			{1000, all},
			{0, all},
		}
		for _, tt := range tests {
			got, err := s.PendingOutbox(ctx, tt.limit)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("PendingOutbox(%d): got %d entries %v, %v; want %d", tt.limit, len(got), err, got == nil, len(tt.want))
			}
		}

		// Completing the head and dropping from the middle keeps the order.
		for _, seq := range []uint64{1, 2, 100, 256, 257} {
			if err := s.DropOutbox(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.PendingOutbox(ctx, 4)
		if err != nil || !slices.Equal(seqs(got), []uint64{3, 4, 5, 6}) {
			t.Errorf("after drops: got %v, %v; want [3 4 5 6]", seqs(got), err)
		}
		got = pending(t, s)
		if len(got) != 298 || !slices.IsSorted(seqs(got)) {
			t.Errorf("after drops: %d entries, sorted %v; want 298 sorted", len(got), slices.IsSorted(seqs(got)))
		}

		_, err = s.PendingOutbox(ctx, -1)
		if !errors.Is(err, signaling.ErrInvalid) || err.Error() != "store: pending outbox: invalid request: limit -1 is negative" {
			t.Errorf("PendingOutbox(-1): got %v", err)
		}
	})
}

func TestOutboxTxnID(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		dir := t.TempDir()
		s := d.open(t, dir)
		ctx := t.Context()
		mine := entry("k", typeCandidates)
		mine.TxnID = "client-txn"
		mustAppend(t, s, entry("k", typeInvite), mine, entry("k", typeCandidates))

		id := instanceOf(t, s)
		want := map[uint64]string{1: "icebox-" + id + "-1", 2: "client-txn", 3: "icebox-" + id + "-3"}
		check := func(when string) {
			t.Helper()
			got := map[uint64]string{}
			for _, e := range pending(t, s) {
				got[e.Seq] = e.TxnID
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: TxnIDs %v, want %v", when, got, want)
			}
		}
		check("appended")
		for attempt := 1; attempt <= 3; attempt++ {
			for seq := range want {
				if err := s.RetryOutbox(ctx, seq, attempt, at(time.Duration(attempt)*time.Second)); err != nil {
					t.Fatal(err)
				}
			}
		}
		check("after retries")
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = d.open(t, dir)
		check("after reopen")
	})
}

func TestCompleteOutbox(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		dir := t.TempDir()
		s := d.open(t, dir)
		ctx := t.Context()

		k := ringingCall("k", "c", 0)
		if err := s.CreateCallOutbox(ctx, k, []signaling.OutboxEntry{entry("k", typeInvite), entry("k", typeCandidates)}); err != nil {
			t.Fatal(err)
		}
		// j came in from Matrix: it has its invite's event ID already.
		j := ringingCall("j", "c", time.Second)
		j.MatrixInviteEventID = "$inbound"
		mustCreate(t, s, j)
		mustAppend(t, s,
			entry("j", typeInvite),     // 3
			entry("ghost", typeInvite), // 4: no such call
			entry("k", typeInvite),     // 5: completed with no event ID
			entry("k", typeHangup),     // 6
		)

		steps := []struct {
			name      string
			seq       uint64
			eventID   string
			wantK     string // k's MatrixInviteEventID afterwards
			wantSeqs  []uint64
			noCommit  bool
			wantIndex map[string]string
		}{
			{"candidates set nothing", 2, "$cand", "", []uint64{1, 3, 4, 5, 6}, false,
				map[string]string{"$inbound": "j"}},
			{"invite without event ID", 5, "", "", []uint64{1, 3, 4, 6}, false,
				map[string]string{"$inbound": "j"}},
			{"invite of a call that has one", 3, "$j2", "", []uint64{1, 4, 6}, false,
				map[string]string{"$inbound": "j"}},
			{"invite of a missing call", 4, "$ghost", "", []uint64{1, 6}, false,
				map[string]string{"$inbound": "j"}},
			{"invite", 1, "$inv", "$inv", []uint64{6}, false,
				map[string]string{"$inbound": "j", "$inv": "k"}},
			{"again", 1, "$other", "$inv", []uint64{6}, true,
				map[string]string{"$inbound": "j", "$inv": "k"}},
			{"unknown seq", 999, "$x", "$inv", []uint64{6}, true,
				map[string]string{"$inbound": "j", "$inv": "k"}},
		}
		for _, st := range steps {
			before := txID(t, s)
			if err := s.CompleteOutbox(ctx, st.seq, st.eventID); err != nil {
				t.Fatalf("%s: CompleteOutbox: %v", st.name, err)
			}
			if committed := txID(t, s) != before; committed == st.noCommit {
				t.Errorf("%s: committed = %v, want %v", st.name, committed, !st.noCommit)
			}
			if got := seqs(pending(t, s)); !slices.Equal(got, st.wantSeqs) {
				t.Errorf("%s: pending %v, want %v", st.name, got, st.wantSeqs)
			}
			wantCall := k
			wantCall.MatrixInviteEventID = st.wantK
			if got, err := s.Call(ctx, "k"); err != nil || !reflect.DeepEqual(got, wantCall) {
				t.Errorf("%s: call k: got %+v, %v; want %+v", st.name, got, err, wantCall)
			}
			if got, err := s.Call(ctx, "j"); err != nil || !reflect.DeepEqual(got, j) {
				t.Errorf("%s: call j: got %+v, %v; want %+v", st.name, got, err, j)
			}
			for ev, id := range st.wantIndex {
				if got, err := s.CallByMatrixEvent(ctx, ev); err != nil || got.ID != id {
					t.Errorf("%s: CallByMatrixEvent(%s): got %q, %v; want %q", st.name, ev, got.ID, err, id)
				}
			}
			checkIndexes(t, s)
		}
		for _, ev := range []string{"$cand", "$j2", "$ghost", "$other", "$x", ""} {
			if _, err := s.CallByMatrixEvent(ctx, ev); !errors.Is(err, signaling.ErrNotFound) {
				t.Errorf("CallByMatrixEvent(%q): got %v, want ErrNotFound", ev, err)
			}
		}
		_, err := s.CallByMatrixEvent(ctx, "$nope")
		if want := `store: call by Matrix event "$nope": not found`; err == nil || err.Error() != want {
			t.Errorf("got %v, want %q", err, want)
		}

		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = d.open(t, dir)
		got, err := s.CallByMatrixEvent(ctx, "$inv")
		if err != nil || got.ID != "k" || got.MatrixInviteEventID != "$inv" {
			t.Errorf("after reopen: got %+v, %v; want call k with $inv", got, err)
		}
	})
}

// TestCompleteOutboxConflict: an event ID that is already another call's
// invite fails the completion, which writes nothing.
func TestCompleteOutboxConflict(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		k := ringingCall("k", "c", 0)
		if err := s.CreateCallOutbox(ctx, k, []signaling.OutboxEntry{entry("k", typeInvite)}); err != nil {
			t.Fatal(err)
		}
		j := ringingCall("j", "c", time.Second)
		j.MatrixInviteEventID = "$taken"
		mustCreate(t, s, j)
		before := txID(t, s)

		err := s.CompleteOutbox(ctx, 1, "$taken")
		if !errors.Is(err, signaling.ErrConflict) {
			t.Fatalf("got %v, want ErrConflict", err)
		}
		if want := `store: complete outbox entry 1: already exists: Matrix event "$taken" is the invite of call "j"`; err.Error() != want {
			t.Errorf("got message %q, want %q", err, want)
		}
		if after := txID(t, s); after != before {
			t.Errorf("a transaction was committed (tx %v → %v)", before, after)
		}
		if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{1}) {
			t.Errorf("pending: %v, want [1]", got)
		}
		if got, err := s.Call(ctx, "k"); err != nil || !reflect.DeepEqual(got, k) {
			t.Errorf("call k: got %+v, %v; want %+v", got, err, k)
		}
		checkIndexes(t, s)
	})
}

// TestMatrixEventIndexFollowsCalls: calls_by_matrix_event follows
// MatrixInviteEventID however it is written.
func TestMatrixEventIndexFollowsCalls(t *testing.T) {
	s := openTemp(t, t.TempDir())
	ctx := t.Context()
	mustCreate(t, s, ringingCall("k", "c", 0))
	in := ringingCall("in", "c", time.Second)
	in.MatrixInviteEventID = "$in"
	mustCreate(t, s, in)

	setEvent := func(id, ev string) error {
		_, err := s.UpdateCall(ctx, id, func(c *signaling.Call) error { c.MatrixInviteEventID = ev; return nil })
		return err
	}
	steps := []struct {
		name    string
		do      func() error
		wantMsg string
		want    map[string]string // event ID → call ID
	}{
		{"created with one", func() error { return nil }, "", map[string]string{"$in": "in"}},
		{"set by update", func() error { return setEvent("k", "$a") }, "",
			map[string]string{"$in": "in", "$a": "k"}},
		{"changed", func() error { return setEvent("k", "$b") }, "",
			map[string]string{"$in": "in", "$b": "k"}},
		{"taken by update", func() error { return setEvent("in", "$b") },
			`store: update call "in": already exists: Matrix event "$b" is the invite of call "k"`,
			map[string]string{"$in": "in", "$b": "k"}},
		{"taken by create", func() error {
			c := ringingCall("new", "c", 0)
			c.MatrixInviteEventID = "$in"
			return s.CreateCall(ctx, c)
		}, `store: create call "new": already exists: Matrix event "$in" is the invite of call "in"`,
			map[string]string{"$in": "in", "$b": "k"}},
		{"cleared", func() error { return setEvent("k", "") }, "", map[string]string{"$in": "in"}},
		{"freed ID reused", func() error { return setEvent("in", "$b") }, "", map[string]string{"$b": "in"}},
	}
	for _, st := range steps {
		err := st.do()
		switch {
		case st.wantMsg == "" && err != nil:
			t.Fatalf("%s: %v", st.name, err)
		case st.wantMsg != "" && !errors.Is(err, signaling.ErrConflict):
			t.Fatalf("%s: got %v, want ErrConflict", st.name, err)
		case st.wantMsg != "" && err.Error() != st.wantMsg:
			t.Errorf("%s: got message %q, want %q", st.name, err, st.wantMsg)
		}
		err = s.db.View(func(tx *bolt.Tx) error {
			got := map[string]string{}
			err := tx.Bucket(bucketCallsByMatrixEv).ForEach(func(k, v []byte) error {
				got[string(k)] = string(v)
				return nil
			})
			if !reflect.DeepEqual(got, st.want) {
				t.Errorf("%s: index %v, want %v", st.name, got, st.want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		checkIndexes(t, s)
	}
	if _, err := s.Call(ctx, "new"); !errors.Is(err, signaling.ErrNotFound) {
		t.Errorf("Call(new) after conflict: got %v, want ErrNotFound", err)
	}
}

func TestCallByMatrixEventCorruptIndex(t *testing.T) {
	s := openTemp(t, t.TempDir())
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCallsByMatrixEv).Put([]byte("$e"), []byte("gone"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CallByMatrixEvent(t.Context(), "$e")
	want := `store: call by Matrix event "$e": state file corrupt: calls_by_matrix_event entry points to missing call "gone"`
	if !errors.Is(err, ErrCorrupt) || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestRetryOutbox(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		mustAppend(t, s, entry("k", typeCandidates), entry("k", typeHangup))
		orig := pending(t, s)

		for _, r := range []struct {
			attempts int
			next     time.Time
		}{{1, at(time.Second)}, {2, at(5 * time.Second)}, {0, time.Time{}}} {
			if err := s.RetryOutbox(ctx, 1, r.attempts, r.next); err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(orig)
			want[0].Attempts = r.attempts
			want[0].NextAttempt = r.next
			if got := pending(t, s); !reflect.DeepEqual(got, want) {
				t.Errorf("Retry(%d, %v): got %+v\nwant %+v", r.attempts, r.next, got, want)
			}
		}

		tests := []struct {
			name     string
			seq      uint64
			attempts int
			want     error
			wantMsg  string
		}{
			{"unknown seq", 99, 1, signaling.ErrNotFound, "store: retry outbox entry 99: not found"},
			{"negative attempts", 1, -1, signaling.ErrInvalid, "store: retry outbox entry 1: invalid request: attempts -1 is negative"},
		}
		for _, tt := range tests {
			before := txID(t, s)
			err := s.RetryOutbox(ctx, tt.seq, tt.attempts, at(time.Hour))
			if !errors.Is(err, tt.want) || err.Error() != tt.wantMsg {
				t.Errorf("%s: got %v, want %q", tt.name, err, tt.wantMsg)
			}
			if after := txID(t, s); after != before {
				t.Errorf("%s: a transaction was committed", tt.name)
			}
		}
	})
}

func TestDropOutbox(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		k := ringingCall("k", "c", 0)
		if err := s.CreateCallOutbox(ctx, k, []signaling.OutboxEntry{entry("k", typeInvite), entry("k", typeCandidates)}); err != nil {
			t.Fatal(err)
		}
		if err := s.DropOutbox(ctx, 1); err != nil {
			t.Fatal(err)
		}
		if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{2}) {
			t.Errorf("pending: %v, want [2]", got)
		}
		if got, err := s.Call(ctx, "k"); err != nil || !reflect.DeepEqual(got, k) {
			t.Errorf("a dropped invite changed the call: %+v, %v", got, err)
		}
		before := txID(t, s)
		if err := s.DropOutbox(ctx, 1); err != nil {
			t.Errorf("second drop: %v", err)
		}
		if after := txID(t, s); after != before {
			t.Errorf("dropping an unknown entry committed (tx %v → %v)", before, after)
		}
		checkIndexes(t, s)
	})
}

// TestCorruptOutboxEntry: an entry that does not decode stops the reads
// with ErrCorrupt, and can be dropped.
func TestCorruptOutboxEntry(t *testing.T) {
	s := openTemp(t, t.TempDir())
	ctx := t.Context()
	mustAppend(t, s, entry("k", typeCandidates), entry("k", typeCandidates))
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Put(seqKey(1), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PendingOutbox(ctx, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PendingOutbox: got %v, want ErrCorrupt", err)
	}
	if err := s.CompleteOutbox(ctx, 1, "$e"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("CompleteOutbox: got %v, want ErrCorrupt", err)
	}
	if err := s.DropOutbox(ctx, 1); err != nil {
		t.Fatalf("DropOutbox: %v", err)
	}
	if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{2}) {
		t.Errorf("pending after drop: %v, want [2]", got)
	}

	// An entry stored under another Seq is corrupt too.
	err = s.db.Update(func(tx *bolt.Tx) error {
		raw, err := json.Marshal(signaling.OutboxEntry{Seq: 7})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketOutbox).Put(seqKey(3), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.PendingOutbox(ctx, 0)
	if want := "store: pending outbox: state file corrupt: outbox entry 3 has seq 7"; !errors.Is(err, ErrCorrupt) || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestOutboxDepth(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		ctx := t.Context()
		depth := func() int {
			t.Helper()
			n, err := s.OutboxDepth(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := depth(); n != 0 {
			t.Errorf("empty: %d", n)
		}
		mustAppend(t, s, entry("k", typeCandidates), entry("k", typeCandidates), entry("k", typeHangup))
		if n := depth(); n != 3 {
			t.Errorf("after 3 appends: %d", n)
		}
		if err := s.CompleteOutbox(ctx, 2, "$e"); err != nil {
			t.Fatal(err)
		}
		if n := depth(); n != 2 {
			t.Errorf("after a completion: %d", n)
		}
	})
}

func TestOutboxCancelledContext(t *testing.T) {
	forDrivers(t, func(t *testing.T, d driver) {
		s := d.open(t, t.TempDir())
		if err := s.CreateCallOutbox(t.Context(), ringingCall("k", "c", 0), []signaling.OutboxEntry{entry("k", typeInvite)}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		before := txID(t, s)

		fnCalled := false
		one := []signaling.OutboxEntry{entry("k", typeCandidates)}
		tests := []struct {
			name string
			do   func() error
		}{
			{"CreateCallOutbox", func() error { return s.CreateCallOutbox(ctx, ringingCall("new", "c", 0), one) }},
			{"UpdateCallOutbox", func() error {
				_, err := s.UpdateCallOutbox(ctx, "k", func(*signaling.Call) ([]signaling.OutboxEntry, error) {
					fnCalled = true
					return one, nil
				})
				return err
			}},
			{"AppendOutbox", func() error { return s.AppendOutbox(ctx, one) }},
			{"AppendOutbox empty", func() error { return s.AppendOutbox(ctx, nil) }},
			{"PendingOutbox", func() error { _, err := s.PendingOutbox(ctx, 10); return err }},
			{"OutboxDepth", func() error { _, err := s.OutboxDepth(ctx); return err }},
			{"CompleteOutbox", func() error { return s.CompleteOutbox(ctx, 1, "$e") }},
			{"RetryOutbox", func() error { return s.RetryOutbox(ctx, 1, 1, at(time.Minute)) }},
			{"DropOutbox", func() error { return s.DropOutbox(ctx, 1) }},
			{"CallByMatrixEvent", func() error { _, err := s.CallByMatrixEvent(ctx, "$e"); return err }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if err := tt.do(); !errors.Is(err, context.Canceled) {
					t.Fatalf("got %v, want context.Canceled", err)
				}
			})
		}
		if fnCalled {
			t.Error("UpdateCallOutbox ran fn under a cancelled context")
		}
		if after := txID(t, s); after != before {
			t.Errorf("a transaction was committed under a cancelled context (tx %v → %v)", before, after)
		}
		if got := seqs(pending(t, s)); !slices.Equal(got, []uint64{1}) {
			t.Errorf("pending: %v, want [1]", got)
		}
	})
}

// BenchmarkUpdateCallOutbox measures one durable UpdateCallOutbox (read, fn,
// write call, indexes and one outbox entry, fsync) on a store holding 1000
// calls; the outbox grows by one entry per iteration, as it would with the
// homeserver down.
func BenchmarkUpdateCallOutbox(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	for i := range 1000 {
		mustCreate(b, s, ringingCall(fmt.Sprintf("call-%04d", i), fmt.Sprintf("conv-%02d", i%50), time.Duration(i)*time.Second))
	}
	ctx := context.Background()
	out := []signaling.OutboxEntry{entry("call-0500", typeCandidates)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		_, err := s.UpdateCallOutbox(ctx, "call-0500", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
			if i%2 == 0 {
				c.Status = signaling.StatusAnswered
			} else {
				c.Status = signaling.StatusRinging
			}
			return out, nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
