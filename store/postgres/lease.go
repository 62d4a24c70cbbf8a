package postgres

import (
	"context"
	"fmt"
	"sync"
)

// Lease is a PostgreSQL session advisory lock held on a connection of its
// own: it is released when Release is called, or when the connection ends
// (the process died, the server restarted), so a node that dies cannot keep
// it.
type Lease struct {
	once    sync.Once
	release func() error
}

// Release gives the lease up. Idempotent.
func (l *Lease) Release() error {
	var err error
	l.once.Do(func() { err = l.release() })
	return err
}

// TryLease takes the lease called name if no other session holds it; ok
// is false (and the lease nil) when another does.
func (s *Store) TryLease(ctx context.Context, name string) (lease *Lease, ok bool, err error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, false, wrap("lease "+name, err)
	}
	// The lock lives as long as the session: the connection must not go
	// back to the pool, where another request would inherit it.
	pc := conn.Hijack()
	if err := pc.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, "icebox lease "+name).Scan(&ok); err != nil || !ok {
		cerr := pc.Close(context.WithoutCancel(ctx))
		if err != nil {
			return nil, false, wrap("lease "+name, fmt.Errorf("%w (close: %v)", err, cerr))
		}
		return nil, false, nil
	}
	return &Lease{release: func() error { return pc.Close(context.Background()) }}, true, nil
}
