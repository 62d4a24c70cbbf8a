package matrix

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/sql_store_upgrade"
	"maunium.net/go/mautrix/sqlstatestore"
)

// A device kept in Encryption.Dir (a single node) moves into a shared
// database (Encryption.Device) with `icebox store migrate`: its files as
// they are, and the rows of mautrix's crypto and room-state stores copied
// table by table from crypto.db into the same tables of the database,
// which mautrix's own upgrades create (PrepareDeviceDB). The copy is the
// same device: the same device ID, Olm account, Olm and Megolm sessions,
// cross-signing state and room state, so the node on the database starts
// as it, and no new device (with an access token, a start that is
// refused).

// ExportedDevice is a device read from Encryption.Dir (ExportDevice).
type ExportedDevice struct {
	// DeviceID is the device of the crypto store's account.
	DeviceID string
	// Files are the device's small files by name (session.json, pickle.key,
	// recovery.key): those present.
	Files map[string][]byte
	// Tables are the crypto and room-state stores' tables with their rows,
	// in an order that satisfies their foreign keys (the source's creation
	// order); the stores' version tables are not among them.
	Tables []DeviceTable
	// Versions are the stores' schema versions by version table
	// (crypto_version, mx_version): the target must be at the same.
	Versions map[string]int
}

// DeviceTable is one table of mautrix's stores.
type DeviceTable struct {
	Name    string
	Columns []string
	Rows    [][]any
}

// deviceFiles are the device files a store keeps besides crypto.db.
var deviceFiles = []string{sessionFile, pickleKeyFile, recoveryKeyFile}

// deviceVersionTables are the version tables of mautrix's stores.
var deviceVersionTables = []string{sql_store_upgrade.VersionTableName, sqlstatestore.VersionTableName}

// ExportDevice reads the device kept in dir (a node's state_dir/matrix);
// nil and no error when dir holds none (Matrix without encryption, or
// never started). A directory with a crypto store but no pickle key, or
// the other way round, is an error: it cannot be moved as a device.
func ExportDevice(ctx context.Context, dir string) (*ExportedDevice, error) {
	dev := &ExportedDevice{Files: map[string][]byte{}, Versions: map[string]int{}}
	for _, name := range deviceFiles {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case err == nil:
			dev.Files[name] = raw
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("matrix: device %s: %w", dir, err)
		}
	}
	dbPath := filepath.Join(dir, cryptoDBFile)
	_, statErr := os.Stat(dbPath)
	hasStore := statErr == nil
	_, hasPickle := dev.Files[pickleKeyFile]
	switch {
	case !hasStore && !hasPickle && len(dev.Files) == 0:
		return nil, nil
	case !hasStore && !hasPickle:
		// A session without encryption's store: a password login of a
		// bridge whose encryption never came up. Only the files move.
		return dev, nil
	case hasStore != hasPickle:
		return nil, fmt.Errorf("matrix: device %s: %s and %s go together, but only one is there", dir, cryptoDBFile, pickleKeyFile)
	}
	db, err := sql.Open("sqlite", "file:"+dbPath+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return nil, fmt.Errorf("matrix: crypto store %s: %w", dbPath, err)
	}
	defer db.Close()
	if err := exportTables(ctx, db, dev); err != nil {
		return nil, fmt.Errorf("matrix: crypto store %s: %w", dbPath, err)
	}
	return dev, nil
}

func exportTables(ctx context.Context, db *sql.DB, dev *ExportedDevice) error {
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid`)
	if err != nil {
		return err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return err
		}
		names = append(names, n)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return err
	}
	for _, vt := range deviceVersionTables {
		var v int
		if err := db.QueryRowContext(ctx, `SELECT version FROM `+vt).Scan(&v); err != nil {
			return fmt.Errorf("schema version (%s): %w", vt, err)
		}
		dev.Versions[vt] = v
	}
	for _, name := range names {
		if isVersionTable(name) {
			continue
		}
		t, err := exportTable(ctx, db, name)
		if err != nil {
			return fmt.Errorf("table %s: %w", name, err)
		}
		dev.Tables = append(dev.Tables, t)
	}
	var account struct{ n int }
	if err := db.QueryRowContext(ctx, `SELECT count(*), coalesce(min(device_id), '') FROM crypto_account`).Scan(&account.n, &dev.DeviceID); err != nil {
		return fmt.Errorf("account: %w", err)
	}
	if account.n != 1 {
		return fmt.Errorf("%d accounts in crypto_account, want 1 (icebox's store holds one device)", account.n)
	}
	return nil
}

func isVersionTable(name string) bool {
	for _, vt := range deviceVersionTables {
		if name == vt {
			return true
		}
	}
	return false
}

// exportTable reads all of a table (names come from sqlite_master).
func exportTable(ctx context.Context, db *sql.DB, name string) (DeviceTable, error) {
	t := DeviceTable{Name: name}
	rows, err := db.QueryContext(ctx, `SELECT * FROM "`+strings.ReplaceAll(name, `"`, `""`)+`"`)
	if err != nil {
		return t, err
	}
	defer rows.Close()
	if t.Columns, err = rows.Columns(); err != nil {
		return t, err
	}
	for rows.Next() {
		vals := make([]any, len(t.Columns))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return t, err
		}
		t.Rows = append(t.Rows, vals)
	}
	return t, rows.Err()
}

// PrepareDeviceDB brings mautrix's crypto and room-state tables in db (a
// shared database's, Encryption.Device's OpenCryptoDB) up to this build's
// schema, as the bridge's first start would, and returns their versions
// by version table (to compare with ExportedDevice.Versions).
func PrepareDeviceDB(ctx context.Context, db *dbutil.Database) (map[string]int, error) {
	cs := crypto.NewSQLCryptoStore(db, dbutil.NoopLogger, "", "", []byte("unused: no account is read or written"))
	if err := cs.DB.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("matrix: crypto store: %w", err)
	}
	ss := sqlstatestore.NewSQLStateStore(db, dbutil.NoopLogger, false)
	if err := ss.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("matrix: room-state store: %w", err)
	}
	versions := map[string]int{}
	for _, vt := range deviceVersionTables {
		var v int
		if err := db.QueryRow(ctx, `SELECT version FROM `+vt).Scan(&v); err != nil {
			return nil, fmt.Errorf("matrix: schema version (%s): %w", vt, err)
		}
		versions[vt] = v
	}
	return versions, nil
}
