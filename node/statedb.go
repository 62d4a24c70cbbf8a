package node

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
)

// stateStore is what the node asks of its store, whichever the driver
// (store.driver): the calls service's, the Matrix bridge's, and the
// readiness probe's.
type stateStore interface {
	signaling.Store
	signaling.RoomIndex
	matrix.Store
	// Ping checks that the store answers (/readyz, the watchdog).
	Ping() error
	// Path names the store for logs, without credentials.
	Path() string
	Close() error
}

var (
	_ stateStore = (*store.Store)(nil)
	_ stateStore = (*postgres.Store)(nil)
)

// openStore opens the configured store: the bbolt file in state_dir
// (state.go), or the PostgreSQL database of store.postgres. A DSN that is
// wrong, a server that cannot be reached, or a database of a newer schema
// is a ConfigError (exit 2), with nothing written.
func openStore(ctx context.Context, cfg config.Config, initState bool, reg prometheus.Registerer, log zerolog.Logger) (stateStore, error) {
	if cfg.Store.Driver != config.StoreDriverPostgres {
		st, err := openState(cfg, initState, log)
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	pc := cfg.Store.Postgres
	dsn, err := pc.DSNValue()
	if err != nil {
		return nil, ConfigError{err}
	}
	st, err := postgres.Open(ctx, postgres.Options{
		DSN: dsn, Records: store.Records{}, MaxConns: int32(pc.MaxConns), StatementTimeout: pc.StatementTimeout,
		Feed: true, // several nodes may share the database (cluster.go)
	})
	if err != nil {
		return nil, ConfigError{fmt.Errorf("store.postgres: %w", err)}
	}
	if initState {
		log.Warn().Str("component", "state").Msg("--init-state does nothing with store.driver: postgres: the database is the operator's")
	}
	registerPoolMetrics(st, reg)
	log.Info().Str("component", "state").Str("database", st.Path()).Int("schema", postgres.SchemaVersion()).Msg("state in PostgreSQL")
	return st, nil
}

// registerPoolMetrics exports the connection pool's use: GaugeFuncs over
// the pool's own counters, read at scrape time.
func registerPoolMetrics(st *postgres.Store, reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	f := promauto.With(reg)
	pool := st.Pool()
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "icebox_store_pool_connections", Help: "PostgreSQL connections open in the pool."},
		func() float64 { return float64(pool.Stat().TotalConns()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "icebox_store_pool_acquired_connections", Help: "PostgreSQL connections in use."},
		func() float64 { return float64(pool.Stat().AcquiredConns()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "icebox_store_pool_max_connections", Help: "The pool's size (store.postgres.max_conns)."},
		func() float64 { return float64(pool.Stat().MaxConns()) })
	f.NewCounterFunc(prometheus.CounterOpts{Name: "icebox_store_pool_acquire_wait_seconds_total", Help: "Time requests waited for a free PostgreSQL connection."},
		func() float64 { return pool.Stat().AcquireDuration().Seconds() })
	f.NewCounterFunc(prometheus.CounterOpts{Name: "icebox_store_pool_empty_acquires_total", Help: "Requests that found no idle PostgreSQL connection."},
		func() float64 { return float64(pool.Stat().EmptyAcquireCount()) })
}

// stateAlive is the watchdog's view of the store: the bbolt file must
// answer (a process that cannot read its own file is stuck), but a
// PostgreSQL server that is away does not make this process unhealthy:
// relaying goes on (credentials are stateless HMAC, revocations are held
// in memory) and /readyz reports the database instead, so systemd must not
// restart every node of a cluster because their database restarts.
func (n *Node) stateAlive() bool {
	if n.cfg.Store.Driver == config.StoreDriverPostgres {
		return true
	}
	return n.state.Ping() == nil
}
