package matrix

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"go.mau.fi/util/dbutil"

	"github.com/icebox-voip/icebox/internal/fileutil"
)

// DeviceStore keeps the bridge's Matrix device elsewhere than in
// Encryption.Dir: in a database several icebox nodes share
// (store/postgres), so that whichever node runs the bridge is the same
// device, with the same access token, Olm account, Olm and Megolm sessions
// and room state, and sends the outbox with the same transaction IDs (the
// homeserver deduplicates them per device). One node at a time may run a
// bridge on it (node holds a lease for that).
type DeviceStore interface {
	// OpenCryptoDB opens the database of mautrix's crypto and room-state
	// stores: a new handle at each call (the bridge closes it when Run
	// ends).
	OpenCryptoDB() (*dbutil.Database, error)
	// ReadDeviceFile returns what WriteDeviceFile stored under name (the
	// session, the pickle key, the recovery key); an error wrapping
	// fs.ErrNotExist if nothing.
	ReadDeviceFile(ctx context.Context, name string) ([]byte, error)
	// WriteDeviceFile stores data under name, durably.
	WriteDeviceFile(ctx context.Context, name string, data []byte) error
}

// readDeviceFile reads one of the device's files: from Encryption.Device
// when set, else from Encryption.Dir.
func (e *Encryption) readDeviceFile(ctx context.Context, name string) ([]byte, error) {
	if e.Device != nil {
		return e.Device.ReadDeviceFile(ctx, name)
	}
	return os.ReadFile(filepath.Join(e.Dir, name))
}

// writeDeviceFile writes one of the device's files (0600 in Dir).
func (e *Encryption) writeDeviceFile(ctx context.Context, name string, data []byte) error {
	if e.Device != nil {
		return e.Device.WriteDeviceFile(ctx, name, data)
	}
	if err := os.MkdirAll(e.Dir, 0o700); err != nil {
		return fmt.Errorf("matrix: encryption directory: %w", err)
	}
	return fileutil.WriteFileAtomic(filepath.Join(e.Dir, name), data, 0o600)
}

// deviceFilePath names one of the device's files in messages.
func (e *Encryption) deviceFilePath(name string) string {
	if e.Device != nil {
		return "the database's " + name
	}
	return filepath.Join(e.Dir, name)
}

// UseStoredSession gives the client the session a password login stored
// with Encryption.Device, without logging in: for a node that does not run
// the bridge (another node on the same database does) but creates rooms
// as its device (EnsureRoom). It does nothing with an access token
// (Config.AccessToken) or once it has succeeded; an error if no session is
// stored yet (the bridge has not run on any node).
func (b *Bridge) UseStoredSession(ctx context.Context) error {
	l := b.login
	if l.password == "" || l.enc == nil || l.enc.Device == nil {
		return nil
	}
	l.standbyMu.Lock()
	defer l.standbyMu.Unlock()
	if l.standby {
		return nil
	}
	path := l.enc.deviceFilePath(sessionFile)
	raw, err := l.enc.readDeviceFile(ctx, sessionFile)
	if err != nil {
		return fmt.Errorf("matrix: session: %w (the node running the bridge has not logged in yet)", err)
	}
	s, err := l.parseSession(raw, path)
	if err != nil {
		return err
	}
	l.useSession(s)
	l.standby = true
	return nil
}
