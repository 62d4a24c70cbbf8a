package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStoreValidate: what the store section accepts and refuses, each
// refusal naming its key.
func TestStoreValidate(t *testing.T) {
	dir := t.TempDir()
	private := filepath.Join(dir, "dsn")
	world := filepath.Join(dir, "dsn-world")
	empty := filepath.Join(dir, "dsn-empty")
	for name, mode := range map[string]os.FileMode{private: 0o600, world: 0o644} {
		if err := os.WriteFile(name, []byte("host=/run/postgresql dbname=icebox\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := func(c *Config) { c.Store.Driver = StoreDriverPostgres }
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"bbolt by default", func(*Config) {}, ""},
		{"postgres dsn", func(c *Config) { pg(c); c.Store.Postgres.DSN = "postgres://icebox@db/icebox" }, ""},
		{"postgres dsn file", func(c *Config) { pg(c); c.Store.Postgres.DSNFile = private }, ""},
		{"driver", func(c *Config) { c.Store.Driver = "sqlite" }, `store.driver: "sqlite" is not one of bbolt, postgres`},
		{"postgres without dsn", pg, "store.postgres.dsn: required with store.driver: postgres"},
		{"both", func(c *Config) { pg(c); c.Store.Postgres.DSN, c.Store.Postgres.DSNFile = "x", private }, "store.postgres.dsn: set dsn or dsn_file, not both"},
		{"world-readable file", func(c *Config) { pg(c); c.Store.Postgres.DSNFile = world }, "store.postgres.dsn_file: " + world + " is readable by others (mode 0644); chmod 600 it"},
		{"empty file", func(c *Config) { pg(c); c.Store.Postgres.DSNFile = empty }, "store.postgres.dsn_file: " + empty + " is empty"},
		{"placeholder", func(c *Config) { pg(c); c.Store.Postgres.DSN = "postgres://icebox:CHANGE-ME@db/icebox" }, "store.postgres.dsn: is the example's placeholder"},
		{"pool", func(c *Config) { c.Store.Postgres.MaxConns = 0 }, "store.postgres.max_conns: must be between 1 and 1000 (got 0)"},
		{"timeout", func(c *Config) { c.Store.Postgres.StatementTimeout = time.Millisecond }, "store.postgres.statement_timeout: must be between 100ms and 5m (got 1ms)"},
		{"takeover", func(c *Config) { c.Store.Postgres.MatrixTakeover = time.Second }, "store.postgres.matrix_takeover: must be between 3s and 5m (got 1s)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tc.want != "" && (err == nil || strings.Count(err.Error(), "\n") > 0 || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want one error containing %q", err, tc.want)
			}
		})
	}
	c := Default()
	c.Store.Postgres.DSNFile = private
	if dsn, err := c.Store.Postgres.DSNValue(); err != nil || dsn != "host=/run/postgresql dbname=icebox" {
		t.Errorf("DSNValue = %q, %v", dsn, err)
	}
}

// TestStoreEnv: the store keys from the environment.
func TestStoreEnv(t *testing.T) {
	c, err := Load("", []string{"ICEBOX_STORE_DRIVER=postgres", "ICEBOX_STORE_POSTGRES_DSN=host=/run/postgresql dbname=icebox",
		"ICEBOX_STORE_POSTGRES_MAX_CONNS=20", "ICEBOX_STORE_POSTGRES_STATEMENT_TIMEOUT=2s",
		"ICEBOX_STORE_POSTGRES_MATRIX_TAKEOVER=8s"})
	if err != nil {
		t.Fatal(err)
	}
	want := Store{Driver: "postgres", Postgres: StorePostgres{DSN: "host=/run/postgresql dbname=icebox", MaxConns: 20, StatementTimeout: 2 * time.Second, MatrixTakeover: 8 * time.Second}}
	if c.Store != want {
		t.Errorf("got %+v, want %+v", c.Store, want)
	}
}
