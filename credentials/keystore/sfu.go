package keystore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/internal/fileutil"
)

// The SFU TURN secret (matrixrtc.livekit.turn): a secret of its own that
// icebox generates and shares with the LiveKit SFU, whose per-participant
// credentials it verifies with scoped allocations (credentials/sfu.go,
// turnserver/scope.go). Its generations live next to the other generated
// secrets as secrets/sfu1, sfu2, … (kids "sfuN" are reserved for them: a
// configured secret by that kid is refused), recorded in state.json like
// them; secrets/sfu.json lists the live ones, the current first, and when
// the older ones retire. secrets/sfu-turn.secret holds a copy of the
// current one for livekit-server (SFUSecretPath), rewritten on rotation.
const (
	sfuRotationFile = "sfu.json"
	sfuSecretFile   = "sfu-turn.secret"
	sfuKIDPrefix    = "sfu"
)

// ErrSFUDisabled: the SFU TURN secret is off (matrixrtc.livekit.turn.enabled).
var ErrSFUDisabled = errors.New("keystore: matrixrtc.livekit.turn is not enabled: there is no SFU TURN secret to rotate")

// SFUSecretPath is the file holding the current SFU TURN secret, mode
// 0600, for livekit-server's rtc.turn_servers[].secret_file (it refuses a
// file others may read). It exists once icebox has started with
// matrixrtc.livekit.turn.enabled; after a rotation it holds the new secret
// and livekit-server must be restarted to read it.
func SFUSecretPath(stateDir string) string {
	return filepath.Join(stateDir, secretsDir, sfuSecretFile)
}

// SFURecordPath is the SFU secrets' rotation record.
func SFURecordPath(stateDir string) string {
	return filepath.Join(stateDir, secretsDir, sfuRotationFile)
}

func sfuEnabled(cfg config.Config) bool { return cfg.MatrixRTC.LiveKit.TURN.Enabled }

// loadSFU reads the SFU rotation record; without one the first generation
// (sfu1) is current. A record the state record says was written and is
// now gone is lost state: the first generation, perhaps rotated away,
// would be trusted again.
func loadSFU(stateDir string) (rotation, error) {
	path := SFURecordPath(stateDir)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		rec, _, err := LoadRecord(stateDir)
		if err != nil {
			return rotation{}, err
		}
		if rec.SFUKeyring {
			return rotation{}, StateError{fmt.Errorf("state: %s is missing, but %s records that the SFU TURN secret was "+
				"rotated: a rotated-away secret would be trusted again; %s", path, RecordPath(stateDir), InitStateHint)}
		}
		return rotation{Keys: []managedKey{{KID: sfuKIDPrefix + "1"}}}, nil
	}
	if err != nil {
		return rotation{}, err
	}
	var st rotation
	if err := json.Unmarshal(b, &st); err != nil || len(st.Keys) == 0 {
		return rotation{}, StateError{fmt.Errorf("state: %s is unreadable or names no key: %s", path, InitStateHint)}
	}
	for _, k := range st.Keys {
		if _, ok := sfuGeneration(k.KID); !ok {
			return rotation{}, StateError{fmt.Errorf("state: %s names %q, not an SFU secret: %s", path, k.KID, InitStateHint)}
		}
	}
	return st, nil
}

func saveSFU(stateDir string, st rotation) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := fileutil.WriteFileAtomic(SFURecordPath(stateDir), append(b, '\n'), 0o600); err != nil {
		return err
	}
	return UpdateRecord(stateDir, func(r *Record) bool {
		changed := !r.SFUKeyring
		r.SFUKeyring = true
		return changed
	})
}

// sfuGeneration is N of a kid "sfuN".
func sfuGeneration(kid string) (int, bool) {
	n, err := strconv.Atoi(strings.TrimPrefix(kid, sfuKIDPrefix))
	return n, strings.HasPrefix(kid, sfuKIDPrefix) && err == nil && n > 0
}

// liveSFU drops retired SFU secrets; the current one never retires.
func liveSFU(st rotation, now time.Time) rotation {
	out := rotation{Keys: st.Keys[:1:1]}
	for _, k := range st.Keys[1:] {
		if k.RetireAt == nil || now.Before(*k.RetireAt) {
			out.Keys = append(out.Keys, k)
		}
	}
	return out
}

// sfuSecrets returns the live SFU secrets of st (generating the current
// one if it never was) and keeps SFUSecretPath in step with the current
// one.
func sfuSecrets(cfg config.Config, st rotation) ([]credentials.Secret, error) {
	out := make([]credentials.Secret, 0, len(st.Keys))
	for _, k := range st.Keys {
		key, err := generatedSecret(cfg.StateDir, k.KID, true)
		if err != nil {
			return nil, fmt.Errorf("SFU TURN secret %s: %w", k.KID, err)
		}
		out = append(out, credentials.Secret{KID: k.KID, Key: key, SFU: true})
	}
	if err := writeSFUSecretFile(cfg.StateDir, out[0].Key); err != nil {
		return nil, err
	}
	return out, nil
}

