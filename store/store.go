// Package store keeps icebox's durable state in one bbolt file: it opens the
// file with a lock timeout (so a second icebox on the same state directory
// fails instead of sharing its ports), creates the buckets, and migrates the
// schema. Consumers declare the interfaces they need; this package
// implements them.
package store

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// FileName is the database's name inside the state directory.
const FileName = "icebox.db"

// Bucket names. The schema version lives in bucketMeta.
var (
	bucketMeta            = []byte("meta")
	bucketConversations   = []byte("conversations")
	bucketCalls           = []byte("calls")
	bucketCallsByMatrixEv = []byte("calls_by_matrix_event")
	bucketRooms           = []byte("rooms_by_conversation")
	bucketOutbox          = []byte("outbox")
	bucketSeenEvents      = []byte("seen_matrix_events")
	bucketSync            = []byte("sync")
	bucketRevocations     = []byte("revocations")
	bucketCallsByConv     = []byte("calls_by_conversation") // schema 2; see calls.go
	bucketCallsRinging    = []byte("calls_ringing")         // schema 2; see calls.go
	bucketConvsByRoom     = []byte("conversations_by_room") // schema 3; see rooms.go
	bucketCallsActive     = []byte("calls_active")          // schema 4; see calls.go
	bucketCallsEnded      = []byte("calls_ended")           // schema 5; see retention.go
	bucketCallSDPs        = []byte("call_sdps")             // schema 5; see sdp.go
	bucketConvsByUser     = []byte("conversations_by_user") // schema 6; see userconversations.go
	// schema 7: bucketIdemKeys, bucketIdemByUser, bucketIdemExpiry (idempotency.go)

	keySchemaVersion = []byte("schema_version")
)

// migrations[i] brings the schema from version i to i+1. Append only.
var migrations = []func(tx *bolt.Tx) error{
	// 0 → 1: the first layout.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{
			bucketConversations, bucketCalls, bucketCallsByMatrixEv, bucketRooms,
			bucketOutbox, bucketSeenEvents, bucketSync, bucketRevocations,
		} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		return nil
	},
	// 1 → 2: indexes for listing a conversation's calls and the ringing
	// calls, filled from the calls already stored.
	migrateCallIndexes,
	// 2 → 3: the index from Matrix room to conversation, filled from the
	// conversations already stored.
	migrateRoomIndex,
	// 3 → 4: the index of ringing and answered calls, filled from the calls
	// already stored.
	migrateActiveIndex,
	// 4 → 5: the index of ended calls by end time, for pruning them after
	// calls.retention, filled from the calls already stored; and the bucket
	// of SDP bodies kept apart from the call records.
	migrateEndedIndex,
	// 5 → 6: the index of each user's conversations, filled from the
	// conversations already stored.
	migrateUserIndex,
	// 6 → 7: the idempotency keys of the call operations (idempotency.go),
	// empty.
	migrateIdempotency,
}

// SchemaVersion is the version this build writes.
func SchemaVersion() int { return len(migrations) }

// Store is an open state file.
type Store struct {
	db *bolt.DB
}

// Options tune Open.
type Options struct {
	// LockTimeout is how long to wait for another process to release the
	// file. Default: 2s.
	LockTimeout time.Duration
	// MustExist refuses a missing or empty file (ErrMissing) instead of
	// creating a new one: bbolt initialises an empty file as a new
	// database, and a new database has no revocations, so the credentials
	// of calls that ended would work again. The caller sets it when it
	// knows the state directory held state before. Default: false.
	MustExist bool
}

