package matrixtest

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// An Option changes the generated dendrite.yaml before the server starts.
type Option func(*settings)

type settings struct {
	overrides []override
}

type override struct {
	key   string
	value any
}

// WithConfig sets a dotted key of dendrite.yaml (as written by Dendrite's
// generate-config) to value, after the test defaults, e.g.
//
//	matrixtest.WithConfig("client_api.turn.turn_uris", []string{"turn:127.0.0.1:3478?transport=udp"})
//	matrixtest.WithConfig("client_api.turn.turn_shared_secret", secret)
//	matrixtest.WithConfig("client_api.turn.turn_user_lifetime", "1h")
//
// The key must exist in the generated file: a typo fails the test instead of
// being ignored by Dendrite.
func WithConfig(key string, value any) Option {
	return func(s *settings) { s.overrides = append(s.overrides, override{key, value}) }
}

// writeConfig generates the signing key and dendrite.yaml in dir and returns
// the config's path.
func writeConfig(bins binaries, dir, serverName, sharedSecret string, extra []override) (string, error) {
	keyPath := filepath.Join(dir, "matrix_key.pem")
	if out, err := exec.Command(bins.generateKeys, "-private-key", keyPath).CombinedOutput(); err != nil {
		return "", fmt.Errorf("generate-keys: %w: %s", err, out)
	}
	var stderr bytes.Buffer
	gen := exec.Command(bins.generateConfig, "-dir", dir, "-server", serverName)
	gen.Stderr = &stderr
	raw, err := gen.Output()
	if err != nil {
		return "", fmt.Errorf("generate-config: %w: %s", err, stderr.Bytes())
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		return "", fmt.Errorf("generate-config output: %w", err)
	}
	for _, o := range append(testDefaults(keyPath, sharedSecret), extra...) {
		if err := setKey(cfg, o.key, o.value); err != nil {
			return "", err
		}
	}
	out, err := yaml.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("dendrite.yaml: %w", err)
	}
	path := filepath.Join(dir, "dendrite.yaml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", fmt.Errorf("dendrite.yaml: %w", err)
	}
	if err := walDatabases(out); err != nil {
		return "", err
	}
	return path, nil
}

// sqliteFile matches the SQLite connection strings of dendrite.yaml.
var sqliteFile = regexp.MustCompile(`connection_string:\s*"?file:([^"\s?]+)`)

// walDatabases creates Dendrite's SQLite databases in WAL mode before it
// starts (the mode is kept in the file; Dendrite's config cannot ask for
// it). In its default rollback mode a long /sync read blocks writers past
// Dendrite's 10 s busy timeout now and then, and v0.13.8 then panics
// ("cannot start a transaction within a transaction") and exits.
func walDatabases(cfg []byte) error {
	for _, m := range sqliteFile.FindAllSubmatch(cfg, -1) {
		path := string(m[1])
		db, err := sql.Open("sqlite", "file:"+path)
		if err != nil {
			return fmt.Errorf("dendrite database %s: %w", path, err)
		}
		var mode string
		err = db.QueryRow("PRAGMA journal_mode=WAL").Scan(&mode)
		if cerr := db.Close(); err == nil {
			err = cerr
		}
		if err != nil || mode != "wal" {
			return fmt.Errorf("dendrite database %s: journal_mode=WAL: %q, %v", path, mode, err)
		}
	}
	return nil
}

// testDefaults turn generate-config's production defaults into a closed,
// fast, loopback-only test server. The file already has SQLite databases,
// JetStream storage and media under dir (from -dir).
func testDefaults(keyPath, sharedSecret string) []override {
	return []override{
		// generate-config writes a relative "matrix_key.pem"; Dendrite resolves
		// it against its working directory, so make it absolute.
		{"global.private_key", keyPath},
		// No /_matrix/federation or /_matrix/key routes and no outbound
		// federation: the server is alone on loopback.
		{"global.disable_federation", true},
		// The defaults name matrix.org and vector.im; nothing may leave the machine.
		{"global.trusted_third_party_id_servers", []string{}},
		{"federation_api.key_perspectives", []any{}},
		// Otherwise Dendrite creates a "_server" user and an alert room per
		// user, which shows up in every sync.
		{"global.server_notices.enabled", false},
		{"global.report_stats.enabled", false},
		// The default estimate is 1 GiB; tests hold little.
		{"global.cache.max_size_estimated", 64 << 20},
		// /register and /login return 429 M_LIMIT_EXCEEDED after 5 quick
		// requests with the default limiter; tests register and log in in bursts.
		{"client_api.rate_limiting.enabled", false},
		// Enables /_synapse/admin/v1/register (see Register). Open registration
		// stays off.
		{"client_api.registration_shared_secret", sharedSecret},
		// bcrypt at the default cost 10 takes tens of milliseconds per
		// register and login; 4 is bcrypt's minimum.
		{"user_api.bcrypt_cost", 4},
		// Log to the process's stdout, which StartDendrite writes to
		// dendrite.log in the temp dir; the default file hook would write a
		// second copy (and gzip it daily).
		{"logging", []map[string]any{{"type": "std", "level": "info"}}},
	}
}

// setKey sets a dotted key of a decoded YAML document. Every part of the key
// must already exist, so a misspelt or renamed key is an error.
func setKey(doc map[string]any, key string, value any) error {
	parts := splitKey(key)
	m := doc
	for i, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return fmt.Errorf("dendrite.yaml: no section %q", strings.Join(parts[:i+1], "."))
		}
		m = next
	}
	last := parts[len(parts)-1]
	if _, ok := m[last]; !ok {
		return fmt.Errorf("dendrite.yaml: no key %q", key)
	}
	m[last] = value
	return nil
}

func splitKey(key string) []string { return strings.Split(key, ".") }
