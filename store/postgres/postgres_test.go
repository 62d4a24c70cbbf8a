package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// The driver's behavioural contract is tested in package store, where the
// same suite runs on bbolt and PostgreSQL. These tests are what only a
// database server has: nodes racing on two connections, the server going
// away, restarting, and schemas and DSNs that are wrong.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, dsn string, opts ...func(*postgres.Options)) *postgres.Store {
	t.Helper()
	o := postgres.Options{DSN: dsn, Records: store.Records{}}
	for _, f := range opts {
		f(&o)
	}
	s, err := postgres.Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ringing(id string) signaling.Call {
	return signaling.Call{
		ID: id, ConversationID: "conv", Initiator: "@alice:x", Invitee: "@bob:x", PartyID: "p-" + id,
		Status: signaling.StatusRinging, SDPOffer: "v=0\r\n", LifetimeMS: 60000, Version: "1",
		CreatedAt: time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC),
	}
}

func invite(callID string) signaling.OutboxEntry {
	return signaling.OutboxEntry{CallID: callID, RoomID: "!r:x", EventType: "m.call.answer", Content: []byte(`{"call_id":"` + callID + `"}`)}
}

// TestTransitionRaceCommitsOnce: two nodes (two pools on one database)
// answer, expire and hang up the same ringing call at once, many times
// over; each call gets exactly one transition out of ringing, with exactly
// its one outbox entry and one revocation.
func TestTransitionRaceCommitsOnce(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := t.Context()
	const calls, racers = 20, 8
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	for i := range calls {
		if err := a.CreateCall(ctx, ringing("race-"+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range calls {
		id := "race-" + string(rune('a'+i))
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			won   []string
			other int
		)
		for r := range racers {
			node := a
			if r%2 == 1 {
				node = b
			}
			to := []signaling.Status{signaling.StatusAnswered, signaling.StatusExpired, signaling.StatusEnded}[r%3]
			wg.Go(func() {
				_, err := node.UpdateCallOutbox(ctx, id, func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
					if c.Status != signaling.StatusRinging {
						return nil, &signaling.TransitionError{Code: "not_ringing", Status: c.Status}
					}
					c.Status = to
					if to.Terminal() {
						c.RevokedUntil = &until
					}
					return []signaling.OutboxEntry{invite(id)}, nil
				})
				mu.Lock()
				defer mu.Unlock()
				var te *signaling.TransitionError
				switch {
				case err == nil:
					won = append(won, string(to))
				case errors.As(err, &te):
					other++
				default:
					t.Errorf("%s: %v", id, err)
				}
			})
		}
		wg.Wait()
		if len(won) != 1 || other != racers-1 {
			t.Fatalf("%s: %d transitions committed (%v), %d refused; want 1 and %d", id, len(won), won, other, racers-1)
		}
	}
	out, err := a.PendingOutbox(ctx, 0)
	if err != nil || len(out) != calls {
		t.Fatalf("outbox: %d entries, %v; want %d, one per call", len(out), err, calls)
	}
	revs, err := b.Revocations(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ended := 0
	for i := range calls {
		c, err := b.Call(ctx, "race-"+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		if c.Status.Terminal() {
			ended++
		}
	}
	if len(revs) != ended {
		t.Errorf("%d revocations for %d ended calls", len(revs), ended)
	}
	t.Logf("%d calls × %d racers on 2 pools: one transition each (%d ended, %d answered)", calls, racers, ended, calls-ended)
}

// TestDatabaseGoneMidRequest: the server stops while a transition is
// inside its transaction; the transition fails with ErrStoreUnavailable (the
// API's 503 store_unavailable) and, once the server is back, nothing of it
// was written: neither the call's change, nor its outbox entry, nor its
// revocation.
func TestDatabaseGoneMidRequest(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	s := open(t, dsn)
	ctx := t.Context()
	orig := ringing("gone")
	if err := s.CreateCall(ctx, orig); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	_, err := s.UpdateCallOutbox(ctx, "gone", func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		c.Status, c.RevokedUntil = signaling.StatusEnded, &until
		return []signaling.OutboxEntry{invite("gone")}, nil
	})
	if !errors.Is(err, signaling.ErrStoreUnavailable) {
		t.Fatalf("got %v, want ErrStoreUnavailable", err)
	}
	t.Logf("error while the server is down: %v", err)
	// Reads fail the same way meanwhile, and the readiness probe says so.
	if _, err := s.Call(ctx, "gone"); !errors.Is(err, signaling.ErrStoreUnavailable) {
		t.Errorf("Call while down: got %v, want ErrStoreUnavailable", err)
	}
	if err := s.Ping(); err == nil {
		t.Error("Ping while down: nil")
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The same pool reconnects.
	deadline := time.Now().Add(10 * time.Second)
	var got signaling.Call
	for {
		if got, err = s.Call(ctx, "gone"); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // pacing the poll, not waiting for a condition
	}
	if err != nil {
		t.Fatalf("Call after restart: %v", err)
	}
	if got.Status != signaling.StatusRinging || got.RevokedUntil != nil {
		t.Errorf("half-written: call is %s, revoked until %v", got.Status, got.RevokedUntil)
	}
	if out, err := s.PendingOutbox(ctx, 0); err != nil || len(out) != 0 {
		t.Errorf("half-written: outbox %v, %v", out, err)
	}
	if revs, err := s.Revocations(ctx, time.Now()); err != nil || len(revs) != 0 {
		t.Errorf("half-written: revocations %v, %v", revs, err)
	}
	if err := s.Ping(); err != nil {
		t.Errorf("Ping after restart: %v", err)
	}
}

// TestSurvivesRestart: what was committed is there after PostgreSQL
// restarts, read by a new pool (a restarted node).
func TestSurvivesRestart(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	ctx := t.Context()
	s := open(t, dsn)
	c := ringing("keep")
	c.SDPAnswer = "v=0\r\na=\x00nul\r\n"
	if err := s.CreateCallOutbox(ctx, c, []signaling.OutboxEntry{invite("keep")}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutConversation(ctx, signaling.Conversation{ID: "conv", Participants: []string{"@alice:x", "@bob:x"}, RoomID: "!r:x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveSyncValue(ctx, "next_batch/@icebox:x", "s42"); err != nil {
		t.Fatal(err)
	}
	inst, _ := s.InstanceID()
	s.Close()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dsn)
	got, err := s2.Call(ctx, "keep")
	if err != nil || got.SDPAnswer != c.SDPAnswer || got.Status != signaling.StatusRinging {
		t.Errorf("call after restart: %+v, %v", got, err)
	}
	if conv, err := s2.ConversationByRoom(ctx, "!r:x"); err != nil || conv.ID != "conv" {
		t.Errorf("conversation after restart: %+v, %v", conv, err)
	}
	if v, err := s2.LoadSyncValue(ctx, "next_batch/@icebox:x"); err != nil || v != "s42" {
		t.Errorf("sync value after restart: %q, %v", v, err)
	}
	if out, err := s2.PendingOutbox(ctx, 0); err != nil || len(out) != 1 || !strings.HasPrefix(out[0].TxnID, "icebox-"+inst+"-") {
		t.Errorf("outbox after restart: %+v, %v (instance %s)", out, err, inst)
	}
	if inst2, _ := s2.InstanceID(); inst2 != inst {
		t.Errorf("instance ID changed across restart: %s → %s", inst, inst2)
	}
}

// TestStatementTimeout: a transition that waits longer than the statement
// timeout for a call another node holds locked fails with
// ErrStoreUnavailable instead of hanging the request.
func TestStatementTimeout(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	ctx := t.Context()
	s := open(t, dsn, func(o *postgres.Options) { o.StatementTimeout = 200 * time.Millisecond })
	if err := s.CreateCall(ctx, ringing("locked")); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // the test ends either way
	if _, err := tx.Exec(ctx, `SELECT 1 FROM icebox_calls WHERE id = 'locked' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateCall(ctx, "locked", func(c *signaling.Call) error { c.Status = signaling.StatusAnswered; return nil })
	if !errors.Is(err, signaling.ErrStoreUnavailable) {
		t.Fatalf("got %v, want ErrStoreUnavailable", err)
	}
}

// TestOpenRefuses: a DSN that does not parse, a server that is not there,
// a database of a newer schema: each a clear error, and nothing written.
func TestOpenRefuses(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := t.Context()

	newer := srv.NewDatabase(t)
	s := open(t, newer)
	if _, err := s.Pool().Exec(ctx, `UPDATE icebox_meta SET value = '99' WHERE key = 'schema_version'`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// A database with only a newer meta table: refusing it must not even
	// create this build's tables.
	bare := srv.NewDatabase(t)
	conn, err := pgx.Connect(ctx, bare)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE icebox_meta (key text PRIMARY KEY, value text NOT NULL); INSERT INTO icebox_meta VALUES ('schema_version', '7')`); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		dsn     string
		want    error
		wantMsg string
	}{
		{"empty DSN", "", postgres.ErrConfig, "the DSN is empty"},
		{"unparsable DSN", "postgres://icebox@[::1:5432/x", postgres.ErrConfig, "bad database configuration"},
		{"no server", "host=/nonexistent port=5432 user=icebox dbname=x connect_timeout=2", postgres.ErrUnreachable, "database unreachable: postgres://"},
		{"no such database", srv.DSN("nope"), postgres.ErrUnreachable, `database "nope" does not exist`},
		{"newer schema", newer, postgres.ErrNewerSchema, "the database has schema 99, this build knows " + strconv.Itoa(postgres.SchemaVersion())},
		{"newer schema, bare", bare, postgres.ErrNewerSchema, "the database has schema 7, this build knows " + strconv.Itoa(postgres.SchemaVersion())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := postgres.Open(ctx, postgres.Options{DSN: tt.dsn, Records: store.Records{}, ConnectTimeout: 3 * time.Second})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("got %v, want %v containing %q", err, tt.want, tt.wantMsg)
			}
		})
	}
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil || tables != 1 {
		t.Errorf("after refusing the bare newer database: %d tables, %v; want only icebox_meta", tables, err)
	}
	var v string
	if err := conn.QueryRow(ctx, `SELECT value FROM icebox_meta WHERE key = 'schema_version'`).Scan(&v); err != nil || v != "7" {
		t.Errorf("schema version after refusal: %q, %v", v, err)
	}
	conn.Close(ctx)
}

// TestFeed: items two nodes append come back in commit order after any id
// a reader saw, NOTIFY wakes a listener on the other pool, and pruning
// deletes by age.
func TestFeed(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := t.Context()
	if _, err := b.FeedHead(ctx); err != nil {
		t.Fatalf("FeedHead of an empty feed: %v", err)
	}
	woken := make(chan struct{}, 16)
	lctx, stop := context.WithCancel(ctx)
	listening := make(chan error, 1)
	go func() {
		listening <- b.ListenFeed(lctx, func() {
			select {
			case woken <- struct{}{}:
			default:
			}
		})
	}()
	<-woken // the first wake: LISTEN is in effect
	var wg sync.WaitGroup
	for w := range 4 {
		node := a
		if w%2 == 1 {
			node = b
		}
		wg.Go(func() {
			for i := range 25 {
				if err := node.AppendFeed(ctx, []postgres.FeedItem{{Node: "n" + string(rune('0'+w)), Kind: "event", CallID: "c", Body: []byte{byte(i)}}}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-woken:
	case <-time.After(5 * time.Second):
		t.Fatal("no NOTIFY reached the listener")
	}
	items, _, err := b.FeedAfter(ctx, postgres.FeedCursor{}, 1000)
	if err != nil || len(items) != 100 {
		t.Fatalf("FeedAfter: %d items, %v; want 100", len(items), err)
	}
	next := map[string]byte{}
	for i, it := range items {
		if i > 0 && it.ID <= items[i-1].ID {
			t.Fatalf("ids out of order: %d after %d", it.ID, items[i-1].ID)
		}
		if it.Body[0] != next[it.Node] {
			t.Fatalf("node %s: item %d read before %d", it.Node, it.Body[0], next[it.Node])
		}
		next[it.Node]++
	}
	if n, err := a.PruneFeed(ctx, time.Now().Add(time.Minute)); err != nil || n != 100 {
		t.Errorf("PruneFeed: %d, %v; want 100", n, err)
	}
	stop()
	if err := <-listening; err != nil {
		t.Errorf("ListenFeed: %v", err)
	}
}

// TestLease: one holder at a time; the lease is free again when its holder
// releases it or its store (process) goes away.
func TestLease(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	ctx := t.Context()
	la, ok, err := a.TryLease(ctx, "matrix", 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("first TryLease: %v, %v", ok, err)
	}
	if _, ok, err := b.TryLease(ctx, "matrix", 10*time.Second); err != nil || ok {
		t.Fatalf("second TryLease while held: %v, %v; want refused", ok, err)
	}
	if lo, ok, err := b.TryLease(ctx, "other", 0); err != nil || !ok {
		t.Fatalf("a lease of another name: %v, %v", ok, err)
	} else {
		_ = lo.Release()
	}
	if err := la.Release(); err != nil {
		t.Fatal(err)
	}
	lb, ok, err := b.TryLease(ctx, "matrix", 10*time.Second)
	if err != nil || !ok {
		t.Fatalf("TryLease after release: %v, %v", ok, err)
	}
	_ = lb.Release()
}

// TestCreateRace: two nodes creating the same call ID at once: one
// succeeds, the other gets ErrConflict.
func TestCreateRace(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	a, b := open(t, dsn), open(t, dsn)
	for i := range 20 {
		id := "dup-" + string(rune('a'+i))
		errs := make(chan error, 2)
		for _, s := range []*postgres.Store{a, b} {
			go func() { errs <- s.CreateCall(t.Context(), ringing(id)) }()
		}
		e1, e2 := <-errs, <-errs
		if (e1 == nil) == (e2 == nil) || !(errors.Is(e1, signaling.ErrConflict) || errors.Is(e2, signaling.ErrConflict)) {
			t.Fatalf("%s: got %v and %v; want one nil and one ErrConflict", id, e1, e2)
		}
	}
}

// TestFeedInTransaction: with Options.Feed, a transition's events
// (signaling.TxEvents) and its revocation are written to the feed in the
// transaction that commits it. Two nodes race transitions on the same calls
// while a reader follows the feed: it skips no row, and each call's events
// come in the order of its transitions' commits (a counter the transitions
// increment under the call's row lock).
func TestFeedInTransaction(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	feed := func(o *postgres.Options) { o.Feed = true }
	a, b := open(t, dsn, feed), open(t, dsn, feed)
	ctx := t.Context()
	const calls, racers, each = 3, 6, 15
	for i := range calls {
		c := ringing("feed-" + string(rune('a'+i)))
		c.LifetimeMS = 0 // the transitions' counter
		if err := a.CreateCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu     sync.Mutex
		read   []postgres.FeedItem
		stop   = make(chan struct{})
		reader = make(chan error, 1)
	)
	go func() { // follows the feed as a node does, while the writers run
		var head postgres.FeedCursor
		for {
			select {
			case <-stop:
				reader <- nil
				return
			default:
			}
			items, next, err := b.FeedAfter(ctx, head, 100)
			if err != nil {
				reader <- err
				return
			}
			head = next
			mu.Lock()
			read = append(read, items...)
			mu.Unlock()
		}
	}()
	var wg sync.WaitGroup
	for r := range racers {
		node := a
		if r%2 == 1 {
			node = b
		}
		wg.Go(func() {
			for i := range each {
				id := "feed-" + string(rune('a'+(r+i)%calls))
				tctx, j := signaling.WithTxEvents(ctx)
				_, err := node.UpdateCallOutbox(tctx, id, func(c *signaling.Call) ([]signaling.OutboxEntry, error) {
					c.LifetimeMS++
					j.Set(signaling.Event{Type: "Test", CallID: id, ConversationID: "conv", Recipients: []string{"@alice:x"},
						Payload: map[string]int64{"n": c.LifetimeMS}})
					return nil, nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// The last transition of each call ends it: one revocation each.
	for i := range calls {
		id := "feed-" + string(rune('a'+i))
		until := time.Now().Add(time.Hour)
		if _, err := a.UpdateCall(ctx, id, func(c *signaling.Call) error {
			c.Status, c.RevokedUntil = signaling.StatusEnded, &until
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	all, _, err := a.FeedAfter(ctx, postgres.FeedCursor{}, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if want := racers*each + calls; len(all) != want {
		t.Fatalf("the feed holds %d items, want %d (one per transition, one revocation per call)", len(all), want)
	}
	// The reader's last read must see the end.
	if !waitUntil(5*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(read) >= len(all) }) {
		t.Fatalf("the reader did not read all %d items", len(all))
	}
	close(stop)
	if err := <-reader; err != nil {
		t.Fatal(err)
	}
	if len(read) != len(all) {
		t.Fatalf("the reader read %d items, the feed holds %d: it skipped or repeated some", len(read), len(all))
	}
	// Each row exactly once; rows of different calls may come in another
	// interleaving than id order (only each call's order is kept).
	ids := map[int64]bool{}
	for _, it := range all {
		ids[it.ID] = true
	}
	for _, it := range read {
		if !ids[it.ID] {
			t.Fatalf("the reader read id %d twice, or one the feed does not hold", it.ID)
		}
		delete(ids, it.ID)
	}
	last := map[string]int64{}
	revokes := 0
	for _, it := range read {
		if it.Kind == postgres.FeedRevoke {
			revokes++
			continue
		}
		ev, err := postgres.DecodeFeedEvent(it.Body)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ N int64 }
		if err := json.Unmarshal(ev.Payload.(json.RawMessage), &p); err != nil {
			t.Fatal(err)
		}
		if p.N != last[ev.CallID]+1 {
			t.Fatalf("call %s: event %d after %d (feed id %d): not in commit order", ev.CallID, p.N, last[ev.CallID], it.ID)
		}
		last[ev.CallID] = p.N
	}
	if revokes != calls {
		t.Errorf("%d revocations in the feed, want %d", revokes, calls)
	}
}

func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return cond()
}
