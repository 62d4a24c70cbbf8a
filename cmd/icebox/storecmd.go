package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.mau.fi/util/dbutil"

	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/snapshot"
)

// storeCommand administers the store: `icebox store migrate`.
func storeCommand(a *cli) *cobra.Command {
	var from, to, dsnFile string
	var deviceOnly bool
	migrate := &cobra.Command{
		Use:   "migrate",
		Short: "copy a bbolt install's state to an empty PostgreSQL database",
		Long: `Copies a single-node install's state (calls, conversations, rooms, the
Matrix outbox, sync state and seen events, revocations) from its bbolt file to
an empty PostgreSQL database, in one transaction, and verifies the counts.
Stop icebox first. PATH is the state directory (or its icebox.db); DSN is a
connection string (postgres://user@host/db or "host=... dbname=...");
"postgres:" alone reads it from --to-dsn-file or $ICEBOX_STORE_POSTGRES_DSN.

The Matrix device in PATH/matrix (its session, pickle and recovery keys, and
the crypto and room-state stores: Olm account, Olm and Megolm sessions) is
copied in the same transaction, so that the nodes on the database run the
bridge as the same device with the same keys. A database that holds a Matrix
device already is refused (exit 2, nothing written). With
--matrix-device-only, only the device is copied, into a database that may be
in use already: for a node moved to PostgreSQL before its device was kept
there (stop every node first).`,
		Example: "  icebox store migrate --from bbolt:/var/lib/icebox --to postgres:postgres://icebox@db/icebox\n" +
			"  icebox store migrate --matrix-device-only --from bbolt:/var/lib/icebox --to postgres: --to-dsn-file /etc/icebox/db.dsn",
		Args: noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return storeMigrate(c.Context(), from, to, dsnFile, deviceOnly, a.stdout, a.env)
		},
	}
	migrate.Flags().StringVar(&from, "from", "", "source: bbolt:PATH (the state directory or its icebox.db)")
	migrate.Flags().StringVar(&to, "to", "", "target: postgres:DSN")
	migrate.Flags().StringVar(&dsnFile, "to-dsn-file", "", "file holding the target's DSN (with --to postgres:)")
	migrate.Flags().BoolVar(&deviceOnly, "matrix-device-only", false,
		"copy only the Matrix device of PATH/matrix, into a database already in use (a node moved to PostgreSQL before its device was kept there)")
	return group("store", "move icebox's state between stores",
		"Moves icebox's state between stores: from bbolt to PostgreSQL.", migrate)
}

// storeMigrate is `icebox store migrate`.
func storeMigrate(ctx context.Context, from, to, dsnFile string, deviceOnly bool, stdout io.Writer, env []string) error {
	dir, ok := strings.CutPrefix(from, "bbolt:")
	if !ok || dir == "" {
		return usagef("store migrate: --from must be bbolt:PATH (got %q)", from)
	}
	dsn, ok := strings.CutPrefix(to, "postgres:")
	if !ok {
		return usagef("store migrate: --to must be postgres:DSN")
	}
	if dsn == "" {
		var err error
		if dsn, err = targetDSN(dsnFile, env); err != nil {
			return err
		}
	}
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		dir = filepath.Dir(dir)
	}
	if deviceOnly {
		return migrateDevice(ctx, dir, dsn, stdout)
	}
	return migrateStore(ctx, dir, dsn, stdout)
}

// migrateDevice copies the Matrix device in dir's matrix directory alone
// into the database dsn names. No device there, or one in the database
// already: exit 2, nothing written.
func migrateDevice(ctx context.Context, dir, dsn string, stdout io.Writer) error {
	devDir := node.MatrixDir(dir)
	dev, err := matrix.ExportDevice(ctx, devDir)
	if err != nil {
		return node.ConfigError{Err: fmt.Errorf("store migrate: --from: %w", err)}
	}
	if dev == nil {
		return node.ConfigError{Err: fmt.Errorf("store migrate: --from: no Matrix device in %s", devDir)}
	}
	dst, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Records: store.Records{}})
	if err != nil {
		return node.ConfigError{Err: fmt.Errorf("store migrate: --to: %w", err)}
	}
	defer dst.Close()
	if len(dev.Tables) > 0 {
		if err := prepareDeviceTables(ctx, dst, dev); err != nil {
			return err
		}
	}
	if err := dst.ImportDevice(ctx, pgDevice(dev)); err != nil {
		if errors.Is(err, postgres.ErrDeviceExists) {
			return node.ConfigError{Err: fmt.Errorf("store migrate: --to: %w", err)}
		}
		return fmt.Errorf("store migrate: %w", err)
	}
	return verifyDevice(ctx, stdout, dst, dev, devDir)
}

func targetDSN(file string, env []string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", usagef("store migrate: --to-dsn-file: %v", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if v := lookupEnv(env, "ICEBOX_STORE_POSTGRES_DSN", ""); v != "" {
		return v, nil
	}
	return "", usagef("store migrate: --to postgres: needs a DSN (after the colon, --to-dsn-file or $ICEBOX_STORE_POSTGRES_DSN)")
}

