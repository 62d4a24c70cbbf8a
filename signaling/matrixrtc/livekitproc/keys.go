package livekitproc

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/icebox-voip/icebox/internal/fileutil"
)

// Keys are the managed LiveKit's API key and secret. The secret signs the
// JWTs the authorization service issues and the webhooks LiveKit sends.
type Keys struct {
	APIKey    string
	APISecret string
	// File is where they are kept, in LiveKit's key-file format (one
	// "key: secret" line), which livekit-server reads itself (key_file), so
	// the secret is never in its config file or on its command line.
	File string
}

// String hides the secret from %v and friends.
func (k Keys) String() string { return fmt.Sprintf("{APIKey:%s File:%s}", k.APIKey, k.File) }

// KeysFile is the key file's name in the managed LiveKit's directory.
const KeysFile = "keys.yaml"

// Sizes of a generated pair: LiveKit refuses secrets under 32 bytes;
// these are LiveKit's own `generate-keys` sizes (API + 12, 43 characters).
const (
	keyRandomLen = 12
	secretLen    = 43
)

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// LoadKeys reads dir/keys.yaml, or generates a new pair into it (0600; dir
// is created 0700) when it does not exist. A file that others may read, or
// that does not hold exactly one key with a long enough secret, is an
// error: it is not replaced silently (delete it to get a new pair; issued
// JWTs then stop working).
func LoadKeys(dir string) (Keys, error) {
	path := filepath.Join(dir, KeysFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return generateKeys(dir, path)
	case err != nil:
		return Keys{}, fmt.Errorf("livekitproc: keys: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Keys{}, fmt.Errorf("livekitproc: keys: %w", err)
	}
	// LiveKit refuses a key file whose mode lets others in; say so first.
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return Keys{}, fmt.Errorf("livekitproc: keys: %s is readable by others (mode %04o); chmod 600 it", path, perm)
	}
	var m map[string]string
	if err := yaml.Unmarshal(b, &m); err != nil || len(m) != 1 {
		return Keys{}, fmt.Errorf("%w: %s must hold one \"key: secret\" line; delete it to generate a new pair", errKeysDamaged, path)
	}
	for k, s := range m {
		if k == "" || len(s) < 32 {
			return Keys{}, fmt.Errorf("%w: %s: the secret is shorter than 32 bytes; delete it to generate a new pair", errKeysDamaged, path)
		}
		return Keys{APIKey: k, APISecret: s, File: path}, nil
	}
	return Keys{}, errKeysDamaged // not reached: m has one entry
}

func generateKeys(dir, path string) (Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Keys{}, fmt.Errorf("livekitproc: keys: %w", err)
	}
	k := Keys{APIKey: "API" + randomString(keyRandomLen), APISecret: randomString(secretLen), File: path}
	// Both are [A-Za-z0-9]: the YAML line needs no quoting (and no YAML
	// encoder, see Render).
	b := []byte(k.APIKey + ": " + k.APISecret + "\n")
	if err := fileutil.WriteFileAtomic(path, b, 0o600); err != nil {
		return Keys{}, fmt.Errorf("livekitproc: keys: %w", err)
	}
	return k, nil
}

// randomString returns n characters of [A-Za-z0-9] from crypto/rand,
// without modulo bias.
func randomString(n int) string {
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		_, _ = rand.Read(buf) // never fails (crypto/rand's promise since Go 1.24)
		for _, c := range buf {
			if c < 248 && len(out) < n { // 248 = 4*62: bytes above are dropped, not folded
				out = append(out, alphabet[int(c)%len(alphabet)])
			}
		}
	}
	return string(out)
}
