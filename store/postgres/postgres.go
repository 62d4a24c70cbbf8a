// Package postgres keeps icebox's durable state in PostgreSQL (13 or
// newer), for several icebox nodes sharing one database. It implements the
// same consumer-declared interfaces as package store (bbolt), with the same
// semantics, and is held to the same behavioural test suite
// (store/storetest).
//
// How calls are stored: each call is one row of icebox_calls whose record
// column is the very JSON record package store writes to bbolt
// (store.Records), as bytea, beside the columns that are queried
// (conversation, creation time, status, end time, Matrix invite event) and
// the SDP bodies (bytea). A field added to the record (a new optional
// field of signaling.Call) is carried without a migration here; only a new
// query needs a column. bytea, not jsonb: jsonb reorders keys and rewrites
// the raw JSON the record carries (stream metadata, capabilities), and
// PostgreSQL text cannot hold the NUL an SDP may contain.
//
// Transactions: every write is one transaction. A transition locks its
// call's row (SELECT … FOR UPDATE), so two nodes racing on the same call
// produce one transition after the other, the second seeing the first;
// the call, its outbox entries and its revocation commit together.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/icebox-voip/icebox/signaling"
)

// Options configure Open.
type Options struct {
	// DSN is a PostgreSQL connection string (URL or key=value). Required.
	DSN string
	// Records encodes call records: store.Records{}. Required.
	Records Records
	// MaxConns is the pool's size. Default: 10.
	MaxConns int32
	// StatementTimeout ends a statement that runs longer (the request
	// then fails with signaling.ErrStoreUnavailable). Default: 5s.
	StatementTimeout time.Duration
	// ConnectTimeout bounds Open's first connection. Default: 10s.
	ConnectTimeout time.Duration

	// Feed makes each transition write its events (signaling.TxEvents)
	// and its revocation to the feed (feed.go) in its transaction, for
	// the nodes sharing the database; their readers then deliver them,
	// this node's included. Default: off (the events are the Service's
	// to publish).
	Feed bool
	// NodeID names this node in the feed. Default: random.
	NodeID string
}

// Store is an open PostgreSQL database.
type Store struct {
	pool     *pgxpool.Pool
	records  Records
	instance string
	where    string // host/database, for logs (no credentials)
	feed     bool   // Options.Feed
	node     string // Options.NodeID
	notifier feedNotifier
}

// NodeID is this node's name in the feed (Options.NodeID).
func (s *Store) NodeID() string { return s.node }

var (
	_ signaling.Store     = (*Store)(nil)
	_ signaling.RoomIndex = (*Store)(nil)
)

// Open connects, brings the schema up to date (refusing a newer one,
// ErrNewerSchema, with nothing written) and returns the store. A DSN that
// does not parse is ErrConfig; a server that cannot be reached or refuses
// the login is ErrUnreachable.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Records == nil {
		return nil, fmt.Errorf("store: postgres: %w: Options.Records is nil", ErrConfig)
	}
	if opts.DSN == "" {
		return nil, fmt.Errorf("store: postgres: %w: the DSN is empty", ErrConfig)
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 10
	}
	if opts.StatementTimeout <= 0 {
		opts.StatementTimeout = 5 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx's parse errors leave the password out.
		return nil, fmt.Errorf("store: postgres: %w: %w", ErrConfig, err)
	}
	cfg.MaxConns = opts.MaxConns
	cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	if cfg.ConnConfig.RuntimeParams == nil {
		cfg.ConnConfig.RuntimeParams = map[string]string{}
	}
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(opts.StatementTimeout.Milliseconds(), 10)
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "icebox"
	}
	// For logs and errors: where, never who with which password.
	where := fmt.Sprintf("postgres://%s:%d/%s", cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres: %w: %w", ErrConfig, err)
	}
	pctx, cancel := context.WithTimeout(ctx, opts.ConnectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres: %w: %s: %w", ErrUnreachable, where, err)
	}
	if opts.NodeID == "" {
		raw := make([]byte, 6)
		_, _ = rand.Read(raw) // crypto/rand does not fail on Linux
		opts.NodeID = hex.EncodeToString(raw)
	}
	s := &Store{pool: pool, records: opts.Records, where: where, feed: opts.Feed, node: opts.NodeID}
	if s.instance, err = migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: postgres: %s: %w", where, err)
	}
	return s, nil
}

// InstanceID is the database's random instance ID (created with its
// schema): outbox transaction IDs carry it.
func (s *Store) InstanceID() (string, error) { return s.instance, nil }

// Version returns the schema version stored in the database.
func (s *Store) Version(ctx context.Context) (int, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM icebox_meta WHERE key = 'schema_version'`).Scan(&v)
	if err != nil {
		return 0, wrap("schema version", err)
	}
	return strconv.Atoi(v)
}

// pingTimeout bounds Ping: a readiness probe must answer before the load
// balancer's own timeout (typically 2–5 s), and a database that takes
// longer is not ready for requests anyway.
const pingTimeout = 2 * time.Second

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), pingTimeout)
	defer cancel()
	return wrap("ping", s.pool.Ping(ctx))
}

// Path names the database (host, port and database, no credentials), for
// logs.
func (s *Store) Path() string { return s.where }

// Pool is the connection pool (metrics of its use).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool, waiting for connections in use. Idempotent.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// tx runs fn in one transaction, committed if fn returns nil. Errors of
// fn come back as fn returned them; the database's are wrapped by the
// caller.
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	ft := &feedTx{}
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, func(tx pgx.Tx) error {
		ft.Tx = tx
		return fn(ft)
	})
	if err == nil && ft.fed {
		s.notifyFeed() // after the commit: feed_notify.go
	}
	return err
}

// checkCtx returns ctx's error, prefixed with op, if ctx is done.
func checkCtx(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// errNoChange rolls back a transaction that found nothing to do; the
// method reports success.
var errNoChange = errors.New("no change")
