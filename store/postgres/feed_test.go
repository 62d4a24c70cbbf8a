package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestFeedLateCommit: a writer draws its feed id, then a second writer
// draws a higher one and commits first; a reader reads in between (it gets
// the second row) and again after the first writer commits: it gets the
// first row then, exactly once, although its id is below the one it read
// before. Real transactions on two connections of the test PostgreSQL; a
// reader that goes on from the last id it read ("id > last") never
// returns the late row. Then the same with the reader's batches one row
// long, and with a writer that rolls back.
func TestFeedLateCommit(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	st, reader := open(t, dsn), open(t, dsn)
	ctx := t.Context()
	begin := func() pgx.Tx {
		t.Helper()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return tx
	}
	write := func(tx pgx.Tx, call string) {
		t.Helper()
		if err := st.WriteFeedTx(ctx, tx, []postgres.FeedItem{{Kind: postgres.FeedEvent, CallID: call, Body: []byte(call)}}); err != nil {
			t.Fatal(err)
		}
	}
	commit := func(tx pgx.Tx) {
		t.Helper()
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// read reads on from cur with batches of limit, until a short batch.
	read := func(cur postgres.FeedCursor, limit int) ([]string, postgres.FeedCursor) {
		t.Helper()
		var calls []string
		for range 100 {
			// A deadline: a reader that waited for the open writer
			// (the old feed lock) fails here instead of hanging.
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			items, next, err := reader.FeedAfter(rctx, cur, limit)
			cancel()
			if err != nil {
				t.Fatalf("FeedAfter: %v", err)
			}
			cur = next
			for _, it := range items {
				calls = append(calls, it.CallID)
			}
			if len(items) < limit {
				return calls, cur
			}
		}
		t.Fatal("the reader never reached the feed's end")
		return nil, cur
	}

	for _, limit := range []int{100, 1} {
		cur, err := reader.FeedHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		late, early := begin(), begin()
		write(late, "late")
		write(early, "early")
		commit(early)
		var ids []int64
		for _, call := range []string{"late", "early"} {
			var id int64
			if err := late.QueryRow(ctx, `SELECT max(id) FROM icebox_feed WHERE call_id = $1`, call).Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if ids[0] >= ids[1] {
			t.Fatalf("limit %d: the late writer's id %d is not below the early one's %d: the test shows nothing", limit, ids[0], ids[1])
		}
		got, c := read(cur, limit)
		if !slices.Equal(got, []string{"early"}) {
			t.Fatalf("limit %d: while the late writer runs: read %v, want [early]", limit, got)
		}
		cur = c
		rolled := begin()
		write(rolled, "rolled-back")
		commit(late)
		if err := rolled.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		got, c = read(cur, limit)
		if !slices.Equal(got, []string{"late"}) {
			t.Fatalf("limit %d: after the late writer's commit: read %v, want [late] (id %d, below the %d read before)", limit, got, ids[0], ids[1])
		}
		cur = c
		if got, _ = read(cur, limit); len(got) != 0 {
			t.Fatalf("limit %d: read again: %v, want nothing", limit, got)
		}
		if _, err := st.PruneFeed(ctx, time.Now().Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFeedBatches: a reader going on in batches smaller than what is new
// reads every row once, in id order within a step, and FeedHead starts
// after what was committed before it.
func TestFeedBatches(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	st := open(t, dsn)
	ctx := t.Context()
	appendN := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			if err := st.AppendFeed(ctx, []postgres.FeedItem{{Kind: postgres.FeedEvent, CallID: "c", Body: []byte{byte(i)}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendN(0, 3) // before the head: not the reader's
	cur, err := st.FeedHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	appendN(3, 10)
	var got []byte
	for range 100 {
		items, next, err := st.FeedAfter(ctx, cur, 3)
		if err != nil {
			t.Fatal(err)
		}
		cur = next
		for _, it := range items {
			got = append(got, it.Body[0])
		}
		if len(items) < 3 {
			break
		}
	}
	if want := []byte{3, 4, 5, 6, 7, 8, 9, 10, 11, 12}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	appendN(13, 1)
	items, _, err := st.FeedAfter(ctx, cur, 3)
	if err != nil || len(items) != 1 || items[0].Body[0] != 13 {
		t.Fatalf("the next read: %v, %v; want the one new row", items, err)
	}
}

// TestMigrateFeedXid: rows written at schema 5 (no xid) get xid 0 and
// count as read for a reader from the head; rows written after the
// migration are read.
func TestMigrateFeedXid(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	restore := postgres.OldSchema(5)
	old := open(t, dsn)
	restore()
	ctx := t.Context()
	if _, err := old.Pool().Exec(ctx, `INSERT INTO icebox_feed (node, kind, call_id, created_ns, body) VALUES ('n', 'event', 'old', 1, '')`); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s := open(t, dsn)
	var xid string
	if err := s.Pool().QueryRow(ctx, `SELECT xid::text FROM icebox_feed WHERE call_id = 'old'`).Scan(&xid); err != nil || xid != "0" {
		t.Fatalf("the old row's xid: %q, %v; want 0", xid, err)
	}
	cur, err := s.FeedHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AppendFeed(ctx, []postgres.FeedItem{{Kind: postgres.FeedEvent, CallID: "new", Body: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	items, _, err := s.FeedAfter(ctx, cur, 10)
	if err != nil || len(items) != 1 || items[0].CallID != "new" {
		t.Fatalf("read from the head after the migration: %+v, %v; want the new row only", items, err)
	}
}
