package store

import "errors"

var (
	// ErrLocked means another process holds the database file.
	ErrLocked = errors.New("state file locked")
	// ErrNewerSchema means the file was written by a newer icebox.
	ErrNewerSchema = errors.New("state file is from a newer icebox")
	// ErrCorrupt means the file's metadata is unreadable.
	ErrCorrupt = errors.New("state file corrupt")
)
