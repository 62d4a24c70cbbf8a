package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecurityStateFileOpenMissing: with MustExist, a missing or empty file
// is ErrMissing and is left as it was; without it, a new file is created.
func TestSecurityStateFileOpenMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if _, err := Open(dir, Options{MustExist: true}); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), path) {
		t.Errorf("missing file: got %v, want ErrMissing naming %s", err, path)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused Open created the file: %v", err)
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{MustExist: true}); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty file: got %v, want ErrMissing saying empty", err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
		t.Errorf("a refused Open wrote the empty file: %v, %v", fi, err)
	}
	s := openTemp(t, dir) // without MustExist: a fresh file
	if _, err := s.InstanceID(); err != nil {
		t.Error(err)
	}
}

// TestSecurityStateFileOpenDamaged: damaged files are ErrCorrupt, never a
// panic or a fault inside bbolt.
func TestSecurityStateFileOpenDamaged(t *testing.T) {
	// A file with some history, as a template.
	src := t.TempDir()
	s, err := Open(src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		c := ringingCall(fmt.Sprintf("call-%03d", i), "conv", time.Duration(i))
		c.SDPOffer = strings.Repeat("a=x\r\n", 600)
		mustCreate(t, s, c)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(filepath.Join(src, FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("template file: %d bytes", len(good))
	garbage := []byte(strings.Repeat("not a bbolt file ", 1000))
	zeroMeta := append(make([]byte, 8192), good[8192:]...)
	// Meta pages intact, every other page garbage: passes the size check,
	// then bbolt panics on the first page it reads.
	garbagePages := append(append([]byte(nil), good[:8192]...), bytes.Repeat([]byte{0xAB}, len(good)-8192)...)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"half", good[:len(good)/2]},
		{"quarter", good[:len(good)/4]},
		{"one page", good[:4096]},
		{"few bytes", good[:100]},
		{"garbage", garbage},
		{"meta pages zeroed", zeroMeta},
		{"data pages garbage", garbagePages},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, Options{MustExist: true})
			if err == nil {
				s.Close()
				t.Fatal("Open accepted the damaged file")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("got %v, want ErrCorrupt", err)
			}
			t.Logf("%s: %v", tc.name, err)
		})
	}
}

// TestOpenFirstMetaTorn: a crash while bbolt wrote the first meta page
// leaves it invalid; bbolt opens such a file from the second one, and so
// must the check before it.
func TestOpenFirstMetaTorn(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, ringingCall("call-1", "conv", 0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 100), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTemp(t, dir)
	if _, err := s.Call(t.Context(), "call-1"); err != nil {
		t.Errorf("call after opening from the second meta page: %v", err)
	}
}
