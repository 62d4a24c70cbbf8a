package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// manDir is where `make man` writes the committed man pages.
const manDir = "../../docs/man"

// thDate is the date field of a man page's .TH line, the one part of a page
// that changes without the command line changing.
var thDate = regexp.MustCompile(`(?m)^(\.TH "[^"]*" "[^"]*") "[^"]*"`)

// TestManPagesCurrent: the man pages in docs/man are what the binary
// generates, page for page, so a flag or command changed without `make man`
// fails here.
func TestManPagesCurrent(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if err := run(newSignals(context.Background()), []string{"man", "--dir", dir}, &stdout, &stderr, nil); err != nil {
		t.Fatalf("icebox man: %v: %s", err, stderr.String())
	}
	generated := pages(t, dir)
	committed := pages(t, manDir)
	if len(generated) < len(wantCommands) {
		t.Fatalf("icebox man wrote %d pages, want one per command (%d or more)", len(generated), len(wantCommands))
	}
	for name, page := range generated {
		old, ok := committed[name]
		switch {
		case !ok:
			t.Errorf("docs/man/%s is missing: run make man", name)
		case !bytes.Equal(thDate.ReplaceAll(old, []byte("$1 DATE")), thDate.ReplaceAll(page, []byte("$1 DATE"))):
			t.Errorf("docs/man/%s is not what icebox man generates: run make man", name)
		}
	}
	for name := range committed {
		if _, ok := generated[name]; !ok {
			t.Errorf("docs/man/%s is for a command icebox no longer has: run make man", name)
		}
	}
	if !bytes.Contains(generated["icebox-sessions-kill.1"], []byte(`\fB--token\fP`)) {
		t.Errorf("icebox-sessions-kill.1 does not document --token")
	}
}

// pages reads the *.1 files of dir by name.
func pages(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.1"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(n)] = b
	}
	return out
}
