package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// The Matrix device the nodes share: whichever node holds the bridge's
// lease runs the bridge as the same device. Its small files (the session
// of a password login, the pickle key, the recovery key) are rows of
// icebox_matrix_device; mautrix's crypto and room-state stores are tables
// of their own in the same database, through database/sql (OpenSQL).
//
// The pickle key encrypts the Olm and Megolm keys in mautrix's tables; in
// the same database it protects nothing the database's own access control
// does not: whoever can read icebox's database can read the device's keys
// (as with a state directory, whoever can read it can). Keep the database's
// credentials and backups as secret as the state directory.

// ReadDeviceFile returns the device file name; an error wrapping
// fs.ErrNotExist if there is none.
func (s *Store) ReadDeviceFile(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM icebox_matrix_device WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("store: matrix device file %s: %w", name, fs.ErrNotExist)
	}
	if err != nil {
		return nil, wrap("read matrix device file "+name, err)
	}
	return v, nil
}

// WriteDeviceFile stores the device file name.
func (s *Store) WriteDeviceFile(ctx context.Context, name string, data []byte) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO icebox_matrix_device (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, name, data)
	return wrap("write matrix device file "+name, err)
}

// cryptoConns bounds the database/sql handle's connections: mautrix's
// crypto store runs a few statements at a time, on one node only.
const cryptoConns = 4

// OpenSQL opens a database/sql handle on the same database (pgx's
// database/sql driver, pure Go), for mautrix's stores. The caller closes
// it.
//
// Every connection is pinged before database/sql hands it out again
// (stdlib pings only one idle for over a second by default): after the
// server restarted, or ended the session, a connection used a moment ago
// is dead, and the statement sent on it fails instead of being retried on
// a new one — which failed a bridge's start just after a restart. A ping
// is one round trip per statement outside a transaction; mautrix's
// stores run few.
func (s *Store) OpenSQL() *sql.DB {
	db := stdlib.OpenDB(*s.pool.Config().ConnConfig.Copy(),
		stdlib.OptionShouldPing(func(context.Context, stdlib.ShouldPingParams) bool { return true }))
	db.SetMaxOpenConns(cryptoConns)
	return db
}

// Unavailable reports whether err, from this store or from a database/sql
// handle of OpenSQL, says the database cannot be used right now (a lost or
// refused connection, the server restarting, a timeout) rather than that
// the statement was wrong: worth trying again.
func Unavailable(err error) bool {
	return err != nil && unavailable(err)
}
