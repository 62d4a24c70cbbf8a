package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// The feed is how nodes sharing a database tell each other what happened:
// the WebSocket events of a call (for the participants connected to other
// nodes) and the revocations of ended calls (for the allocations other
// nodes hold). Rows of icebox_feed are appended in a transaction holding
// one advisory lock, so ids increase in commit order and a reader that
// remembers the last id it read never skips a row that commits later.
// NOTIFY icebox_feed wakes the readers; they also poll, so a lost
// notification delays a row but never loses it. Rows are pruned after a
// while (PruneFeed): a node that was away that long starts again from the
// head.

// FeedItem is one row of the feed.
type FeedItem struct {
	ID     int64
	Node   string // the node that wrote it
	Kind   string // e.g. "event", "revoke"
	CallID string
	At     time.Time
	Body   []byte
}

// feedLock serialises feed appends (see above); "ifeed" in ASCII.
const feedLock = 0x69_6665_6564

// feedChannel is the NOTIFY channel of the feed.
const feedChannel = "icebox_feed"

// AppendFeed appends items (their ID and At are set by the store) and
// wakes the readers.
func (s *Store) AppendFeed(ctx context.Context, items []FeedItem) error {
	if len(items) == 0 {
		return nil
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(feedLock)); err != nil {
			return err
		}
		now := time.Now().UnixNano()
		for _, it := range items {
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
	})
	return wrap("append feed", err)
}

// FeedAfter returns up to limit items whose ID is above after, in ID
// order.
func (s *Store) FeedAfter(ctx context.Context, after int64, limit int) ([]FeedItem, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, node, kind, call_id, created_ns, body FROM icebox_feed WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
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

// FeedHead is the ID of the newest item (0 if none): where a node that
// starts begins reading (what happened before it started is not its to
// deliver).
func (s *Store) FeedHead(ctx context.Context) (int64, error) {
	var id int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM icebox_feed`).Scan(&id)
	return id, wrap("feed head", err)
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
