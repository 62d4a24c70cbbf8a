package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// wantCommands are the command lines icebox has had since before cobra;
// the tree must still have each of them (TestHelp walks the tree, so a
// command added later is covered without a row here).
var wantCommands = [][]string{
	{"serve"}, {"creds"}, {"check"},
	{"config"}, {"config", "defaults"}, {"config", "check"},
	{"keyring"}, {"keyring", "list"}, {"keyring", "rotate"},
	{"sessions"}, {"sessions", "list"}, {"sessions", "kill"}, {"sessions", "bandwidth"},
	{"matrixrtc"}, {"matrixrtc", "well-known"},
	{"health"}, {"version"},
	{"completion"}, {"completion", "bash"}, {"completion", "zsh"}, {"completion", "fish"}, {"completion", "powershell"},
	{"man"}, {"store"}, {"store", "migrate"},
}

// commandTree returns the path (without "icebox") and the command of
// every command of the tree that is not hidden, the root first.
func commandTree(t *testing.T) map[string]*cobra.Command {
	t.Helper()
	root := newRootCmd(&cli{sig: newSignals(context.Background()), stdout: io.Discard, stderr: io.Discard})
	cmds := map[string]*cobra.Command{}
	var walk func(c *cobra.Command, path []string)
	walk = func(c *cobra.Command, path []string) {
		cmds[strings.Join(path, " ")] = c
		for _, s := range c.Commands() {
			if !s.Hidden {
				walk(s, append(slices.Clone(path), s.Name()))
			}
		}
	}
	walk(root, nil)
	for _, want := range wantCommands {
		if cmds[strings.Join(want, " ")] == nil {
			t.Errorf("the command tree has no %q", want)
		}
	}
	return cmds
}

// TestHelp: for every command of the tree, "icebox [CMD [SUB]] --help|-h|
// -help" and "icebox help [CMD [SUB]]" print help on stdout, nothing on
// stderr, and exit 0, without doing anything else (serve would start,
// keyring would need a token); the help names the command and each of its
// flags, and the top-level help every command.
func TestHelp(t *testing.T) {
	sig := newSignals(context.Background())
	for path, c := range commandTree(t) {
		cmd := strings.Fields(path)
		forms := [][]string{
			append(slices.Clone(cmd), "--help"),
			append(slices.Clone(cmd), "-h"),
			append(slices.Clone(cmd), "-help"),
			append([]string{"help"}, cmd...),
		}
		for _, args := range forms {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var stdout, stderr bytes.Buffer
				err := run(sig, args, &stdout, &stderr, nil)
				if code := exitCode(err); code != exitOK || err != nil {
					t.Fatalf("exit %d (%v), want 0; stderr: %s", code, err, stderr.String())
				}
				if stderr.Len() != 0 {
					t.Errorf("stderr: %q, want nothing", stderr.String())
				}
				out := stdout.String()
				if !strings.HasPrefix(out, "usage: icebox "+path) {
					t.Errorf("help does not start with the usage of %q: %q", "icebox "+path, out)
				}
				c.LocalFlags().VisitAll(func(f *pflag.Flag) {
					if !strings.Contains(out, "--"+f.Name+" ") {
						t.Errorf("help does not name --%s: %q", f.Name, out)
					}
					if f.Shorthand != "" && !strings.Contains(out, "-"+f.Shorthand+", --"+f.Name) {
						t.Errorf("help does not name -%s: %q", f.Shorthand, out)
					}
				})
				for _, s := range c.Commands() {
					if s.IsAvailableCommand() && !strings.Contains(out, "  "+s.Name()+" ") {
						t.Errorf("help does not list %q: %q", s.Name(), out)
					}
				}
				if path == "" {
					for _, want := range wantCommands {
						if !strings.Contains(out, "\n  "+strings.Join(want, " ")+" ") && want[0] != "completion" {
							t.Errorf("top-level help does not list %q: %q", want, out)
						}
					}
				}
			})
		}
	}
}

