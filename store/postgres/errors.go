package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/icebox-voip/icebox/signaling"
)

var (
	// ErrNewerSchema means the database was migrated by a newer icebox:
	// this one refuses it and writes nothing.
	ErrNewerSchema = errors.New("database schema is from a newer icebox")
	// ErrUnreachable means Open could not connect (wrong DSN, server
	// down, authentication refused).
	ErrUnreachable = errors.New("database unreachable")
	// ErrConfig means the DSN or the options are unusable.
	ErrConfig = errors.New("bad database configuration")
	// ErrNotEmpty means a migration target already holds state
	// (CopyFrom).
	ErrNotEmpty = errors.New("database is not empty")
)

// SQLSTATEs branched on (PostgreSQL Appendix A).
const (
	codeUniqueViolation = "23505"
	codeQueryCanceled   = "57014" // statement_timeout
)

// wrap prefixes err with op and marks errors of the database's
// availability with signaling.ErrStoreUnavailable (the API answers 503, the
// client retries), leaving the domain's own errors (not found, conflict,
// invalid, an UpdateCall fn's) as they are.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if unavailable(err) {
		return fmt.Errorf("store: %s: %w: %w", op, signaling.ErrStoreUnavailable, err)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// unavailable is true for errors that say the database could not be used
// right now, not that the request was wrong: a lost or refused connection,
// the server shutting down or starting, a statement timeout.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false // the caller gave up; not the database's fault
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", "53", "57": // connection exception, insufficient resources, operator intervention
			return true
		}
		return pgErr.Code == "40001" || pgErr.Code == "40P01" // serialization failure, deadlock: retryable
	}
	var netErr net.Error
	var connErr *pgconn.ConnectError
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) || errors.As(err, &connErr) ||
		pgconn.SafeToRetry(err) || pgconn.Timeout(err) || isClosedConn(err)
}

// isClosedConn: pgx reports a connection that died mid-query as "conn
// closed" or an unexpected EOF, without a net.Error.
func isClosedConn(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == "conn closed" {
			return true
		}
	}
	return false
}

// isUniqueOn reports a unique violation of constraint name.
func isUniqueOn(err error, name string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation && pgErr.ConstraintName == name
}

// isUnique reports a unique violation (two writers racing for the same
// room or Matrix event).
func isUnique(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == codeUniqueViolation
}

// ErrCorrupt means a stored record does not decode.
var ErrCorrupt = errors.New("database record corrupt")
