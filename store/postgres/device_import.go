package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ErrDeviceExists means a migration target already holds a Matrix device
// (ImportDevice): a copy never replaces one, whose keys would be lost.
var ErrDeviceExists = errors.New("database already holds a Matrix device")

// MatrixDevice is a single node's Matrix device to copy into the database
// (store migrate): its files (icebox_matrix_device) and the rows of
// mautrix's crypto and room-state tables, which must exist already at the
// source's schema version (signaling/matrix.PrepareDeviceDB).
type MatrixDevice struct {
	// DeviceID names the device in messages.
	DeviceID string
	// Files by name: session.json, pickle.key, recovery.key.
	Files map[string][]byte
	// Tables in an order their foreign keys accept.
	Tables []DeviceTable
}

// DeviceTable is one table's rows; the columns are the table's own names.
type DeviceTable struct {
	Name    string
	Columns []string
	Rows    [][]any
}

// deviceInUse returns the device the database holds already ("" if none;
// "unknown" if it holds device files but no account). A pickle key alone
// is what a start refused before it made an account leaves (a node of an
// install on PostgreSQL from before the device was kept there, with an
// access token whose device's keys are in its state directory): it guards
// no keys, and leftover says so (the import replaces it).
func deviceInUse(ctx context.Context, q rowQuerier) (id string, leftover bool, err error) {
	var hasStore bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('crypto_account') IS NOT NULL`).Scan(&hasStore); err != nil {
		return "", false, err
	}
	if hasStore {
		err := q.QueryRow(ctx, `SELECT device_id FROM crypto_account ORDER BY account_id LIMIT 1`).Scan(&id)
		switch {
		case err == nil:
			return id, false, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return "", false, err
		}
	}
	var files, others int
	if err := q.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE name <> 'pickle.key') FROM icebox_matrix_device`).Scan(&files, &others); err != nil {
		return "", false, err
	}
	switch {
	case others > 0:
		return "unknown", false, nil
	case files > 0:
		return "", true, nil
	}
	return "", false, nil
}

// importDevice writes dev in tx; a database holding a device already is
// ErrDeviceExists.
func importDevice(ctx context.Context, tx pgx.Tx, dev *MatrixDevice) error {
	names := []string{"icebox_matrix_device"}
	for _, t := range dev.Tables {
		names = append(names, pgx.Identifier{t.Name}.Sanitize())
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(names, ", ")+` IN EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("matrix device: %w", err)
	}
	have, leftover, err := deviceInUse(ctx, tx)
	if err != nil {
		return fmt.Errorf("matrix device: %w", err)
	}
	if leftover {
		if _, err := tx.Exec(ctx, `DELETE FROM icebox_matrix_device`); err != nil {
			return fmt.Errorf("matrix device: %w", err)
		}
	}
	if have != "" {
		same := ""
		if have == dev.DeviceID {
			same = " (the same device ID: it was migrated, or a node made its own crypto store for it, already)"
		}
		return fmt.Errorf("%w: the target holds device %s, the source's is %s%s; copy into a database without one "+
			"(or drop its icebox_matrix_device rows and crypto_* and mx_* tables, which deletes that device's keys)", ErrDeviceExists, have, dev.DeviceID, same)
	}
	for name, data := range dev.Files {
		if _, err := tx.Exec(ctx, `INSERT INTO icebox_matrix_device (name, value) VALUES ($1, $2)`, name, data); err != nil {
			return fmt.Errorf("matrix device file %s: %w", name, err)
		}
	}
	for _, t := range dev.Tables {
		if err := importDeviceTable(ctx, tx, t); err != nil {
			return fmt.Errorf("matrix device table %s: %w", t.Name, err)
		}
	}
	return nil
}

// importDeviceTable inserts a table's rows, each value converted from
// SQLite's storage class to the column's PostgreSQL type (SQLite keeps
// booleans as integers, and may hand text back as bytes or bytes as text).
func importDeviceTable(ctx context.Context, tx pgx.Tx, t DeviceTable) error {
	types := map[string]string{}
	rows, err := tx.Query(ctx, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1`, t.Name)
	if err != nil {
		return err
	}
	for rows.Next() {
		var col, typ string
		if err := rows.Scan(&col, &typ); err != nil {
			rows.Close()
			return err
		}
		types[col] = typ
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(types) == 0 {
		return errors.New("the target has no such table (mautrix's schema differs)")
	}
	cols := make([]string, len(t.Columns))
	params := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		if _, ok := types[c]; !ok {
			return fmt.Errorf("the target's table has no column %s (mautrix's schema differs)", c)
		}
		cols[i] = pgx.Identifier{c}.Sanitize()
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	stmt := `INSERT INTO ` + pgx.Identifier{t.Name}.Sanitize() + ` (` + strings.Join(cols, ", ") + `) VALUES (` + strings.Join(params, ", ") + `)`
	for n, row := range t.Rows {
		args := make([]any, len(row))
		for i, v := range row {
			if args[i], err = pgValue(types[t.Columns[i]], v); err != nil {
				return fmt.Errorf("row %d, column %s: %w", n+1, t.Columns[i], err)
			}
		}
		if _, err := tx.Exec(ctx, stmt, args...); err != nil {
			return fmt.Errorf("row %d: %w", n+1, err)
		}
	}
	return nil
}

// pgValue converts a value read from SQLite for a column of PostgreSQL
// type typ (information_schema's data_type).
func pgValue(typ string, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch typ {
	case "boolean":
		switch b := v.(type) {
		case bool:
			return b, nil
		case int64:
			return b != 0, nil
		}
	case "bytea":
		switch b := v.(type) {
		case []byte:
			return b, nil
		case string:
			return []byte(b), nil
		}
	case "text", "character varying", "character", "json", "jsonb":
		switch s := v.(type) {
		case string:
			return s, nil
		case []byte:
			return string(s), nil
		}
	case "bigint", "integer", "smallint":
		switch n := v.(type) {
		case int64:
			return n, nil
		case bool:
			if n {
				return int64(1), nil
			}
			return int64(0), nil
		}
	default:
		return v, nil
	}
	return nil, fmt.Errorf("a %T for a %s column", v, typ)
}

// DeviceTableCounts counts the rows of the named tables (a migration's
// check) and the device files.
func (s *Store) DeviceTableCounts(ctx context.Context, tables []string) (files int, rows map[string]int, err error) {
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM icebox_matrix_device`).Scan(&files); err != nil {
		return 0, nil, wrap("count matrix device files", err)
	}
	rows = map[string]int{}
	for _, t := range tables {
		var n int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
			return 0, nil, wrap("count "+t, err)
		}
		rows[t] = n
	}
	return files, rows, nil
}

// ImportDevice writes dev alone in one transaction, into a database that
// may hold state already (an install moved to PostgreSQL before its
// device was kept there); a database holding a device already is
// ErrDeviceExists, and nothing is written.
func (s *Store) ImportDevice(ctx context.Context, dev *MatrixDevice) error {
	return wrap("import matrix device", s.tx(ctx, func(tx pgx.Tx) error { return importDevice(ctx, tx, dev) }))
}
