package matrix_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.mau.fi/util/dbutil"

	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// pgDevice keeps the device in PostgreSQL, as node does on a shared
// database.
type pgDevice struct{ *postgres.Store }

func (d pgDevice) OpenCryptoDB() (*dbutil.Database, error) {
	db := d.OpenSQL()
	dbu, err := dbutil.NewWithDB(db, "pgx")
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return dbu, nil
}

func (d pgDevice) Unavailable(err error) bool { return postgres.Unavailable(err) }

// sessionEnder is a pgDevice whose database ends every session but its
// own at two moments of the bridge's start — what a server restart looks
// like to connections that were in use a moment before: just before the
// first read of a device file (a connection of the pool used an instant
// earlier), and just after the crypto store's handle made its first
// connection.
type sessionEnder struct {
	pgDevice
	dsn   string
	ended atomic.Int32
	errs  chan error
	read  atomic.Bool
}

func (d *sessionEnder) ReadDeviceFile(ctx context.Context, name string) ([]byte, error) {
	if !d.read.Swap(true) {
		_, _ = d.pgDevice.ReadDeviceFile(ctx, name) // a pool connection, used now
		d.end(ctx)
	}
	return d.pgDevice.ReadDeviceFile(ctx, name)
}

func (d *sessionEnder) OpenCryptoDB() (*dbutil.Database, error) {
	dbu, err := d.pgDevice.OpenCryptoDB()
	if err != nil || d.ended.Load() >= 2 {
		return dbu, err
	}
	if err := dbu.RawDB.PingContext(context.Background()); err != nil {
		return nil, errors.Join(err, dbu.Close())
	}
	d.end(context.Background())
	return dbu, nil
}

// end terminates every other session on the database and waits until the
// server has ended them.
func (d *sessionEnder) end(ctx context.Context) {
	err := func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, d.dsn)
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no session to end")
		}
		for left := n; left > 0; {
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&left); err != nil {
				return err
			}
			if left > 0 {
				if ctx.Err() != nil {
					return fmt.Errorf("%d sessions still there", left)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		return nil
	}()
	if err != nil {
		d.errs <- fmt.Errorf("ending the database's sessions: %w", err)
		return
	}
	d.ended.Add(1)
}

// TestEncryptionDeviceDatabaseSessionsEnded: with the device in
// PostgreSQL, the database ending the connections the bridge was using
// (a restart, an operator's pg_terminate_backend) just before its start
// reads the device does not stop the bridge for good: the start is tried
// again, and it loads the same account — the database's error is never
// taken for "no account", and nothing replaces the stored one. Before
// the fix the start failed at once (the pickle key's read, then the
// crypto store's first statement on a dead connection).
func TestEncryptionDeviceDatabaseSessionsEnded(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	pg, err := postgres.Open(t.Context(), postgres.Options{DSN: dsn, Records: store.Records{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Close() })
	hs := matrixtest.StartDendrite(t)
	service, _, _ := hs.Register(t, "icebox", servicePassword, false)
	token, device := hs.Login(t, service, servicePassword)
	cfg := func(dev matrix.DeviceStore) matrix.Config {
		return matrix.Config{
			HomeserverURL: hs.URL(), UserID: service, AccessToken: token, DeviceID: device, Store: openStore(t),
			Encryption: &matrix.Encryption{Dir: t.TempDir(), Require: true, Device: dev},
		}
	}

	first := newBridge(t, cfg(pgDevice{pg}), matrix.Timing{})
	stop := first.run(t)
	waitFor(t, 60*time.Second, "encryption to come up", func() bool { return matrix.EncryptionUp(first.Bridge) }, first.logs.String)
	key := matrix.OwnSigningKey(first.Bridge)
	stop()

	ender := &sessionEnder{pgDevice: pgDevice{pg}, dsn: dsn, errs: make(chan error, 4)}
	second := newBridge(t, cfg(ender), matrix.Timing{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- second.Run(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for !matrix.EncryptionUp(second.Bridge) {
		select {
		case err := <-done:
			t.Fatalf("the start whose database connections were ended gave up: %v", err)
		case err := <-ender.errs:
			t.Fatal(err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("encryption not up within 60 s:\n%s", second.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := ender.ended.Load(); n != 2 {
		t.Fatalf("the database's sessions were ended %d times, want 2", n)
	}
	if got := matrix.OwnSigningKey(second.Bridge); got != key {
		t.Fatalf("after the sessions ended the device's signing key is %q, want the stored account's %q", got, key)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after cancel", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel")
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var accounts int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM crypto_account`).Scan(&accounts); err != nil || accounts != 1 {
		t.Fatalf("crypto_account holds %d accounts (%v), want the one", accounts, err)
	}
}
