package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"

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

const usage = `usage: icebox <command> [flags]

commands:
  serve           run the relay and the HTTP API (the default)
  creds           mint TURN credentials from the configured keyring
  check           test STUN/TURN servers as a client: binding, allocate, relay, NAT, TLS
  config defaults print a commented default configuration
  config check    validate a configuration file
  keyring list    show a running icebox's keyring (admin token)
  keyring rotate  make a new secret sign; the old ones retire once unused
  sessions list   show a running icebox's TURN allocations (admin token)
  sessions kill   close an allocation by ID, or all of a user or a call
  sessions bandwidth  show or override a user's bandwidth limit
  matrixrtc well-known  print the .well-known/matrix/client fragment for Element Call
  health          exit 0 if a running icebox is ready (Docker HEALTHCHECK)
  store migrate   copy a bbolt install's state to an empty PostgreSQL database
  version         print the version

Run "icebox <command> -h" for a command's flags.
`

// run dispatches a command line. env is the process environment (for the
// configuration's ICEBOX_* variables).
func run(sig *signals, args []string, stdout, stderr io.Writer, env []string) error {
	ctx := sig.ctx
	cmd := "serve"
	if len(args) > 0 && isHelp(args[0]) {
		// "icebox help CMD" is "icebox CMD --help".
		if len(args) > 1 && !isHelp(args[1]) {
			return run(sig, append(args[1:], "--help"), stdout, stderr, env)
		}
		_, err := io.WriteString(stdout, usage)
		return err
	}
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serveCmd(sig, args, stdout, stderr, env)
	case "creds":
		return credsCmd(args, stdout, stderr, env)
	case "check":
		return checkCmd(ctx, args, stdout, stderr, env)
	case "config":
		return configCmd(args, stdout, stderr, env)
	case "keyring":
		return keyringCmd(ctx, args, stdout, stderr, env)
	case "sessions":
		return sessionsCmd(ctx, args, stdout, stderr, env)
	case "matrixrtc":
		return matrixRTCCmd(args, stdout, stderr, env)
	case "health":
		return healthCmd(ctx, args, stdout, stderr, env)
	case "store":
		return storeCmd(ctx, args, stdout, stderr, env)
	case "version":
		fs := newFlagSet("version", "Prints the version.", stdout, stderr)
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		_, err := fmt.Fprintln(stdout, versionString())
		return err
	default:
		_, _ = io.WriteString(stderr, usage)
		return usagef("unknown command %q", cmd)
	}
}

// cliFlags is a command's flag set. Help asked for (-h, --help) goes to
// stdout and exits 0; the usage printed after a flag error goes to stderr.
type cliFlags struct {
	*flag.FlagSet
	stdout, stderr io.Writer
}

// newFlagSet returns a flag set that reports errors instead of exiting.
// synopsis is what the command does, printed above its flags.
func newFlagSet(name, synopsis string, stdout, stderr io.Writer) *cliFlags {
	fs := &cliFlags{FlagSet: flag.NewFlagSet("icebox "+name, flag.ContinueOnError), stdout: stdout, stderr: stderr}
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: icebox %s [flags]\n\n%s\n\nflags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args, the usage going to stdout on -h and to stderr with
// a flag error (wrapped as a usage error). Positional arguments are left
// to the caller.
func (fs *cliFlags) parse(args []string) error {
	var out bytes.Buffer
	fs.SetOutput(&out)
	err := fs.Parse(args)
	fs.SetOutput(fs.stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = fs.stdout.Write(out.Bytes())
		return err
	case err != nil:
		_, _ = fs.stderr.Write(out.Bytes())
		return usageError{err}
	}
	return nil
}

// parseFlags parses a command's flags; it takes no positional arguments.
func parseFlags(fs *cliFlags, args []string) error {
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}
