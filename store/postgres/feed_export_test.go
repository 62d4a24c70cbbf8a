package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// WriteFeedTx is writeFeed in a transaction the test holds open (a writer
// that drew its ids and has not committed yet).
func (s *Store) WriteFeedTx(ctx context.Context, tx pgx.Tx, items []FeedItem) error {
	return s.writeFeed(ctx, tx, items)
}
