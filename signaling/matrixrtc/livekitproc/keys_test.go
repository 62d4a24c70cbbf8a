package livekitproc_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// TestInstallScriptPinsSameVersion keeps scripts/install-livekit.sh and
// Version, the one pin (livekittest runs the same), in step.
func TestInstallScriptPinsSameVersion(t *testing.T) {
	script, err := os.ReadFile("../../../scripts/install-livekit.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LIVEKIT_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("scripts/install-livekit.sh has no LIVEKIT_VERSION= line")
	}
	if got := string(m[1]); got != livekitproc.Version {
		t.Errorf("install-livekit.sh pins %s, livekitproc.Version is %s", got, livekitproc.Version)
	}
}

// TestLoadKeys: a pair is generated once into a 0600 file, read back
// unchanged at the next start, and a file others can read or a damaged
// one is refused rather than replaced.
func TestLoadKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "livekit")
	k1, err := livekitproc.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k1.APIKey, "API") || len(k1.APIKey) != 15 || len(k1.APISecret) < 32 {
		t.Errorf("generated key %q and a %d-byte secret; want API + 12 characters and at least 32 bytes", k1.APIKey, len(k1.APISecret))
	}
	fi, err := os.Stat(k1.File)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	if strings.Contains(k1.String(), k1.APISecret) {
		t.Error("Keys.String shows the secret")
	}
	k2, err := livekitproc.LoadKeys(dir)
	if err != nil || k2 != k1 {
		t.Errorf("second LoadKeys = %v, %v; want the same pair", k2, err)
	}

	if err := os.Chmod(k1.File, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := livekitproc.LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "readable by others (mode 0644); chmod 600 it") {
		t.Errorf("open key file: %v", err)
	}
	if err := os.Chmod(k1.File, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(k1.File, []byte("APIx: short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := livekitproc.LoadKeys(dir); err == nil || !strings.Contains(err.Error(), "shorter than 32 bytes; delete it") {
		t.Errorf("short secret: %v", err)
	}
	if err := os.WriteFile(k1.File, []byte("[not, a, map]"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := livekitproc.LoadKeys(dir); err == nil || !strings.Contains(err.Error(), `must hold one "key: secret" line`) {
		t.Errorf("damaged file: %v", err)
	}
}

// TestFindBinary: a configured path must be an executable file.
func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{plain, dir, filepath.Join(dir, "missing")} {
		if _, err := livekitproc.FindBinary(p); err == nil {
			t.Errorf("FindBinary(%q) accepted it", p)
		}
	}
	t.Setenv("PATH", dir)
	t.Setenv("GOBIN", "")
	t.Setenv("GOPATH", dir)
	if _, err := livekitproc.FindBinary(""); err == nil || !strings.Contains(err.Error(), "run scripts/install-livekit.sh") {
		t.Errorf("FindBinary with nothing installed: %v", err)
	}
}
