package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// bashCompletionLib is bash-completion's library, which cobra's bash
// script needs (_get_comp_words_by_ref).
const bashCompletionLib = "/usr/share/bash-completion/bash_completion"

// TestCompletionScripts: "icebox completion SHELL" prints a script for
// each shell the completion command has, naming icebox's own completion
// entry point.
func TestCompletionScripts(t *testing.T) {
	markers := map[string]string{
		"bash":       "__start_icebox",
		"zsh":        "#compdef icebox",
		"fish":       "complete -c icebox",
		"powershell": "Register-ArgumentCompleter",
	}
	sig := newSignals(context.Background())
	shells := commandTree(t)["completion"].Commands()
	if len(shells) < len(markers) {
		t.Fatalf("completion has %d shells, want at least %d", len(shells), len(markers))
	}
	for _, sh := range shells {
		var stdout, stderr bytes.Buffer
		err := run(sig, []string{"completion", sh.Name()}, &stdout, &stderr, nil)
		if err != nil || stderr.Len() != 0 {
			t.Errorf("completion %s: %v, stderr %q", sh.Name(), err, stderr.String())
			continue
		}
		want, ok := markers[sh.Name()]
		if !ok {
			want = "icebox"
		}
		if !strings.Contains(stdout.String(), want) || !strings.Contains(stdout.String(), "__complete") {
			t.Errorf("completion %s: the script does not contain %q and __complete (%d bytes)", sh.Name(), want, stdout.Len())
		}
	}
}

// TestCompletionBash sources the bash script the binary generates, with
// bash-completion's library, and asks it to complete command lines as bash
// would on TAB: the script runs the binary's __complete.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err == nil {
		_, err = os.Stat(bashCompletionLib)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("bash or bash-completion missing (%v); CI must install Debian's bash-completion package", err)
		}
		t.Skip("install Debian's bash-completion package: apt-get install bash-completion")
	}
	script, stderr, code := runIcebox(t, exitTimeout, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d: %s", code, stderr)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "icebox.bash")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	// complete WORD... sets what bash sets for a completion function with
	// the cursor at the end of the last word, and prints COMPREPLY, one
	// per line. compopt is bash's, valid only inside real completion.
	const driver = `source "$1"; source "$2"
compopt() { :; }
complete_line() {
	COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
	__start_icebox
	printf '%s\n' "${COMPREPLY[@]}"
}
shift 2
complete_line "$@"`
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"ses"}, []string{"sessions"}},
		{[]string{"sessions", "k"}, []string{"kill"}},
		{[]string{"config", ""}, []string{"defaults", "check"}},
		{[]string{"keyring", "list", "--to"}, []string{"--token"}},
		{[]string{"serve", "--init"}, []string{"--init-state"}},
		{[]string{"help", "matrix"}, []string{"matrixrtc"}},
		{[]string{"completion", "fi"}, []string{"fish"}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		args := append([]string{"-c", driver, "driver", bashCompletionLib, path, iceboxBin}, tc.words...)
		cmd := exec.CommandContext(ctx, bash, args...)
		cmd.Env = iceboxEnv()
		cmd.Dir = dir
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Errorf("completing %q: %v: %s", tc.words, err, errOut.String())
			continue
		}
		got := strings.Fields(out.String())
		for _, w := range tc.want {
			if !slices.Contains(got, w) {
				t.Errorf("completing %q: got %q, want %q among them", tc.words, got, w)
			}
		}
		if len(got) != len(tc.want) {
			t.Errorf("completing %q: got %q, want %q", tc.words, got, tc.want)
		}
	}
}

// TestCompletionNoFileArguments: no command takes file names as arguments,
// so TAB after any command offers no file names (cobra's __complete answers
// with ShellCompDirectiveNoFileComp), while --config completes file names
// and man's --dir directories.
func TestCompletionNoFileArguments(t *testing.T) {
	sig := newSignals(context.Background())
	complete := func(args ...string) string {
		var stdout, stderr bytes.Buffer
		if err := run(sig, append([]string{"__complete"}, args...), &stdout, &stderr, nil); err != nil {
			t.Fatalf("__complete %q: %v", args, err)
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		return lines[len(lines)-1] // the directive, ":N"
	}
	for path, c := range commandTree(t) {
		if path == "" || c.HasAvailableSubCommands() || c.Name() == "help" {
			continue // these complete command names
		}
		if got := complete(append(strings.Fields(path), "")...); got != fmt.Sprintf(":%d", cobra.ShellCompDirectiveNoFileComp) {
			t.Errorf("__complete %s '': directive %s, want NoFileComp", path, got)
		}
	}
	if got := complete("serve", "--config", ""); got != fmt.Sprintf(":%d", cobra.ShellCompDirectiveDefault) {
		t.Errorf("__complete serve --config '': directive %s, want file names", got)
	}
	if got := complete("man", "--dir", ""); got != fmt.Sprintf(":%d", cobra.ShellCompDirectiveFilterDirs) {
		t.Errorf("__complete man --dir '': directive %s, want directories", got)
	}
}
