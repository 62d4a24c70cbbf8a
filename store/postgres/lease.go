package postgres

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Lease is a PostgreSQL session advisory lock held on a connection of its
// own: it is released when Release is called, or when the connection ends
// (the process died, the server restarted), so a node that dies cannot keep
// it. A process killed on a host that stays up has its socket closed by
// the kernel, and the server releases the lock at once; a host that
// vanishes (power, network) is noticed by the server's TCP keepalives and
// user timeout, which TryLease sets on the session from its timeout.
type Lease struct {
	once    sync.Once
	mu      sync.Mutex
	conn    *pgx.Conn
	release func() error
}

// Release gives the lease up. Idempotent.
func (l *Lease) Release() error {
	var err error
	l.once.Do(func() { err = l.release() })
	return err
}

// Check makes sure the lease's session is still alive (a statement on its
// connection answers within ctx): if not, the lease may be another
// node's already and the holder must stop at once.
func (l *Lease) Check(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := l.conn.Exec(ctx, `SELECT 1`)
	return wrap("check lease", err)
}

// TryLease takes the lease called name if no other session holds it; ok
// is false (and the lease nil) when another does. timeout bounds how long
// the server keeps the lease of a host that vanished (0: the server's
// defaults, hours): its TCP keepalives probe after timeout/2 of silence,
// three times a tenth of it apart, and unacknowledged data gives up after
// timeout*2/3. Over a Unix socket none of this applies, nor is it needed:
// the client is on the server's host.
func (s *Store) TryLease(ctx context.Context, name string, timeout time.Duration) (lease *Lease, ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, wrap("lease "+name, err)
	}
	// The lock lives as long as the session: the connection must not go
	// back to the pool, where another request would inherit it.
	pc := conn.Hijack()
	fail := func(err error) (*Lease, bool, error) {
		cerr := pc.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, false, wrap("lease "+name, fmt.Errorf("%w (close: %v)", err, cerr))
		}
		return nil, false, nil
	}
	if timeout > 0 {
		secs := func(d time.Duration) string { return strconv.Itoa(max(int(d/time.Second), 1)) }
		for _, set := range []string{
			`SET tcp_keepalives_idle = ` + secs(timeout/2),
			`SET tcp_keepalives_interval = ` + secs(timeout/10),
			`SET tcp_keepalives_count = 3`,
			`SET tcp_user_timeout = ` + strconv.FormatInt((timeout*2/3).Milliseconds(), 10),
		} {
			if _, err := pc.Exec(ctx, set); err != nil {
				return fail(err)
			}
		}
	}
	if err := pc.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, "icebox lease "+name).Scan(&ok); err != nil || !ok {
		return fail(err)
	}
	l := &Lease{conn: pc}
	l.release = func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		return pc.Close(context.Background())
	}
	return l, true, nil
}
