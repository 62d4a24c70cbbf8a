package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// State-file loss and corruption, run against the binary (issue 13): a
// deleted or emptied icebox.db was silently replaced by an empty one (the
// revocations of ended calls lost, their credentials working again), a
// half-truncated one made bbolt panic and exit 2 ("bad configuration, do
// not restart"), and a deleted keyring record or generated secret was
// silently regenerated.

const stateAdminToken = "state-admin-token-0123456789"

// usedStateDir starts icebox once on a fresh state directory with a
// generated (managed) keyring, rotates it when rotate is set (which writes
// keyring.json and a second secret), stops it, and returns the config (with
// port placeholders) and the state directory.
func usedStateDir(t *testing.T, rotate bool) (cfg, stateDir string, env []string) {
	t.Helper()
	stateDir = filepath.Join(t.TempDir(), "state")
	cfg = testConfig(stateDir, cfgOpts{})
	sum := sha256.Sum256([]byte(stateAdminToken))
	env = []string{"ICEBOX_AUTH_STATIC_TOKENS=" + hex.EncodeToString(sum[:]) + ":ops:admin"}
	in := startIcebox(t, cfg, env...)
	if rotate {
		out, errOut, code := runIcebox(t, 10*time.Second, "keyring", "rotate", "--url", in.httpURL(""), "--token", stateAdminToken)
		if code != 0 {
			t.Fatalf("keyring rotate: exit %d: %s %s", code, out, errOut)
		}
	}
	in.stop(t)
	return cfg, stateDir, env
}

// serveOnce runs `icebox serve` on cfg (placeholders filled with fresh
// ports) with extra arguments, expecting it to exit by itself; it returns the
// exit code and the output. Serving instead is a failure: it was expected to
// refuse the state directory.
func serveOnce(t *testing.T, cfg string, env []string, args ...string) (code int, out string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "icebox.yaml")
	cfg = strings.NewReplacer(phTURNPort, strconv.Itoa(freePort(t)), phTLSPort, strconv.Itoa(freePort(t)),
		phHTTPPort, strconv.Itoa(freePort(t))).Replace(cfg)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcessEnv(t, env, iceboxBin, append([]string{"serve", "--config", path}, args...)...)
	select {
	case <-p.done:
	case <-time.After(exitTimeout):
		p.kill()
		t.Fatalf("icebox serve did not refuse the state directory (still running after %s):\n%s", exitTimeout, p.out.String())
	}
	return p.ProcessState.ExitCode(), p.out.String()
}

// checkRefused asserts a refusal with exit 1 (a runtime failure: systemd
// may retry, an operator must look), a message naming what and how to start
// fresh deliberately, and no panic.
func checkRefused(t *testing.T, code int, out string, names ...string) {
	t.Helper()
	if code != exitFailure {
		t.Errorf("exit code %d, want %d (runtime failure)", code, exitFailure)
	}
	for _, want := range append(names, "--init-state") {
		if !strings.Contains(out, want) {
			t.Errorf("output does not name %q", want)
		}
	}
	for _, bad := range []string{"panic", "goroutine ", "assertion failed"} {
		if strings.Contains(out, bad) {
			t.Errorf("output contains %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("icebox serve output:\n%s", out)
		return
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "icebox: ") {
			t.Logf("exit %d: %s", code, line)
		}
	}
}

func TestSecurityStateFileDeleted(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, false)
	db := filepath.Join(dir, store.FileName)
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, db)
	if _, err := os.Stat(db); err == nil {
		t.Errorf("a refused start created %s", db)
	}
}

func TestSecurityStateFileEmpty(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, false)
	db := filepath.Join(dir, store.FileName)
	if err := os.Truncate(db, 0); err != nil {
		t.Fatal(err)
	}
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, db)
	if fi, err := os.Stat(db); err != nil || fi.Size() != 0 {
		t.Errorf("a refused start changed %s: %v, %v", db, fi, err)
	}
}