// TestHelpBinary: the built binary prints help on stdout with exit 0, and a
// bad command line's usage on stderr with exit 2.
func TestHelpBinary(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help", "sessions", "kill"}, {"sessions", "kill", "--help"}, {"config", "check", "-h"}} {
		stdout, stderr, code := runIcebox(t, exitTimeout, args...)
		if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "usage: icebox") {
			t.Errorf("icebox %s: exit %d, stdout %q, stderr %q; want 0 and the usage on stdout", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	stdout, stderr, code := runIcebox(t, exitTimeout, "sessions", "nosuch")
	if code != exitConfig || stdout != "" || !strings.Contains(stderr, "usage: icebox sessions") ||
		!strings.Contains(stderr, `icebox: sessions: unknown subcommand "nosuch"`) {
		t.Errorf("icebox sessions nosuch: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

// TestHelpUnknownIsUsageError: a wrong subcommand or flag is still exit 2
// with the usage on stderr, not help.
func TestHelpUnknownIsUsageError(t *testing.T) {
	sig := newSignals(context.Background())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"sesions"}, `unknown command "sesions" (did you mean sessions?)`},
		{[]string{"config"}, "config: want a subcommand: defaults | check"},
		{[]string{"config", "nosuch"}, `config: unknown subcommand "nosuch"`},
		{[]string{"keyring"}, "keyring: want a subcommand: list | rotate"},
		{[]string{"keyring", "nosuch"}, `keyring: unknown subcommand "nosuch"`},
		{[]string{"sessions"}, "sessions: want a subcommand: list | kill | bandwidth"},
		{[]string{"matrixrtc", "x"}, `matrixrtc: unknown subcommand "x"`},
		{[]string{"completion"}, "completion: want a subcommand: bash | zsh | fish | powershell"},
		{[]string{"completion", "nosuch"}, `completion: unknown subcommand "nosuch"`},
		{[]string{"help", "nosuch"}, `help: unknown command "nosuch"`},
		{[]string{"creds", "--nosuch"}, "creds: unknown flag: --nosuch"},
		{[]string{"--nosuch"}, "serve: unknown flag: --nosuch"},
		{[]string{"version", "extra"}, `version: unexpected argument "extra"`},
		{[]string{"sessions", "kill", "a", "b", "--token", "t"}, `sessions kill: unexpected argument "b"`},
		{[]string{"keyring", "list", "--compat"}, "keyring list: unknown flag: --compat"},
		{[]string{"man"}, "man: --dir is required"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(sig, tc.args, &stdout, &stderr, nil)
		if code := exitCode(err); code != exitConfig || err == nil || err.Error() != tc.want {
			t.Errorf("%v: exit %d (%v), want %d and %q", tc.args, code, err, exitConfig, tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: stdout %q, want nothing", tc.args, stdout.String())
		}
		if strings.Contains(tc.want, "unknown") && !strings.Contains(stderr.String(), "usage: icebox") {
			t.Errorf("%v: stderr %q, want the usage", tc.args, stderr.String())
		}
	}
}

// TestFlagSpellings: the spellings of flags that worked before cobra still
// do: single-dash long flags (the standard flag package took -config),
// -c for --config, flag=value, flags after positional arguments; a flag's
// value that looks like a flag is left alone.
func TestFlagSpellings(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/icebox.yaml"
	if err := os.WriteFile(path, []byte("state_dir: "+dir+"/state\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sig := newSignals(context.Background())
	for _, args := range [][]string{
		{"config", "check", "--config", path},
		{"config", "check", "--config=" + path},
		{"config", "check", "-config", path},
		{"config", "check", "-config=" + path},
		{"config", "check", "-c", path},
		{"config", "check", "-c=" + path},
	} {
		var stdout, stderr bytes.Buffer
		if err := run(sig, args, &stdout, &stderr, nil); err != nil || !strings.HasPrefix(stdout.String(), path+": ok") {
			t.Errorf("%v: %v, stdout %q, stderr %q", args, err, stdout.String(), stderr.String())
		}
	}

	root := newRootCmd(&cli{sig: sig, stdout: io.Discard, stderr: io.Discard})
	for _, tc := range []struct{ in, want []string }{
		{[]string{"check", "-json", "-timeout", "3s", "-password", "-secret", "-username", "u", "turn:h"},
			[]string{"check", "--json", "--timeout", "3s", "--password", "-secret", "--username", "u", "turn:h"}},
		{[]string{"health", "-url=http://h", "-insecure", "--", "-timeout"},
			[]string{"health", "--url=http://h", "--insecure", "--", "-timeout"}},
		{[]string{"sessions", "kill", "-user", "-c", "-url", "http://h"},
			[]string{"sessions", "kill", "--user", "-c", "--url", "http://h"}},
		{[]string{"serve", "-c", "-init-state", "-init-state", "-nosuch"},
			[]string{"serve", "-c", "-init-state", "--init-state", "-nosuch"}},
		{[]string{"-help"}, []string{"--help"}},
	} {
		if got := normaliseFlags(root, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("normaliseFlags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestDefaultCommandIsServe: "icebox --config F" and "icebox -c F" serve,
// as before there were other commands: a refused configuration is serve's
// exit 2 naming the key, before anything listens.
func TestDefaultCommandIsServe(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/icebox.yaml"
	cfg := "state_dir: " + dir + "/state\nturn:\n  relay:\n    min_port: 41000\n    max_port: 40000\n"
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--config", path}, {"-c", path}, {"-config", path}} {
		_, stderr, code := runIcebox(t, 30*time.Second, args...)
		if code != exitConfig || !strings.Contains(stderr, "turn.relay.min_port") {
			t.Errorf("icebox %s: exit %d, stderr %q; want serve's configuration error", strings.Join(args, " "), code, stderr)
		}
	}
}
