package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// The feed's NOTIFY is sent after the writer's commit, not in its
// transaction: PostgreSQL serialises the commits of all transactions that
// notify (a database-wide lock from before the commit record until after
// it), so with durable commits every transition of every node would wait
// for the one before it to reach the disk, one at a time. After the commit
// a node sends one notification at a time and folds those asked for
// meanwhile into the next one, so a wake-up still follows every commit
// (the reader then finds it) and at most one notifying transaction per
// node is in flight. A notification lost (the node dies between its commit
// and the notification, the database is away) only delays: readers poll.

// notifyTimeout bounds one notification.
const notifyTimeout = 5 * time.Second

// feedNotifier folds the notifications a node's commits ask for.
type feedNotifier struct {
	mu      sync.Mutex
	running bool // a notifyLoop is sending
	again   bool // a commit asked after the running send began
}

// feedTx is the transaction s.tx hands its function: writeFeed marks it,
// and s.tx notifies once it has committed.
type feedTx struct {
	pgx.Tx
	fed bool
}

// notifyFeed makes sure a notification is sent after this call.
func (s *Store) notifyFeed() {
	n := &s.notifier
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.running {
		n.again = true
		return
	}
	n.running = true
	go s.notifyLoop()
}

func (s *Store) notifyLoop() {
	n := &s.notifier
	for {
		ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
		_, _ = s.pool.Exec(ctx, `SELECT pg_notify($1, '')`, feedChannel) // lost: readers poll
		cancel()
		n.mu.Lock()
		if !n.again {
			n.running = false
			n.mu.Unlock()
			return
		}
		n.again = false
		n.mu.Unlock()
	}
}
