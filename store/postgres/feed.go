package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// The feed is how nodes sharing a database tell each other what happened:
// the WebSocket events of a call (for the participants connected to any
// node) and the revocations of ended calls (for the allocations other
// nodes hold). With Options.Feed a transition writes its events (handed in
// ctx as signaling.TxEvents) and its revocation to icebox_feed in the
// transaction that commits it (writeFeed), so nothing committed is missing
// from the feed.
//
// Order and completeness without one writer at a time: each row carries
// the id of the transaction that wrote it (xid, a 64-bit xid8, stamped by
// the column's default pg_current_xact_id(): it never wraps). A reader
// remembers the snapshot of its last read (pg_current_snapshot, which says
// which transactions had committed then) and reads the rows whose
// transaction is visible in its new snapshot but was not in the last one.
// Whatever order transactions commit in, a committed row's transaction
// becomes visible in exactly one step of a reader's snapshots, so it is read
// once, and never skipped: a row that drew a lower id and commits after a
// higher one is simply read in the step its commit falls in. The reader's
// new snapshot is named in the read itself (FeedAfter: taken by the same
// statement that reads, and every row is checked against it), so the
// snapshot remembered and the rows returned agree whatever the isolation
// level. Readers take no lock, and writers take none but the locks of the
// calls they write for, exclusive (the ones appendOutbox takes): a call's
// transactions then run one after another, the next one drawing its ids
// after the last one became visible (PostgreSQL releases a transaction's
// locks after it has become visible), so within a read, id order is each
// call's commit order, and a later transaction of a call is never visible
// before an earlier one. Rows of different calls may be read in a different
// interleaving by different nodes; nothing orders different calls.
//
// (Until schema 6 a global feed lock did this: writers took it shared, a
// reader exclusive for an instant to find the id below which every
// transaction had ended. PostgreSQL queues shared requests behind a waiting
// exclusive one, so every reader's wake-up stalled all writers: three nodes
// were slower than one.)
//
// NOTIFY icebox_feed, sent after the commit (feed_notify.go), wakes the
// readers; they also poll, so a lost notification delays a row but never
// loses it. Rows are pruned after a
// while (PruneFeed): a node that was away that long starts again from the
// head.

// Feed item kinds.
const (
	FeedEvent  = "event"  // a signaling.Event (EncodeFeedEvent)
	FeedRevoke = "revoke" // a call's revocation (FeedRevocation)
)

// FeedItem is one row of the feed.
type FeedItem struct {
	ID     int64
	Node   string // the node that wrote it
	Kind   string // e.g. "event", "revoke"
	CallID string
	At     time.Time
	Body   []byte
}

// feedChannel is the NOTIFY channel of the feed.
const feedChannel = "icebox_feed"

// AppendFeed appends items (their ID and At are set by the store; Node,
// when empty, is this store's NodeID) and wakes the readers. It is for
// what no transition carries (events that change no stored state);
// a transition's own events and revocation are written in its transaction
// (writeFeed, from the outbox methods).
func (s *Store) AppendFeed(ctx context.Context, items []FeedItem) error {
	if len(items) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx pgx.Tx) error { return s.writeFeed(ctx, tx, items) })
	return wrap("append feed", err)
}

