package config

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"
)

// Store drivers (store.driver).
const (
	StoreDriverBBolt    = "bbolt"
	StoreDriverPostgres = "postgres"
)

// Store chooses where icebox keeps its state: calls, conversations, the
// Matrix outbox and sync state, revocations.
type Store struct {
	// Driver is bbolt (one file in state_dir, one node) or postgres (a
	// PostgreSQL database several nodes share). Default: "bbolt"
	Driver   string        `yaml:"driver"`
	Postgres StorePostgres `yaml:"postgres"`
}

// StorePostgres configures store.driver: postgres.
type StorePostgres struct {
	// DSN is the connection string, a URL (postgres://user:pw@host/db) or
	// key=value pairs; it holds a password, so prefer DSNFile. Default: ""
	DSN string `yaml:"dsn"`
	// DSNFile holds the DSN (trimmed), private to its owner. Default: ""
	DSNFile string `yaml:"dsn_file"`
	// MaxConns is the connection pool's size per node (1..1000).
	// Default: 10
	MaxConns int `yaml:"max_conns"`
	// StatementTimeout ends a statement that runs longer; the request
	// then fails with 503 (100ms..5m). Default: 5s
	StatementTimeout time.Duration `yaml:"statement_timeout"`

	// MatrixTakeover bounds how long the Matrix bridge stays down when the
	// node running it dies (3s..5m): another node with matrix.enabled
	// takes the bridge's lease over within it. Default: 15s
	MatrixTakeover time.Duration `yaml:"matrix_takeover"`
}

func defaultStore() Store {
	return Store{
		Driver:   StoreDriverBBolt,
		Postgres: StorePostgres{MaxConns: 10, StatementTimeout: 5 * time.Second, MatrixTakeover: 15 * time.Second},
	}
}

// DSNValue returns the DSN: DSN, or DSNFile's contents trimmed. Errors
// never hold the DSN (it holds a password).
func (p StorePostgres) DSNValue() (string, error) {
	switch {
	case p.DSN != "" && p.DSNFile != "":
		return "", fmt.Errorf("config: store.postgres: set dsn or dsn_file, not both")
	case p.DSN != "":
		return p.DSN, nil
	case p.DSNFile != "":
		b, err := os.ReadFile(p.DSNFile)
		if err != nil {
			return "", fmt.Errorf("config: store.postgres.dsn_file: %w", err)
		}
		return string(bytes.TrimSpace(b)), nil
	}
	return "", fmt.Errorf("config: store.postgres: dsn or dsn_file is required with store.driver: postgres")
}

func (v *validator) store(s *Store) {
	v.oneOf("store.driver", s.Driver, StoreDriverBBolt, StoreDriverPostgres)
	p := s.Postgres
	if n := p.MaxConns; n < 1 || n > 1000 {
		v.add("store.postgres.max_conns", "must be between 1 and 1000 (got %d)", n)
	}
	if d := p.StatementTimeout; d < 100*time.Millisecond || d > 5*time.Minute {
		v.add("store.postgres.statement_timeout", "must be between 100ms and 5m (got %s)", d)
	}
	if d := p.MatrixTakeover; d < 3*time.Second || d > 5*time.Minute {
		v.add("store.postgres.matrix_takeover", "must be between 3s and 5m (got %s)", d)
	}
	if s.Driver != StoreDriverPostgres {
		return
	}
	switch {
	case p.DSN != "" && p.DSNFile != "":
		v.add("store.postgres.dsn", "set dsn or dsn_file, not both")
	case p.DSN == "" && p.DSNFile == "":
		v.add("store.postgres.dsn", "required with store.driver: postgres (or dsn_file)")
	case p.DSNFile != "":
		if b, ok := v.privateFile("store.postgres.dsn_file", p.DSNFile); ok && len(bytes.TrimSpace(b)) == 0 {
			v.add("store.postgres.dsn_file", "%s is empty", p.DSNFile)
		}
	case strings.Contains(p.DSN, "CHANGE-ME"):
		v.add("store.postgres.dsn", "is the example's placeholder")
	}
}