// migrateStore copies the bbolt store in dir to the database dsn names.
// A wrong DSN, an unreachable server, a newer schema or a database that is
// not empty is a configuration error (exit 2), with nothing written.
func migrateStore(ctx context.Context, dir, dsn string, stdout io.Writer) error {
	src, err := store.Open(dir, store.Options{MustExist: true, LockTimeout: time.Second})
	switch {
	case errors.Is(err, store.ErrMissing), errors.Is(err, store.ErrNewerSchema):
		return node.ConfigError{Err: fmt.Errorf("store migrate: --from: %w", err)}
	case err != nil:
		return fmt.Errorf("store migrate: --from: %w", err)
	}
	defer src.Close()
	snap, err := src.Export(ctx)
	if err != nil {
		return fmt.Errorf("store migrate: %w", err)
	}
	devDir := node.MatrixDir(dir)
	dev, err := matrix.ExportDevice(ctx, devDir)
	if err != nil {
		return node.ConfigError{Err: fmt.Errorf("store migrate: --from: %w", err)}
	}
	dst, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Records: store.Records{}})
	if err != nil {
		return node.ConfigError{Err: fmt.Errorf("store migrate: --to: %w", err)}
	}
	defer dst.Close()
	start := time.Now()
	if dev != nil && len(dev.Tables) > 0 {
		if err := prepareDeviceTables(ctx, dst, dev); err != nil {
			return err
		}
	}
	if err := dst.ImportWithDevice(ctx, snap, pgDevice(dev)); err != nil {
		if errors.Is(err, postgres.ErrNotEmpty) || errors.Is(err, postgres.ErrDeviceExists) {
			return node.ConfigError{Err: fmt.Errorf("store migrate: --to: %w", err)}
		}
		return fmt.Errorf("store migrate: %w", err)
	}
	got, err := dst.Counts(ctx)
	if err != nil {
		return fmt.Errorf("store migrate: verify: %w", err)
	}
	want := snap.Counts()
	if err := printCounts(stdout, src.Path(), dst.Path(), want, got); err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("store migrate: verify: the target holds %+v, the source %+v", got, want)
	}
	if err := verifyDevice(ctx, stdout, dst, dev, devDir); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "copied in %s; counts verified. Set store.driver: postgres and store.postgres.dsn_file, then start icebox.\n", time.Since(start).Round(time.Millisecond))
	return err
}

func printCounts(w io.Writer, from, to string, want, got snapshot.Counts) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\t%s\t%s\n", from, to)
	for _, r := range []struct {
		what      string
		want, got int
	}{
		{"conversations", want.Conversations, got.Conversations},
		{"calls", want.Calls, got.Calls},
		{"outbox entries", want.Outbox, got.Outbox},
		{"revocations", want.Revocations, got.Revocations},
		{"seen Matrix events", want.SeenEvents, got.SeenEvents},
		{"sync values", want.Sync, got.Sync},
	} {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", r.what, r.want, r.got)
	}
	return tw.Flush()
}

// prepareDeviceTables creates mautrix's crypto and room-state tables in
// the target, as the bridge's first start there would, and checks they
// are at the source store's schema (a source of an older icebox is
// upgraded by starting that install once with this version).
func prepareDeviceTables(ctx context.Context, dst *postgres.Store, dev *matrix.ExportedDevice) error {
	dbu, err := dbutil.NewWithDB(dst.OpenSQL(), "pgx")
	if err != nil {
		return fmt.Errorf("store migrate: matrix device: %w", err)
	}
	defer dbu.Close()
	versions, err := matrix.PrepareDeviceDB(ctx, dbu)
	if err != nil {
		return fmt.Errorf("store migrate: --to: %w", err)
	}
	for table, v := range dev.Versions {
		if versions[table] != v {
			return node.ConfigError{Err: fmt.Errorf("store migrate: --from: the Matrix crypto store's schema (%s) is version %d, this icebox's is %d: "+
				"start the bbolt install once with this icebox (it upgrades the store), stop it, and migrate again", table, v, versions[table])}
		}
	}
	return nil
}

// pgDevice is the device in the store's import form (nil: none).
func pgDevice(dev *matrix.ExportedDevice) *postgres.MatrixDevice {
	if dev == nil {
		return nil
	}
	out := &postgres.MatrixDevice{DeviceID: dev.DeviceID, Files: dev.Files}
	for _, t := range dev.Tables {
		out.Tables = append(out.Tables, postgres.DeviceTable{Name: t.Name, Columns: t.Columns, Rows: t.Rows})
	}
	return out
}

// verifyDevice counts the device's files and rows in the target against
// the source's, and says which device moved.
func verifyDevice(ctx context.Context, w io.Writer, dst *postgres.Store, dev *matrix.ExportedDevice, dir string) error {
	if dev == nil {
		_, err := fmt.Fprintf(w, "no Matrix device in %s: nothing to copy\n", dir)
		return err
	}
	names := make([]string, 0, len(dev.Tables))
	for _, t := range dev.Tables {
		names = append(names, t.Name)
	}
	files, rows, err := dst.DeviceTableCounts(ctx, names)
	if err != nil {
		return fmt.Errorf("store migrate: verify: %w", err)
	}
	fmt.Fprintf(w, "Matrix device %s (%s):\n", dev.DeviceID, dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  files\t%d\t%d\n", len(dev.Files), files)
	bad := files != len(dev.Files)
	for _, t := range dev.Tables {
		fmt.Fprintf(tw, "  %s rows\t%d\t%d\n", t.Name, len(t.Rows), rows[t.Name])
		bad = bad || rows[t.Name] != len(t.Rows)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad {
		return fmt.Errorf("store migrate: verify: the target's Matrix device differs from the source's in %s", dir)
	}
	if dev.DeviceID != "" {
		_, err = fmt.Fprintf(w, "Matrix device %s copied: the nodes on the database run the bridge as it.\n", dev.DeviceID)
	}
	return err
}
