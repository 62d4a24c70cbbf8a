package keystore

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
)

// Info describes a keyring: which kid signs, which are accepted and until
// when. Never a secret.
type Info struct {
	ActiveKID string
	Keys      []KeyInfo
}

// KeyInfo is one key of the keyring.
type KeyInfo struct {
	KID      string
	Compat   bool
	RetireAt *time.Time // nil: accepted until rotated away
}

// Manager owns the live keyring: reloads, rotations and retirement.
type Manager struct {
	mu   sync.Mutex // serialises rotations, retirements and reloads
	cfg  config.Config
	ring atomic.Pointer[credentials.Keyring]
	now  func() time.Time

	sfuRotated func(kid string) // OnSFURotated; under mu
}

// NewManager builds the keyring of cfg (Build) and manages it.
func NewManager(cfg config.Config, now func() time.Time) (*Manager, error) {
	kr, err := Build(cfg)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, now: now}
	m.ring.Store(kr)
	return m, nil
}

// Keyring returns the live keyring; it is safe to call at any time from any
// goroutine (the relay and the API call it per request).
func (m *Manager) Keyring() *credentials.Keyring { return m.ring.Load() }

// Rotate makes a new generated secret the signing one. The others stay
// accepted until every credential they signed has expired and every
// allocation made with one has reached max_allocation_duration — except the
// compat secret, which homeservers and coturn share: it keeps verifying
// usernames without a kid until a rotation with compat moves that role to
// the new secret (after the homeservers were given it).
func (m *Manager) Rotate(compat bool) (Info, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !managed(m.cfg) {
		return Info{}, ErrNotManaged
	}
	now := m.now()
	st, ok, err := loadRotation(m.cfg.StateDir)
	if err != nil {
		return Info{}, err
	}
	if !ok {
		st = configuredRotation(m.cfg)
	}
	st = liveKeys(m.cfg, st, now)
	kid := nextKID(st)
	if _, err := generatedSecret(m.cfg.StateDir, kid, true); err != nil {
		return Info{}, err
	}
	retire := now.Add(m.cfg.Credentials.TTL + m.cfg.TURN.MaxAllocationDuration).UTC().Truncate(time.Second)
	for i := range st.Keys {
		if st.Keys[i].Compat && !compat {
			continue
		}
		st.Keys[i].Compat = false
		if st.Keys[i].RetireAt == nil || st.Keys[i].RetireAt.After(retire) {
			st.Keys[i].RetireAt = &retire
		}
	}
	st.Keys = append([]managedKey{{KID: kid, Compat: compat}}, st.Keys...)
	kr, err := managedKeyringFrom(m.cfg, st, true, now)
	if err != nil {
		return Info{}, err
	}
	if err := saveRotation(m.cfg.StateDir, st); err != nil {
		return Info{}, err
	}
	m.ring.Store(kr)
	return infoOf(st), nil
}

// Info describes the live keyring.
func (m *Manager) Info() Info {
	m.mu.Lock()
	defer m.mu.Unlock()
	if managed(m.cfg) {
		if st, ok, err := loadRotation(m.cfg.StateDir); err == nil && ok {
			return infoOf(liveKeys(m.cfg, st, m.now()))
		}
	}
	kr := m.ring.Load()
	info := Info{ActiveKID: kr.ActiveKID()}
	for _, kid := range kr.KIDs() {
		info.Keys = append(info.Keys, KeyInfo{KID: kid, Compat: kid == kr.CompatKID()})
	}
	return info
}

func infoOf(st rotation) Info {
	info := Info{ActiveKID: st.Keys[0].KID}
	for _, k := range st.Keys {
		info.Keys = append(info.Keys, KeyInfo{KID: k.KID, Compat: k.Compat, RetireAt: k.RetireAt})
	}
	return info
}

// Retire drops keys whose retirement time has come from the live keyring
// (SFU TURN secrets included) and returns their kids.
func (m *Manager) Retire() (retired []string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	current := m.ring.Load()
	if due, err := m.retiring(current, now); err != nil || !due {
		return nil, err
	}
	kr, err := buildAt(m.cfg, true, now)
	if err != nil {
		return nil, err
	}
	for _, kid := range append(current.KIDs(), current.SFUKIDs()...) {
		if !slices.Contains(kr.KIDs(), kid) && !slices.Contains(kr.SFUKIDs(), kid) {
			retired = append(retired, kid)
		}
	}
	m.ring.Store(kr)
	return retired, nil
}

// retiring reports whether a key of current has reached its retirement.
func (m *Manager) retiring(current *credentials.Keyring, now time.Time) (bool, error) {
	if managed(m.cfg) {
		st, ok, err := loadRotation(m.cfg.StateDir)
		if err != nil {
			return false, err
		}
		if ok && !sameKIDs(liveKeys(m.cfg, st, now), current.KIDs()) {
			return true, nil
		}
	}
	if sfuEnabled(m.cfg) {
		st, err := loadSFU(m.cfg.StateDir)
		if err != nil {
			return false, err
		}
		return !sameKIDs(liveSFU(st, now), current.SFUKIDs()), nil
	}
	return false, nil
}

// Reload builds the keyring of a newly loaded configuration (its
// credentials.secrets, or the managed keyring's record) and makes it live;
// on any error the current keyring and configuration stay.
func (m *Manager) Reload(cfg config.Config) (*credentials.Keyring, error) {
	// Built under the lock, so a concurrent rotation cannot be
	// overwritten by a keyring built before it.
	m.mu.Lock()
	defer m.mu.Unlock()
	next, err := Build(cfg)
	if err != nil {
		return nil, err
	}
	m.cfg = cfg
	m.ring.Store(next)
	return next, nil
}

func sameKIDs(st rotation, kids []string) bool {
	if len(st.Keys) != len(kids) {
		return false
	}
	for i, k := range st.Keys {
		if k.KID != kids[i] {
			return false
		}
	}
	return true
}