// writeFeed appends items in tx, holding each item's call's lock exclusive
// until tx ends (see above). The call locks are the ones appendOutbox takes
// (a transaction holding one already takes it again at no cost), in the
// same sorted order, so they cannot deadlock. The rows' xid is the
// column's default, tx's own transaction id.
func (s *Store) writeFeed(ctx context.Context, tx pgx.Tx, items []FeedItem) error {
	if len(items) == 0 {
		return nil
	}
	calls := make([]string, 0, len(items))
	for _, it := range items {
		calls = append(calls, it.CallID)
	}
	slices.Sort(calls)
	for _, id := range slices.Compact(calls) {
		if !storable(id) {
			return fmt.Errorf("feed item of call %q: not valid UTF-8", id)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, id); err != nil {
			return err
		}
	}
	now := time.Now().UnixNano()
	for _, it := range items {
		if it.Node == "" {
			it.Node = s.node
		}
		if !storable(it.CallID) || !storable(it.Node) {
			return fmt.Errorf("feed item of call %q: not valid UTF-8", it.CallID)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO icebox_feed (node, kind, call_id, created_ns, body) VALUES ($1, $2, $3, $4, $5)`,
			it.Node, it.Kind, it.CallID, now, it.Body); err != nil {
			return err
		}
	}
	if ft, ok := tx.(*feedTx); ok {
		ft.fed = true // s.tx notifies after the commit (feed_notify.go)
		return nil
	}
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, feedChannel)
	return err
}

// txFeed is what a transition writes to the feed in its transaction: the
// events the Service handed it in ctx (signaling.TxEvents, taken here, so
// the Service leaves their delivery to the feed's readers) and rev, the
// revocation the transition wrote (nil if none).
func (s *Store) txFeed(ctx context.Context, rev *signaling.Revocation) ([]FeedItem, error) {
	if !s.feed {
		return nil, nil
	}
	var items []FeedItem
	for _, ev := range signaling.TxEventsFrom(ctx).Take() {
		body, err := EncodeFeedEvent(ev)
		if err != nil {
			return nil, fmt.Errorf("event %s of call %q: %w", ev.Type, ev.CallID, err)
		}
		items = append(items, FeedItem{Kind: FeedEvent, CallID: ev.CallID, Body: body})
	}
	if rev != nil {
		body, err := json.Marshal(feedRevoke{Until: rev.Until})
		if err != nil {
			return nil, err
		}
		items = append(items, FeedItem{Kind: FeedRevoke, CallID: rev.CallID, Body: body})
	}
	return items, nil
}

// feedEvent is a signaling.Event as the feed carries it.
type feedEvent struct {
	Type           string          `json:"type"`
	CallID         string          `json:"call_id"`
	ConversationID string          `json:"conversation_id"`
	Recipients     []string        `json:"recipients"`
	Payload        json.RawMessage `json:"payload"`
}

type feedRevoke struct {
	Until time.Time `json:"until"`
}

// EncodeFeedEvent is the body of a FeedEvent item.
func EncodeFeedEvent(ev signaling.Event) ([]byte, error) {
	payload, err := json.Marshal(ev.Payload)
	if err != nil {
		return nil, err
	}
	return json.Marshal(feedEvent{Type: ev.Type, CallID: ev.CallID, ConversationID: ev.ConversationID, Recipients: ev.Recipients, Payload: payload})
}

// DecodeFeedEvent reads a FeedEvent item's body; the Payload is the JSON
// object as written (json.RawMessage).
func DecodeFeedEvent(body []byte) (signaling.Event, error) {
	var ev feedEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return signaling.Event{}, err
	}
	return signaling.Event{Type: ev.Type, CallID: ev.CallID, ConversationID: ev.ConversationID, Recipients: ev.Recipients, Payload: ev.Payload}, nil
}

// EncodeFeedRevocation is the body of a FeedRevoke item.
func EncodeFeedRevocation(until time.Time) []byte {
	body, _ := json.Marshal(feedRevoke{Until: until}) // a time always encodes
	return body
}

// DecodeFeedRevocation reads a FeedRevoke item's body: until when the
// call's credentials are refused.
func DecodeFeedRevocation(body []byte) (time.Time, error) {
	var r feedRevoke
	err := json.Unmarshal(body, &r)
	return r.Until, err
}

// revoked is the revocation a change from old to c writes (putCall), nil
// if none.
func revoked(old *signaling.Call, c signaling.Call) *signaling.Revocation {
	if c.RevokedUntil == nil || (old != nil && old.RevokedUntil != nil && old.RevokedUntil.Equal(*c.RevokedUntil)) {
		return nil
	}
	return &signaling.Revocation{CallID: signaling.CredentialID(c.ID), Until: *c.RevokedUntil}
}

// FeedCursor is where a reader is in the feed: the snapshot of its last
// complete read (every row whose transaction is visible in it has been
// read) and, while a read goes on in batches, the snapshot it reads up to
// and the last id of it read so far. The zero FeedCursor reads the feed from
// its start; FeedHead is where a starting node begins.
type FeedCursor struct {
	seen  string // pg_snapshot, text form; "" is before everything
	upto  string // "" between reads
	after int64  // in upto's step, the last id read
}

// feedReadFrom reads the rows of the transactions visible in snapshot
// upto ($2, or the statement's own snapshot when NULL) and not in $1. The
// snapshot is taken by the statement that reads, and every row is checked
// against it, so the snapshot returned and the rows agree even under READ
// COMMITTED, whose next statement would see more. The index on xid bounds
// the scan: a transaction not visible in $1 has an xid at or above its
// xmin. ($4 is the limit; a row per read says the snapshot and whether it
// is older than $1, a database restored elsewhere; when no item is read,
// f's columns are NULL.)
const feedReadFrom = `
WITH s AS (SELECT COALESCE($2::text::pg_snapshot, pg_current_snapshot()) AS upto)
SELECT s.upto::text, pg_snapshot_xmax(s.upto) < pg_snapshot_xmax($1::text::pg_snapshot),
	f.id, f.node, f.kind, f.call_id, f.created_ns, f.body
FROM s LEFT JOIN LATERAL (
	SELECT id, node, kind, call_id, created_ns, body FROM icebox_feed
	WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot) AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
		AND pg_visible_in_snapshot(xid, s.upto) AND id > $3
	ORDER BY id LIMIT $4
) f ON true
ORDER BY f.id`

// feedReadStart is feedReadFrom from the feed's start (the zero cursor),
// its parameters one down.
const feedReadStart = `
WITH s AS (SELECT COALESCE($1::text::pg_snapshot, pg_current_snapshot()) AS upto)
SELECT s.upto::text, false,
	f.id, f.node, f.kind, f.call_id, f.created_ns, f.body
FROM s LEFT JOIN LATERAL (
	SELECT id, node, kind, call_id, created_ns, body FROM icebox_feed
	WHERE pg_visible_in_snapshot(xid, s.upto) AND id > $2
	ORDER BY id LIMIT $3
) f ON true
ORDER BY f.id`

// FeedAfter returns up to limit items after cur, in the order described
// above (each call's in commit order), and the cursor to read on from.
// Every committed item comes exactly once to a reader that goes on from the
// cursors FeedAfter returns, however its transactions' commits interleave.
func (s *Store) FeedAfter(ctx context.Context, cur FeedCursor, limit int) ([]FeedItem, FeedCursor, error) {
	limit = max(limit, 1)
	var upto any // NULL: the statement's snapshot
	if cur.upto != "" {
		upto = cur.upto
	}
	q, args := feedReadFrom, []any{cur.seen, upto, cur.after, limit}
	if cur.seen == "" {
		q, args = feedReadStart, args[1:]
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, cur, wrap("read feed", err)
	}
	defer rows.Close()
	var (
		out  []FeedItem
		snap string
		back bool
	)
	for rows.Next() {
		var (
			id, ns             *int64
			node, kind, callID *string
			body               []byte
		)
		if err := rows.Scan(&snap, &back, &id, &node, &kind, &callID, &ns, &body); err != nil {
			return nil, cur, wrap("read feed", err)
		}
		if id == nil {
			continue // nothing to read: the row only says the snapshot
		}
		out = append(out, FeedItem{ID: *id, Node: *node, Kind: *kind, CallID: *callID, At: time.Unix(0, *ns), Body: body})
	}
	if err := rows.Err(); err != nil {
		return nil, cur, wrap("read feed", err)
	}
	if back {
		// The database's transaction ids went back (restored into
		// another cluster): the old snapshot would hide every new row
		// for ever. Start again from now, as a starting node does.
		return nil, FeedCursor{seen: snap}, nil
	}
	if len(out) == limit {
		return out, FeedCursor{seen: cur.seen, upto: snap, after: out[len(out)-1].ID}, nil
	}
	return out, FeedCursor{seen: snap}, nil
}

// FeedHead is where a node that starts begins reading (what happened
// before it started is not its to deliver): the current snapshot, so that
// an item of a transaction still running is read when it commits.
func (s *Store) FeedHead(ctx context.Context) (FeedCursor, error) {
	var snap string
	if err := s.pool.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snap); err != nil {
		return FeedCursor{}, wrap("feed head", err)
	}
	return FeedCursor{seen: snap}, nil
}

// PruneFeed deletes the items written before before.
func (s *Store) PruneFeed(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM icebox_feed WHERE created_ns < $1`, before.UnixNano())
	if err != nil {
		return 0, wrap("prune feed", err)
	}
	return int(tag.RowsAffected()), nil
}

// ListenFeed calls wake whenever another node's append is notified, until
// ctx is done. It holds one connection of the pool while it listens, and
// takes a new one (after a pause) when that one is lost; it returns nil
// when ctx is done. A notification lost meanwhile is only a delay: readers
// poll too.
func (s *Store) ListenFeed(ctx context.Context, wake func()) error {
	const pause = time.Second
	for ctx.Err() == nil {
		err := s.listen(ctx, wake)
		if ctx.Err() != nil {
			return nil
		}
		_ = err // the database is away; readers poll meanwhile
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
	return nil
}

func (s *Store) listen(ctx context.Context, wake func()) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection will be LISTENing: it must not go back to the pool.
	pc := conn.Hijack()
	defer pc.Close(context.WithoutCancel(ctx)) //nolint:errcheck // it is closed either way
	if _, err := pc.Exec(ctx, `LISTEN `+feedChannel); err != nil {
		return err
	}
	wake() // anything appended before LISTEN took effect
	for {
		if _, err := pc.WaitForNotification(ctx); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		wake()
	}
}
