package postgres

// OldSchema makes Open migrate only up to version v until the returned
// function is called (tests of a migration: a database at an old schema).
func OldSchema(v int) (restore func()) {
	all := migrations
	migrations = all[:v]
	return func() { migrations = all }
}
