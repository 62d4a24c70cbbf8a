package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// The behavioural tests of this package run against every driver: bbolt
// (this package) and PostgreSQL (store/postgres, on a real server that
// TestMain starts). One suite, two implementations: forDrivers runs a
// test's body once per driver, and the helpers that look under the
// interface (revocations stored, indexes, whether anything was committed)
// know both.

// testStore is every method the drivers share.
type testStore interface {
	signaling.Store
	signaling.RoomIndex
	signaling.IdempotencyStore
	PendingOutbox(ctx context.Context, limit int) ([]signaling.OutboxEntry, error)
	OutboxDepth(ctx context.Context) (int, error)
	CompleteOutbox(ctx context.Context, seq uint64, eventID string) error
	RetryOutbox(ctx context.Context, seq uint64, attempts int, next time.Time) error
	DropOutbox(ctx context.Context, seq uint64) error
	CallByMatrixEvent(ctx context.Context, eventID string) (signaling.Call, error)
	MarkEventSeen(ctx context.Context, eventID string, at time.Time) (bool, error)
	PruneSeenEvents(ctx context.Context, before time.Time) (int, error)
	SaveSyncValue(ctx context.Context, key, value string) error
	LoadSyncValue(ctx context.Context, key string) (string, error)
	InstanceID() (string, error)
	Ping() error
	Close() error
}

var (
	_ testStore = (*Store)(nil)
	_ testStore = (*postgres.Store)(nil)
)

// driver opens a store of one kind. open(t, dir) with the same dir opens
// the same data again (bbolt: the file in dir; PostgreSQL: a database
// named after dir).
type driver struct {
	name string
	open func(t *testing.T, dir string) testStore
}

// pgServer is the PostgreSQL server of this package's tests (TestMain);
// nil when PostgreSQL is not installed (outside CI only).
var pgServer *pgtest.Server

func bboltDriver() driver {
	return driver{name: "bbolt", open: func(t *testing.T, dir string) testStore { return openTemp(t, dir) }}
}

func postgresDriver() driver {
	return driver{name: "postgres", open: openPostgres}
}

