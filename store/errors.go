package store

import "errors"

var (
	// ErrLocked means another process holds the database file.
	ErrLocked = errors.New("state file locked")
	// ErrNewerSchema means the file was written by a newer icebox.
	ErrNewerSchema = errors.New("state file is from a newer icebox")
	// ErrCorrupt means the file's metadata is unreadable, or the file is
	// shorter than its metadata says (truncated).
	ErrCorrupt = errors.New("state file corrupt")
	// ErrMissing means Open was told the file must exist (Options.MustExist)
	// and it does not, or is empty.
	ErrMissing = errors.New("state file missing")

	// errNoChange rolls back a write transaction that found nothing to
	// do: bbolt fsyncs every commit, even an empty one. The method that
	// returns it inside db.Update reports success.
	errNoChange = errors.New("no change")
)
