package main

import (
	"errors"
	"testing"

	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/node"
)

func TestExitCodeStateError(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"usage", usagef("bad flag"), exitConfig},
		{"state", keystore.StateError{Err: errors.New("lost")}, exitFailure},
		// keystore.Build's errors are wrapped as config errors by the node; lost
		// state among them is still a runtime failure.
		{"state inside usage", usageError{keystore.StateError{Err: errors.New("lost")}}, exitFailure},
		{"config", node.ConfigError{Err: errors.New("bad relay")}, exitConfig},
		{"state inside config", node.ConfigError{Err: keystore.StateError{Err: errors.New("lost")}}, exitFailure},
		{"other", errors.New("socket"), exitFailure},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("%s: exitCode = %d, want %d", tc.name, got, tc.want)
		}
	}
}