// Open opens (creating if needed, unless opts.MustExist) the database in dir
// and brings its schema up to date. A file written by a newer icebox is
// refused; so is a file whose structure bbolt cannot trust (ErrCorrupt,
// checked before bbolt maps it: bbolt panics, or faults, on a truncated
// file).
func Open(dir string, opts Options) (*Store, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: create state dir: %w", err)
	}
	path := filepath.Join(dir, FileName)
	switch fi, err := os.Stat(path); {
	case errors.Is(err, fs.ErrNotExist):
		if opts.MustExist {
			return nil, fmt.Errorf("store: %s does not exist: %w", path, ErrMissing)
		}
	case err != nil:
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	case fi.Size() == 0:
		if opts.MustExist {
			return nil, fmt.Errorf("store: %s is empty (0 bytes): %w", path, ErrMissing)
		}
	default:
		if err := checkFile(path, fi.Size()); err != nil {
			return nil, fmt.Errorf("store: %s: %w", path, err)
		}
	}
	db, err := openBolt(path, opts.LockTimeout)
	if err != nil {
		return nil, err
	}
	return &Store{db: db}, nil
}

// openBolt opens the file and migrates it. A panic or a memory fault in
// bbolt while it reads a damaged file becomes ErrCorrupt: the process must
// exit with a clear error, not a stack trace and Go's exit code 2.
func openBolt(path string, lockTimeout time.Duration) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // this goroutine only
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: %s: %w: bbolt failed reading it: %v", path, ErrCorrupt, r)
			if db != nil {
				err = errors.Join(err, db.Close())
				db = nil
			}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("store: %s is locked by another process (is icebox already running on this state_dir?): %w", path, ErrLocked)
		}
		if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
			err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.Update(migrate); err != nil {
		return nil, errors.Join(fmt.Errorf("store: %s: %w", path, err), db.Close())
	}
	return db, nil
}

func migrate(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create meta bucket: %w", err)
	}
	have := 0
	if v := meta.Get(keySchemaVersion); v != nil {
		if len(v) != 8 {
			return fmt.Errorf("%w: schema version has %d bytes", ErrCorrupt, len(v))
		}
		have = int(binary.BigEndian.Uint64(v))
	}
	if have > len(migrations) {
		return fmt.Errorf("%w: file has schema %d, this build knows %d", ErrNewerSchema, have, len(migrations))
	}
	for v := have; v < len(migrations); v++ {
		if err := migrations[v](tx); err != nil {
			return fmt.Errorf("migrate schema %d→%d: %w", v, v+1, err)
		}
	}
	// A random ID of this file: outbox transaction IDs carry it, so a new
	// state file never reuses a transaction ID the homeserver remembers
	// from an old one (same device, same token).
	if _, err := instanceID(meta); err != nil {
		return fmt.Errorf("instance id: %w", err)
	}
	return meta.Put(keySchemaVersion, binary.BigEndian.AppendUint64(nil, uint64(len(migrations))))
}

// InstanceID returns the file's random instance ID (created when the file
// was): a caller can record it to notice that the file was replaced.
func (s *Store) InstanceID() (string, error) {
	var id string
	err := s.db.View(func(tx *bolt.Tx) error {
		id = string(tx.Bucket(bucketMeta).Get(keyInstance))
		if id == "" {
			return fmt.Errorf("store: %w: no instance ID", ErrCorrupt)
		}
		return nil
	})
	return id, err
}

// Version returns the schema version stored in the file.
func (s *Store) Version() (int, error) {
	var v int
	err := s.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketMeta).Get(keySchemaVersion)
		if len(raw) != 8 {
			return fmt.Errorf("store: %w: no schema version", ErrCorrupt)
		}
		v = int(binary.BigEndian.Uint64(raw))
		return nil
	})
	return v, err
}

// Ping checks that the file can be read, for readiness probes.
func (s *Store) Ping() error {
	return s.db.View(func(tx *bolt.Tx) error { return nil })
}

// Path is the file's path.
func (s *Store) Path() string { return s.db.Path() }

// Close closes the file. It is idempotent.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

var keyInstance = []byte("instance_id")

// instanceID returns the file's random instance ID, creating it once.
func instanceID(meta *bolt.Bucket) (string, error) {
	if v := meta.Get(keyInstance); len(v) > 0 {
		return string(v), nil
	}
	raw := make([]byte, 6)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw)
	return id, meta.Put(keyInstance, []byte(id))
}