// TestSecurityStateFileTruncated: a state file cut in half (a full disk, a
// bad copy) is a clear error, exit 1, not a panic inside bbolt (exit 2).
func TestSecurityStateFileTruncated(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, false)
	// Some history, so that the file spans many pages.
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 300 {
		c := signaling.Call{
			ID: fmt.Sprintf("call-%04d", i), ConversationID: "conv", Initiator: "alice", PartyID: "p",
			Status: signaling.StatusRinging, SDPOffer: strings.Repeat("a=x\r\n", 600), LifetimeMS: 60000,
			Version: signaling.VoIPVersion, CreatedAt: time.Now().UTC(),
		}
		if err := st.CreateCall(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, store.FileName)
	fi, err := os.Stat(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(db, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	t.Logf("truncated %s from %d to %d bytes", db, fi.Size(), fi.Size()/2)
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, db, "corrupt")
}

func TestSecurityStateFileKeyringDeleted(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, true)
	rec := filepath.Join(dir, "secrets", "keyring.json")
	if err := os.Remove(rec); err != nil {
		t.Fatal(err)
	}
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, rec)
}

func TestSecurityStateFileSecretDeleted(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, true)
	secret := filepath.Join(dir, "secrets", "k2") // the active one after the rotation
	if err := os.Remove(secret); err != nil {
		t.Fatal(err)
	}
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, secret)
}

// TestSecurityStateFileSecretTruncated: a generated secret that shrank (still
// long enough to pass the 16-byte floor) is not trusted.
func TestSecurityStateFileSecretTruncated(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, false)
	secret := filepath.Join(dir, "secrets", "k1")
	if err := os.Truncate(secret, 20); err != nil {
		t.Fatal(err)
	}
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, secret)
}

// TestSecurityStateFileInitState: --init-state starts afresh on purpose, and
// says so loudly; the next plain start accepts the new state.
func TestSecurityStateFileInitState(t *testing.T) {
	t.Parallel()
	cfg, dir, env := usedStateDir(t, true)
	db := filepath.Join(dir, store.FileName)
	if err := os.Truncate(db, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "secrets", "keyring.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "secrets", "k1"), 20); err != nil {
		t.Fatal(err)
	}
	code, out := serveOnce(t, cfg, env)
	checkRefused(t, code, out, db)

	in := startIceboxArgs(t, cfg, []string{"--init-state"}, env...)
	if !strings.Contains(in.out.String(), "--init-state") || !strings.Contains(in.out.String(), `"level":"warn"`) {
		t.Errorf("--init-state did not say loudly what it did:\n%s", in.out.String())
	}
	in.stop(t)
	again := startIcebox(t, cfg, env...)
	again.stop(t)
}

// startIceboxArgs is startIcebox with extra `serve` arguments (no retry on a
// taken port: the ports are fresh).
func startIceboxArgs(t *testing.T, cfgYAML string, args []string, env ...string) *instance {
	t.Helper()
	in := &instance{cfgPath: filepath.Join(t.TempDir(), "icebox.yaml"), turnPort: freePort(t), tlsPort: freePort(t), httpPort: freePort(t)}
	cfg := strings.NewReplacer(phTURNPort, strconv.Itoa(in.turnPort), phTLSPort, strconv.Itoa(in.tlsPort),
		phHTTPPort, strconv.Itoa(in.httpPort)).Replace(cfgYAML)
	if err := os.WriteFile(in.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	in.process = startProcessEnv(t, env, iceboxBin, append([]string{"serve", "--config", in.cfgPath}, args...)...)
	if !waitFor(readyTimeout, func() bool { return in.exited() || httpStatus(in.httpURL("/readyz")) == 200 }) || in.exited() {
		t.Fatalf("icebox serve %s not ready (exited: %v):\n%s", strings.Join(args, " "), in.exited(), in.out.String())
	}
	t.Cleanup(func() { in.stop(t) })
	return in
}
