package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/node"
)

// Exit codes: scripts and systemd tell a configuration mistake (fix the
// file) from a runtime failure (look at the logs).
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure: a socket, the state file, a peer
	exitConfig  = 2 // bad command line or configuration; nothing was started
)

// usageError marks errors in the command line or configuration.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	var (
		ue usageError
		ce node.ConfigError
		se keystore.StateError
	)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &se):
		// Lost or damaged state is not a configuration mistake, even
		// when it surfaces while the configured keyring is built.
		return exitFailure
	case errors.As(err, &ue), errors.As(err, &ce):
		return exitConfig
	default:
		return exitFailure
	}
}

// run executes a command line (without the program name) on icebox's
// command tree (cli.go). env is the process environment (for the
// configuration's ICEBOX_* variables). Help goes to stdout and returns nil;
// a usage error has printed the command's usage to stderr.
func run(sig *signals, args []string, stdout, stderr io.Writer, env []string) error {
	root := newRootCmd(&cli{sig: sig, stdout: stdout, stderr: stderr, env: env})
	// serve is the default command: "icebox" and "icebox --config F" serve,
	// as they did before there were other commands.
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelpFlag(args[0])) {
		args = append([]string{"serve"}, args...)
	}
	root.SetArgs(normaliseFlags(root, args))
	return root.ExecuteContext(sig.ctx)
}
