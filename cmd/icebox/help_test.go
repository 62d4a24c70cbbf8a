package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// helpCommands are the command lines whose help must work: every command of
// run's dispatch, with each subcommand. TestHelpCoversDispatch keeps the list
// in step with run.go.
var helpCommands = [][]string{
	{},
	{"serve"},
	{"creds"},
	{"check"},
	{"config"}, {"config", "defaults"}, {"config", "check"},
	{"keyring"}, {"keyring", "list"}, {"keyring", "rotate"},
	{"sessions"}, {"sessions", "list"}, {"sessions", "kill"}, {"sessions", "bandwidth"},
	{"matrixrtc"}, {"matrixrtc", "well-known"},
	{"health"},
	{"store"}, {"store", "migrate"},
	{"version"},
}

// TestHelpCoversDispatch reads the command names from run's switch so a new
// command without a row in helpCommands fails here.
func TestHelpCoversDispatch(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "run.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cmds []string
	ast.Inspect(f, func(n ast.Node) bool {
		fn, ok := n.(*ast.FuncDecl)
		if !ok || fn.Name.Name != "run" {
			return true
		}
		ast.Inspect(fn.Body, func(n ast.Node) bool {
			sw, ok := n.(*ast.SwitchStmt)
			if !ok || sw.Tag == nil {
				return true
			}
			if id, ok := sw.Tag.(*ast.Ident); !ok || id.Name != "cmd" {
				return true
			}
			for _, s := range sw.Body.List {
				for _, e := range s.(*ast.CaseClause).List {
					if lit, ok := e.(*ast.BasicLit); ok {
						name, _ := strconv.Unquote(lit.Value)
						cmds = append(cmds, name)
					}
				}
			}
			return false
		})
		return false
	})
	if len(cmds) < 5 {
		t.Fatalf("found only %v in run's switch: has the dispatch moved?", cmds)
	}
	for _, c := range cmds {
		if !slices.ContainsFunc(helpCommands, func(l []string) bool { return len(l) > 0 && l[0] == c }) {
			t.Errorf("command %q of run.go has no row in helpCommands", c)
		}
	}
}

// TestHelp: "icebox [CMD [SUB]] -h|--help|-help" and "icebox help CMD" print
// help on stdout, nothing on stderr, and exit 0, without doing anything else
// (serve would start, keyring would need a token).
func TestHelp(t *testing.T) {
	sig := newSignals(context.Background())
	for _, cmd := range helpCommands {
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
				if code := exitCode(err); code != exitOK {
					t.Fatalf("exit %d (%v), want 0; stderr: %s", code, err, stderr.String())
				}
				if err != nil && !errors.Is(err, flag.ErrHelp) {
					t.Fatalf("error %v", err)
				}
				if stderr.Len() != 0 {
					t.Errorf("stderr: %q, want nothing", stderr.String())
				}
				out := stdout.String()
				if !strings.Contains(out, "usage:") {
					t.Errorf("stdout does not say usage: %q", out)
				}
				want := "icebox " + strings.Join(cmd, " ")
				if len(cmd) > 0 && !strings.Contains(out, want) {
					t.Errorf("help does not name %q: %q", want, out)
				}
				if len(cmd) == 0 && !strings.Contains(out, "commands:") {
					t.Errorf("top-level help does not list the commands: %q", out)
				}
			})
		}
	}
}

// TestHelpUnknownIsUsageError: a wrong subcommand is still exit 2 with the
// usage on stderr, not help.
func TestHelpUnknownIsUsageError(t *testing.T) {
	sig := newSignals(context.Background())
	for _, args := range [][]string{{"nosuch"}, {"config"}, {"config", "nosuch"}, {"keyring"}, {"keyring", "nosuch"}, {"matrixrtc", "x"}, {"creds", "--nosuch"}} {
		var stdout, stderr bytes.Buffer
		err := run(sig, args, &stdout, &stderr, nil)
		if code := exitCode(err); code != exitConfig {
			t.Errorf("%v: exit %d (%v), want %d", args, code, err, exitConfig)
		}
		if stdout.Len() != 0 || !strings.Contains(stderr.String(), "usage") {
			t.Errorf("%v: stdout %q, stderr %q: want the usage on stderr only", args, stdout.String(), stderr.String())
		}
	}
}
