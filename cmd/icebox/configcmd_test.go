package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
)

func TestWarnReadableSecrets(t *testing.T) {
	cfg := config.Default()
	cfg.Credentials.Secrets = []config.Secret{{KID: "k1", Secret: "inline-secret-0123456789", Compat: true}}
	cfg.MatrixRTC.LiveKit.APISecret = "inline-secret-livekit-0123456789abcdef"
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o644, true}, {0o640, true}, {0o600, false}} {
		path := filepath.Join(t.TempDir(), "icebox.yaml")
		if err := os.WriteFile(path, []byte("{}\n"), tc.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.mode); err != nil { // past the umask
			t.Fatal(err)
		}
		var buf bytes.Buffer
		warnReadableSecrets(path, cfg, zerolog.New(&buf))
		if got := strings.Contains(buf.String(), "readable by others"); got != tc.warn {
			t.Errorf("mode %04o: warned %v, want %v (%s)", tc.mode, got, tc.warn, buf.String())
		}
		if tc.warn && !strings.Contains(buf.String(), "matrixrtc.livekit.api_secret") {
			t.Errorf("mode %04o: the warning does not name matrixrtc.livekit.api_secret: %s", tc.mode, buf.String())
		}
		if strings.Contains(buf.String(), "inline-secret") {
			t.Fatalf("the warning shows the secret: %s", buf.String())
		}
	}
}
