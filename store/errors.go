package store

import "errors"

var (
	// ErrLocked means another process holds the database file.
	ErrLocked = errors.New("state file locked")
	// ErrNewerSchema means the file was written by a newer icebox.
	ErrNewerSchema = errors.New("state file is from a newer icebox")
	// ErrCorrupt means the file's metadata is unreadable.
	ErrCorrupt = errors.New("state file corrupt")

	// errNoChange rolls back a write transaction that found nothing to
	// do: bbolt fsyncs every commit, even an empty one. The method that
	// returns it inside db.Update reports success.
	errNoChange = errors.New("no change")
)
