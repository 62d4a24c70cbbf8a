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
// Order and completeness without one writer at a time: a writer takes the
// feed's advisory lock in shared mode before it draws its ids (and holds
// it to its commit), and the lock of each call it writes for, exclusive
// (so a call's rows are drawn in the order its transactions commit). A
// reader takes the feed's lock in exclusive mode for an instant (feedHorizon):
// once it has it, no writer is between drawing an id and ending, so every
// id up to the sequence's last value belongs to a transaction that has
// committed or rolled back, and the reader reads only up to there. A reader
// that remembers the last id it read therefore never skips a row that
// commits later, and writers of different calls never wait for each other.
// NOTIFY icebox_feed wakes the readers; they also poll, so a lost
// notification delays a row but never loses it. Rows are pruned after a
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

// feedLock orders feed appends and reads (see above); "ifeed" in ASCII.
const feedLock = 0x69_6665_6564

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

// writeFeed appends items in tx, holding the feed's lock shared and each
// item's call's lock exclusive until tx ends (see above). The call locks
// are the ones appendOutbox takes (a transaction holding one already takes
// it again at no cost), in the same sorted order, so they cannot deadlock.
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
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1)`, int64(feedLock)); err != nil {
		return err
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

// FeedAfter returns up to limit items whose ID is above after, in ID
// order: only items every earlier item of which has committed (or will
// never), so that a reader going on from the last ID it read skips none.
func (s *Store) FeedAfter(ctx context.Context, after int64, limit int) ([]FeedItem, error) {
	horizon, err := s.feedHorizon(ctx)
	if err != nil {
		return nil, err
	}
	if horizon <= after {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT id, node, kind, call_id, created_ns, body FROM icebox_feed WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3`, after, horizon, limit)
	if err != nil {
		return nil, wrap("read feed", err)
	}
	defer rows.Close()
	var out []FeedItem
	for rows.Next() {
		var (
			it FeedItem
			ns int64
		)
		if err := rows.Scan(&it.ID, &it.Node, &it.Kind, &it.CallID, &ns, &it.Body); err != nil {
			return nil, wrap("read feed", err)
		}
		it.At = time.Unix(0, ns)
		out = append(out, it)
	}
	return out, wrap("read feed", rows.Err())
}

// feedHorizon is the highest feed ID every transaction that drew an ID up
// to has ended: the sequence's last value, read while holding the feed's
// lock exclusively (no writer holds it shared then).
func (s *Store) feedHorizon(ctx context.Context) (int64, error) {
	var (
		last   int64
		called bool
	)
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(feedLock)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT last_value, is_called FROM icebox_feed_id_seq`).Scan(&last, &called)
	})
	if err != nil {
		return 0, wrap("feed horizon", err)
	}
	if !called {
		return 0, nil // no ID drawn yet
	}
	return last, nil
}

// FeedHead is where a node that starts begins reading (what happened
// before it started is not its to deliver): the horizon, so that an item
// of a transaction still running is read when it commits.
func (s *Store) FeedHead(ctx context.Context) (int64, error) {
	return s.feedHorizon(ctx)
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
