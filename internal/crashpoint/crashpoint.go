//go:build !crashpoint

// Package crashpoint kills the process at a named point, in test builds
// only: the fault tests of idempotent retries need a node to die between
// a transaction's commit and its response, and no signal sent from outside
// lands there reliably. A build without the tag crashpoint (every build
// that ships) has this file: Hit does nothing and the compiler removes the
// call.
package crashpoint

// Hit is a point where a test build may kill the process.
func Hit(point, op string) {}