// openPostgres opens (creating it if needed) the database of dir.
func openPostgres(t *testing.T, dir string) testStore {
	t.Helper()
	if pgServer == nil {
		t.Skip("PostgreSQL is not installed: run `make test-deps` or `apt-get install postgresql`")
	}
	sum := sha256.Sum256([]byte(dir))
	dsn, err := pgServer.CreateDatabase("t" + hex.EncodeToString(sum[:12]))
	if err != nil {
		t.Fatal(err)
	}
	s, err := postgres.Open(t.Context(), postgres.Options{DSN: dsn, Records: Records{}})
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// forDrivers runs body once per driver, as subtests named after them.
func forDrivers(t *testing.T, body func(t *testing.T, d driver)) {
	t.Helper()
	for _, d := range []driver{bboltDriver(), postgresDriver()} {
		t.Run(d.name, func(t *testing.T) { body(t, d) })
	}
}

// startPostgres starts the package's PostgreSQL server for TestMain; it
// returns a stop function. Without PostgreSQL the postgres subtests skip,
// or, under CI=true, the package fails.
func startPostgres() (stop func(), err error) {
	s, ok, err := pgtest.StartMain()
	switch {
	case err != nil:
		return nil, err
	case !ok && os.Getenv("CI") == "true":
		return nil, fmt.Errorf("PostgreSQL is not installed (CI=true): run `make test-deps`")
	case !ok:
		return func() {}, nil
	}
	pgServer = s
	return func() { _ = s.Close() }, nil
}

// pgOf is the PostgreSQL store under s, nil for bbolt.
func pgOf(s testStore) *postgres.Store {
	p, _ := s.(*postgres.Store)
	return p
}

// pgFingerprint is a digest of every table's content: it moves iff
// something was committed (PostgreSQL has no commit counter a test can
// read that a rolled-back transaction leaves alone).
func pgFingerprint(t *testing.T, p *postgres.Store) string {
	t.Helper()
	var sum string
	err := p.Pool().QueryRow(t.Context(), `SELECT md5(
		coalesce((SELECT string_agg(id || ':' || coalesce(room_id, '') || ':' || encode(record, 'hex'), ',' ORDER BY id) FROM icebox_conversations), '') || '|' ||
		coalesce((SELECT string_agg(id || ':' || status || ':' || encode(record, 'hex') || ':' || coalesce(encode(sdp_offer, 'hex'), '') || ':' || coalesce(encode(sdp_answer, 'hex'), ''), ',' ORDER BY id) FROM icebox_calls), '') || '|' ||
		coalesce((SELECT string_agg(call_id || ':' || until_ns, ',' ORDER BY call_id) FROM icebox_revocations), '') || '|' ||
		coalesce((SELECT string_agg(seq || ':' || encode(record, 'hex'), ',' ORDER BY seq) FROM icebox_outbox), '') || '|' ||
		coalesce((SELECT string_agg(event_id || ':' || seen_ns, ',' ORDER BY event_id) FROM icebox_seen_events), '') || '|' ||
		coalesce((SELECT string_agg(key || ':' || value, ',' ORDER BY key) FROM icebox_sync), ''))`).Scan(&sum)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// pgCheckIndexes asserts that every call row's queried columns agree with
// its record, and every conversation's room column with its record.
func pgCheckIndexes(t *testing.T, p *postgres.Store) {
	t.Helper()
	ctx := t.Context()
	rows, err := p.Pool().Query(ctx, `SELECT id, conversation_id, created_ns, status, ended_ns, coalesce(matrix_invite_id, ''), record,
		sdp_offer IS NOT NULL AND length(sdp_offer) = 0, sdp_answer IS NOT NULL AND length(sdp_answer) = 0 FROM icebox_calls`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, conv, status, invite string
			created                  int64
			ended                    *int64
			raw                      []byte
			emptyOffer, emptyAnswer  bool
		)
		if err := rows.Scan(&id, &conv, &created, &status, &ended, &invite, &raw, &emptyOffer, &emptyAnswer); err != nil {
			t.Fatal(err)
		}
		c, err := decodeCall([]byte(id), raw)
		if err != nil {
			t.Fatal(err)
		}
		var wantEnded *int64
		if c.Status.Terminal() {
			at := c.CreatedAt
			if c.EndedAt != nil {
				at = *c.EndedAt
			}
			n := at.UnixNano()
			wantEnded = &n
		}
		if c.ID != id || c.ConversationID != conv || c.CreatedAt.UnixNano() != created || string(c.Status) != status ||
			c.MatrixInviteEventID != invite || (ended == nil) != (wantEnded == nil) || (ended != nil && *ended != *wantEnded) {
			t.Errorf("call %q: columns (%q, %d, %q, %v, %q) disagree with its record %+v", id, conv, created, status, ended, invite, c)
		}
		if emptyOffer || emptyAnswer {
			t.Errorf("call %q: an empty SDP is stored", id)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	got := pgRoomIndex(t, p)
	want := map[string]string{}
	crow, err := p.Pool().Query(ctx, `SELECT id, record FROM icebox_conversations`)
	if err != nil {
		t.Fatal(err)
	}
	defer crow.Close()
	for crow.Next() {
		var (
			id  string
			raw []byte
			c   signaling.Conversation
		)
		if err := crow.Scan(&id, &raw); err != nil {
			t.Fatal(err)
		}
		if err := decode("conversation", []byte(id), raw, &c); err != nil {
			t.Fatal(err)
		}
		if c.RoomID != "" {
			want[c.RoomID] = id
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("room column: got %v, want %v", got, want)
	}
}

func pgRoomIndex(t *testing.T, p *postgres.Store) map[string]string {
	t.Helper()
	got := map[string]string{}
	rows, err := p.Pool().Query(t.Context(), `SELECT room_id, id FROM icebox_conversations WHERE room_id IS NOT NULL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var room, id string
		if err := rows.Scan(&room, &id); err != nil {
			t.Fatal(err)
		}
		got[room] = id
	}
	return got
}

func pgRevocations(t *testing.T, p *postgres.Store) map[string]time.Time {
	t.Helper()
	got := map[string]time.Time{}
	rows, err := p.Pool().Query(t.Context(), `SELECT call_id, until_ns, record FROM icebox_revocations`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id    string
			until int64
			raw   []byte
			r     signaling.Revocation
		)
		if err := rows.Scan(&id, &until, &raw); err != nil {
			t.Fatal(err)
		}
		if err := decode("revocation", []byte(id), raw, &r); err != nil {
			t.Fatal(err)
		}
		if r.CallID != id || r.Until.UnixNano() != until {
			t.Errorf("revocation row %q (%d) holds %+v", id, until, r)
		}
		got[r.CallID] = r.Until
	}
	return got
}

func pgSeenEvents(t *testing.T, p *postgres.Store) map[string]time.Time {
	t.Helper()
	got := map[string]time.Time{}
	rows, err := p.Pool().Query(t.Context(), `SELECT event_id, seen_ns FROM icebox_seen_events`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id string
			ns int64
		)
		if err := rows.Scan(&id, &ns); err != nil {
			t.Fatal(err)
		}
		got[id] = time.Unix(0, ns).UTC()
	}
	return got
}
