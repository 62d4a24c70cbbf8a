package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/icebox-voip/icebox/signaling"
)

// Revocations lists the revocations still in force at now (Until after
// now), in call ID order, and deletes the others, in one transaction.
func (s *Store) Revocations(ctx context.Context, now time.Time) ([]signaling.Revocation, error) {
	const op = "revocations"
	if err := checkCtx(ctx, op); err != nil {
		return nil, err
	}
	var live []signaling.Revocation
	err := s.tx(ctx, func(tx pgx.Tx) error {
		live = nil
		if _, err := tx.Exec(ctx, `DELETE FROM icebox_revocations WHERE until_ns <= $1`, now.UnixNano()); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT call_id, record FROM icebox_revocations ORDER BY call_id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				id  string
				raw []byte
				r   signaling.Revocation
			)
			if err := rows.Scan(&id, &raw); err != nil {
				return err
			}
			if err := decode("revocation", id, raw, &r); err != nil {
				return err
			}
			live = append(live, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return live, nil
}

// putRevocation writes a call's revocation; one already stored is only
// ever extended.
func putRevocation(ctx context.Context, tx pgx.Tx, r signaling.Revocation) error {
	raw, err := encode(r)
	if err != nil {
		return fmt.Errorf("encode revocation: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO icebox_revocations (call_id, until_ns, record) VALUES ($1, $2, $3)
		ON CONFLICT (call_id) DO UPDATE SET until_ns = EXCLUDED.until_ns, record = EXCLUDED.record
		WHERE icebox_revocations.until_ns < EXCLUDED.until_ns`, r.CallID, r.Until.UnixNano(), raw)
	return err
}
