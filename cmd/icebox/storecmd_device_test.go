package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.mau.fi/util/dbutil"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
	"github.com/icebox-voip/icebox/store/postgres"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
	"github.com/icebox-voip/icebox/store/snapshot"
)

// runMigrate runs `icebox store migrate` and returns its exit code and
// output.
func runMigrate(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(iceboxBin, append([]string{"store", "migrate"}, args...)...)
	cmd.Env = iceboxEnv()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatal(err)
	return 0, ""
}

// TestStoreMigrateMatrixDevice: a single node on bbolt with Matrix and
// end-to-end encryption (its device in state_dir/matrix) calls bob; `icebox
// store migrate` copies its device into PostgreSQL with the rest; a node on
// the database — with a new, empty state directory — runs the bridge as
// the same device, with the same keys: no new login, no new store, no new
// cross-signing, and calls both ways in the encrypted room are decrypted
// on both sides. A target that holds another device already is refused
// (exit 2) with nothing written.
func TestStoreMigrateMatrixDevice(t *testing.T) {
	t.Parallel()
	srv := pgtest.Start(t)
	b := startMatrixBed(t, iceboxBin)
	b.aliceCallsBob(t, "v=0 before-migrate")
	device := b.deviceID(t)
	b.in.stop(t)
	srcDir := b.stateDir

	dsn := srv.NewDatabase(t)
	code, out := runMigrate(t, "--from", "bbolt:"+srcDir, "--to", "postgres:"+dsn)
	if code != 0 {
		t.Fatalf("migrate: exit %d: %s", code, out)
	}
	t.Logf("migrate:\n%s", out)
	if !strings.Contains(out, "Matrix device "+device+" copied") || !strings.Contains(out, "crypto_olm_session rows") {
		t.Fatalf("migrate does not report the device %s and its rows:\n%s", device, out)
	}

	// The node on the database: nothing of the old state directory.
	b.stateDir = filepath.Join(t.TempDir(), "state")
	b.cfg = testConfig(b.stateDir, cfgOpts{secret: testSecret}) +
		"store:\n  driver: postgres\n  postgres:\n    dsn: " + strconv.Quote(dsn) + "\n"
	b.in = startIceboxBin(t, b.bin, b.cfg, b.env...)
	if m := b.in.waitMetrics(t, func(m map[string]float64) bool { return m["icebox_matrix_bridge_lease"] == 1 }); m["icebox_matrix_bridge_lease"] != 1 {
		t.Fatalf("the node on PostgreSQL does not run the bridge")
	}
	ws := b.dialAlice(t)
	b.aliceCallsBob(t, "v=0 after-migrate")
	b.bobCallsAlice(t, ws, "bobcall-after-migrate", "v=0 bob-after-migrate")
	if n := b.bob.DecryptFailures(); n != 0 {
		t.Errorf("bob failed to decrypt %d events", n)
	}
	logs := b.in.out.String()
	if !strings.Contains(logs, `"device_id":"`+device+`"`) {
		t.Errorf("the node on PostgreSQL does not log device %s:\n%s", device, logs)
	}
	for _, line := range []string{"password login", "cross-signed", `"new_store":true`} {
		if strings.Contains(logs, line) {
			t.Errorf("the node on PostgreSQL logged %q: it should be the migrated device with its keys\n%s", line, logs)
		}
	}
	b.in.stop(t)

	// A target whose state is empty but which holds another device.
	other := srv.NewDatabase(t)
	pg, err := postgres.Open(t.Context(), postgres.Options{DSN: other, Records: store.Records{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	dbu, err := dbutil.NewWithDB(pg.OpenSQL(), "pgx")
	if err != nil {
		t.Fatal(err)
	}
	defer dbu.Close()
	if _, err := matrix.PrepareDeviceDB(t.Context(), dbu); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), other)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `INSERT INTO crypto_account (account_id, device_id, shared, sync_token, account, key_backup_version)
		VALUES ('', 'OTHERDEVICE', true, '', '\x00', '')`); err != nil {
		t.Fatal(err)
	}
	code, out = runMigrate(t, "--from", "bbolt:"+srcDir, "--to", "postgres:"+other)
	if code != 2 || !strings.Contains(out, "already holds a Matrix device") || !strings.Contains(out, "OTHERDEVICE") || !strings.Contains(out, device) {
		t.Fatalf("migrate into a database with another device: exit %d: %s; want exit 2 naming both devices", code, out)
	}
	n, err := pg.Counts(t.Context())
	if err != nil || n != (snapshot.Counts{}) {
		t.Errorf("the refused migrate wrote state: %+v, %v", n, err)
	}
	var files, sessions int
	if err := conn.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM icebox_matrix_device), (SELECT count(*) FROM crypto_olm_session)`).Scan(&files, &sessions); err != nil || files != 0 || sessions != 0 {
		t.Errorf("the refused migrate wrote device rows: %d files, %d Olm sessions (%v)", files, sessions, err)
	}
	code, out = runMigrate(t, "--matrix-device-only", "--from", "bbolt:"+srcDir, "--to", "postgres:"+other)
	if code != 2 || !strings.Contains(out, "already holds a Matrix device") {
		t.Errorf("--matrix-device-only into a database with another device: exit %d: %s; want exit 2", code, out)
	}

	// An install already on PostgreSQL whose device is still in its state
	// directory: the device alone moves in, beside the state; once.
	inUse := srv.NewDatabase(t)
	pgInUse, err := postgres.Open(t.Context(), postgres.Options{DSN: inUse, Records: store.Records{}})
	if err != nil {
		t.Fatal(err)
	}
	defer pgInUse.Close()
	if err := pgInUse.PutConversation(t.Context(), signaling.Conversation{ID: "c-existing", Participants: []string{"alice", "bob"}}); err != nil {
		t.Fatal(err)
	}
	// What a node of this version started there with an access token
	// left: a pickle key, its start refused before it made an account.
	if err := pgInUse.WriteDeviceFile(t.Context(), "pickle.key", []byte("bGVmdG92ZXI=\n")); err != nil {
		t.Fatal(err)
	}
	code, out = runMigrate(t, "--matrix-device-only", "--from", "bbolt:"+srcDir, "--to", "postgres:"+inUse)
	if code != 0 || !strings.Contains(out, "Matrix device "+device+" copied") {
		t.Fatalf("--matrix-device-only into a database in use: exit %d: %s", code, out)
	}
	if raw, err := pgInUse.ReadDeviceFile(t.Context(), "session.json"); err != nil || !strings.Contains(string(raw), device) {
		t.Errorf("the database's session after --matrix-device-only: %s, %v", raw, err)
	}
	want, err := os.ReadFile(filepath.Join(srcDir, "matrix", "pickle.key"))
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := pgInUse.ReadDeviceFile(t.Context(), "pickle.key"); err != nil || string(raw) != string(want) {
		t.Errorf("the database's pickle key after --matrix-device-only is not the device's (%v)", err)
	}
	code, out = runMigrate(t, "--matrix-device-only", "--from", "bbolt:"+srcDir, "--to", "postgres:"+inUse)
	if code != 2 || !strings.Contains(out, "the same device ID") {
		t.Errorf("--matrix-device-only a second time: exit %d: %s; want exit 2, the same device", code, out)
	}
	code, out = runMigrate(t, "--matrix-device-only", "--from", "bbolt:"+t.TempDir(), "--to", "postgres:"+inUse)
	if code != 2 || !strings.Contains(out, "no Matrix device in") {
		t.Errorf("--matrix-device-only without a device: exit %d: %s; want exit 2", code, out)
	}
}
