//go:build !windows

// Package pgtest starts a real PostgreSQL server for tests: Debian's
// postgresql binaries (make test-deps installs them), a cluster made by
// initdb in a temporary directory, run as an unprivileged user (PostgreSQL
// refuses to run as root), listening only on a unix socket in that
// directory, stopped by PID. Without the binaries a test skips, saying what
// to install; under CI=true it fails.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// port names the socket file (.s.PGSQL.<port>); nothing listens on TCP.
const port = 5432

// Server is one running PostgreSQL cluster.
type Server struct {
	dir    string // data directory and socket directory
	bin    string
	cred   *syscall.Credential // nil: run as the current user
	cmd    *exec.Cmd
	exited chan struct{}
	dbs    atomic.Int64
	// durable keeps PostgreSQL's own settings (fsync, synchronous_commit,
	// full_page_writes on): see Durable.
	durable bool
}

// Option changes how Start runs the server.
type Option func(*Server)

// Durable keeps PostgreSQL durable as it runs in production: every commit
// is flushed to disk before it returns (fsync, synchronous_commit and
// full_page_writes at their defaults, on). Without it the server runs with
// them off, which is right for tests (a crash of the test machine loses
// nothing anyone needs) but makes a benchmark compare PostgreSQL without
// disk against bbolt, which syncs every transition.
func Durable() Option { return func(s *Server) { s.durable = true } }

// BinDir finds the directory of Debian's postgresql binaries (initdb,
// postgres), newest version first; "" if none.
func BinDir() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	return ""
}

func versionOf(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Require skips t (fails it under CI=true) when PostgreSQL is not
// installed, and returns the binaries' directory.
func Require(t testing.TB) string {
	t.Helper()
	bin := BinDir()
	if bin == "" {
		msg := "PostgreSQL is not installed (no initdb in PATH or /usr/lib/postgresql/*/bin): run `make test-deps` or `apt-get install postgresql`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

// Start makes a new cluster and starts it; t's cleanup stops it and
// removes its directory.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s, err := start(Require(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// StartMain is Start for TestMain, where there is no t: it returns an
// error instead of skipping; ok is false when PostgreSQL is not installed
// (the caller decides whether that fails).
func StartMain(opts ...Option) (s *Server, ok bool, err error) {
	bin := BinDir()
	if bin == "" {
		return nil, false, nil
	}
	s, err = start(bin, opts...)
	return s, true, err
}

func start(bin string, opts ...Option) (*Server, error) {
	dir, err := os.MkdirTemp("", "icebox-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, bin: bin}
	for _, o := range opts {
		o(s)
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses root: run it as Debian's postgres user, or
		// nobody.
		cred, err := unprivileged()
		if err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
		s.cred = cred
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, errors.Join(fmt.Errorf("pgtest: %w", err), os.RemoveAll(dir))
		}
	}
	data := filepath.Join(dir, "data")
	out, err := s.command("initdb", "-D", data, "-U", "icebox", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pgtest: initdb: %w: %s", err, out), os.RemoveAll(dir))
	}
	if err := s.Start(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(dir))
	}
	return s, nil
}

func unprivileged() (*syscall.Credential, error) {
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, errors.New("pgtest: running as root and there is neither a postgres nor a nobody user to run PostgreSQL as")
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"LC_ALL=C", "PATH=" + s.bin + ":/usr/bin:/bin"}
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (s *Server) Start() error {
	args := []string{"-D", filepath.Join(s.dir, "data"), "-p", strconv.Itoa(port),
		"-c", "listen_addresses=", "-c", "unix_socket_directories=" + s.dir,
		"-c", "max_connections=200", "-c", "shared_buffers=32MB"}
	if !s.durable {
		// Tests, not production: a crash of the test machine loses
		// nothing anyone needs. A clean stop (Stop) still writes
		// everything, so data survives a restart.
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	cmd := s.command("postgres", args...)
	log, err := os.Create(filepath.Join(s.dir, "postgres.log"))
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	s.cmd = cmd
	s.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.DSN("postgres"))
		cancel()
		if err == nil {
			return conn.Close(context.Background())
		}
		select {
		case <-s.exited:
			return fmt.Errorf("pgtest: postgres exited: %s", s.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres did not accept connections in 30s: %w; log: %s", err, s.Log())
		}
	}
}

// Stop stops the server (fast shutdown: clients are disconnected, every
// committed transaction is kept) and waits until it has exited.
func (s *Server) Stop() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd = nil
	return nil
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	return errors.Join(s.Stop(), os.RemoveAll(s.dir))
}

// Durable reports whether the server runs durable (see the Durable option).
func (s *Server) Durable() bool { return s.durable }

// Log is the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}

// DSN is the connection string of database db.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=icebox dbname=%s sslmode=disable", s.dir, port, db)
}

// NewDatabase creates an empty database and returns its DSN.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := "t" + strconv.FormatInt(s.dbs.Add(1), 10)
	dsn, err := s.CreateDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// CreateDatabase creates database name (letters, digits, _) if it does not
// exist, and returns its DSN.
func (s *Server) CreateDatabase(name string) (string, error) {
	if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
		return "", fmt.Errorf("pgtest: bad database name %q", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+name); err != nil {
			return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
		}
	}
	return s.DSN(name), nil
}
