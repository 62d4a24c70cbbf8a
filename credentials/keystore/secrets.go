package keystore

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// secretsDir holds secrets icebox generated itself, inside state_dir.
const secretsDir = "secrets"

// SecretsPath is the directory of generated secrets in stateDir.
func SecretsPath(stateDir string) string { return filepath.Join(stateDir, secretsDir) }

// generatedSecret reads the generated secret for kid, creating it first if
// it does not exist and create is set. The file is written whole and synced
// before use, so a crash never leaves a truncated secret that would then be
// trusted. Without create (icebox creds, often run as another user than the
// service) it writes nothing, not even the state record.
//
// The state record (record.go) keeps each generated secret's SHA-256: a
// recorded secret whose file disappeared is refused rather than generated
// anew under the same kid (credentials it signed, and homeservers sharing
// it, would silently stop matching), and one whose content changed — cut
// short, say — is refused rather than trusted. A secret the record does not
// know yet (generated now, or by an icebox before the record) is added to it.
func generatedSecret(stateDir, kid string, create bool) ([]byte, error) {
	dir := SecretsPath(stateDir)
	path := filepath.Join(dir, kid)
	rec, _, err := LoadRecord(stateDir)
	if err != nil {
		return nil, err
	}
	want, recorded := rec.Secrets[kid]
	key, err := readSecretFile(path)
	switch {
	case err == nil && recorded && secretSum(key) != want:
		return nil, StateError{fmt.Errorf("state: %s changed since icebox generated it (%s records another SHA-256): "+
			"a truncated or replaced secret is not trusted; %s", path, RecordPath(stateDir), InitStateHint)}
	case err == nil && (recorded || !create):
		return key, nil
	case err == nil:
		return key, recordSecret(stateDir, kid, key)
	case recorded && errors.Is(err, fs.ErrNotExist):
		return nil, StateError{fmt.Errorf("state: %s is missing, but %s records it: a new secret under kid %s would not "+
			"match the credentials it signed; %s", path, RecordPath(stateDir), kid, InitStateHint)}
	case errors.Is(err, errSecretExposed):
		return nil, err // the secret is fine; its mode is not: no state was lost
	case recorded:
		return nil, StateError{fmt.Errorf("state: %w; %s", err, InitStateHint)}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	case !create:
		return nil, fmt.Errorf("%w (start icebox serve once to generate it, or name a secret in the config)", err)
	}
	if key, err = writeNewSecret(dir, kid); err != nil {
		return nil, err
	}
	return key, recordSecret(stateDir, kid, key)
}

// writeNewSecret generates a secret into dir/kid, or returns the one
// another process generated there meanwhile.
func writeNewSecret(dir, kid string) ([]byte, error) {
	path := filepath.Join(dir, kid)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate secret: %w", err)
	}
	key := []byte(base64.RawURLEncoding.EncodeToString(raw))
	tmp, err := os.CreateTemp(dir, "."+kid+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("write secret: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	_, werr := tmp.Write(append(key, '\n'))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("write secret %s: %w", path, err)
	}
	// Link, not rename: if another process generated it meanwhile, keep theirs.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readSecretFile(path)
		}
		return nil, fmt.Errorf("write secret %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		serr := d.Sync()
		if err := errors.Join(serr, d.Close()); err != nil {
			return nil, fmt.Errorf("sync %s: %w", dir, err)
		}
	}
	return key, nil
}

// recordSecret adds a generated secret's SHA-256 to the state record.
func recordSecret(stateDir, kid string, key []byte) error {
	return UpdateRecord(stateDir, func(r *Record) bool {
		sum := secretSum(key)
		if r.Secrets[kid] == sum {
			return false
		}
		if r.Secrets == nil {
			r.Secrets = map[string]string{}
		}
		r.Secrets[kid] = sum
		return true
	})
}

// errSecretExposed is a secret file that others may read: fixed with chmod,
// never by replacing the secret.
var errSecretExposed = errors.New("secret file readable by others")

func readSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s (mode %04o); chmod 600 it", errSecretExposed, path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) < 16 {
		return nil, fmt.Errorf("%s: secret shorter than 16 bytes", path)
	}
	return b, nil
}

// secretSum is the SHA-256 (hex) the state record keeps of a secret.
func secretSum(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])
}