// writeSFUSecretFile writes the current SFU secret for livekit-server
// unless the file already holds it.
func writeSFUSecretFile(stateDir string, key []byte) error {
	path := SFUSecretPath(stateDir)
	if old, err := readSecretFile(path); err == nil && bytes.Equal(old, key) {
		return nil
	}
	if err := fileutil.WriteFileAtomic(path, append(append([]byte(nil), key...), '\n'), 0o600); err != nil {
		return fmt.Errorf("SFU TURN secret: %w", err)
	}
	return nil
}

// withSFU appends the live SFU secrets to secrets when the feature is on
// and files may be written (generate); `icebox creds` (Read) has no use
// for them and leaves them be.
func withSFU(cfg config.Config, secrets []credentials.Secret, generate bool, now time.Time) ([]credentials.Secret, error) {
	if !sfuEnabled(cfg) || !generate {
		return secrets, nil
	}
	st, err := loadSFU(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	sfu, err := sfuSecrets(cfg, liveSFU(st, now))
	if err != nil {
		return nil, err
	}
	return append(secrets, sfu...), nil
}

// RotateSFU makes a new generated SFU TURN secret current and writes it to
// SFUSecretPath; the old ones stay accepted for matrixrtc.livekit.turn.ttl
// plus turn.max_allocation_duration (credentials LiveKit minted before it
// restarted, and their allocations). livekit-server must then be restarted
// to read the new secret: the hook set with OnSFURotated runs after a
// successful rotation, for that.
func (m *Manager) RotateSFU() (SFUInfo, error) {
	info, hook, err := m.rotateSFU()
	if err == nil && hook != nil {
		hook(info.CurrentKID)
	}
	return info, err
}

func (m *Manager) rotateSFU() (SFUInfo, func(string), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !sfuEnabled(m.cfg) {
		return SFUInfo{}, nil, ErrSFUDisabled
	}
	now := m.now()
	st, err := loadSFU(m.cfg.StateDir)
	if err != nil {
		return SFUInfo{}, nil, err
	}
	st = liveSFU(st, now)
	n := 0
	for _, k := range st.Keys {
		if g, _ := sfuGeneration(k.KID); g > n {
			n = g
		}
	}
	kid := sfuKIDPrefix + strconv.Itoa(n+1)
	if _, err := generatedSecret(m.cfg.StateDir, kid, true); err != nil {
		return SFUInfo{}, nil, err
	}
	retire := now.Add(m.cfg.MatrixRTC.LiveKit.TURN.TTL + m.cfg.TURN.MaxAllocationDuration).UTC().Truncate(time.Second)
	for i := range st.Keys {
		if st.Keys[i].RetireAt == nil || st.Keys[i].RetireAt.After(retire) {
			st.Keys[i].RetireAt = &retire
		}
	}
	st.Keys = append([]managedKey{{KID: kid}}, st.Keys...)
	// Save first: the keyring built next reads the record.
	if err := saveSFU(m.cfg.StateDir, st); err != nil {
		return SFUInfo{}, nil, err
	}
	kr, err := buildAt(m.cfg, true, now)
	if err != nil {
		return SFUInfo{}, nil, err
	}
	m.ring.Store(kr)
	return sfuInfoOf(st), m.sfuRotated, nil
}

// SFUInfo describes the SFU TURN secrets: which one LiveKit holds, which
// are still accepted and until when. Never a secret.
type SFUInfo struct {
	CurrentKID string
	Keys       []KeyInfo
}

func sfuInfoOf(st rotation) SFUInfo {
	info := SFUInfo{CurrentKID: st.Keys[0].KID}
	for _, k := range st.Keys {
		info.Keys = append(info.Keys, KeyInfo{KID: k.KID, RetireAt: k.RetireAt})
	}
	return info
}

// SFUInfo describes the live SFU TURN secrets; ErrSFUDisabled when off.
func (m *Manager) SFUInfo() (SFUInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !sfuEnabled(m.cfg) {
		return SFUInfo{}, ErrSFUDisabled
	}
	st, err := loadSFU(m.cfg.StateDir)
	if err != nil {
		return SFUInfo{}, err
	}
	return sfuInfoOf(liveSFU(st, m.now())), nil
}

// SFUEnabled reports whether the live configuration has an SFU TURN
// secret.
func (m *Manager) SFUEnabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sfuEnabled(m.cfg)
}

// OnSFURotated sets the function RotateSFU calls after a rotation, with
// the new secret's kid: where icebox restarts its managed livekit-server
// so that it reads SFUSecretPath again. It runs without the Manager's lock.
func (m *Manager) OnSFURotated(f func(kid string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sfuRotated = f
}
