package matrix

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	_ "modernc.org/sqlite" // the pure-Go SQLite driver "sqlite": the binary builds with CGO_ENABLED=0

	"github.com/icebox-voip/icebox/signaling"
)

// End-to-end encryption (Config.Encryption): mautrix's cryptohelper with
// the pure-Go Olm (-tags goolm), its crypto and room-state stores in one
// pure-Go SQLite file in Encryption.Dir. Around mautrix:
//
//   - The device is the service user's own (a password login, or a token
//     made for icebox alone) and is bound to the crypto store: a store
//     that lost its keys while the homeserver still has the device's, or
//     a store of another device, stops the bridge with an explanation
//     instead of a device that silently cannot decrypt.
//   - Before its first send into a room, the bridge reads the room's whole
//     state (once per room and process), so that mautrix knows whether the
//     room is encrypted and whom to share the room key with; mautrix would
//     otherwise send in plaintext into a room whose m.room.encryption it
//     has not seen yet. With Require, call events are never sent into a
//     room that is not encrypted, and plaintext call events are ignored.
//   - Encrypted timeline events are decrypted before the batch is
//     dispatched, so that the handlers see a batch of call events exactly
//     as in a plain room (the whole-batch rule for ringing included).
//     Events whose room key has not arrived yet go to mautrix's handler,
//     which waits for the key, asks the sender's devices for it, and
//     redispatches the event; those that stay undecryptable are counted.
//   - The device cross-signs itself once and keeps the recovery key in
//     Encryption.Dir (0600). The pickle key (which encrypts the keys in the
//     store) is generated at the first start and kept there too. Neither is
//     ever logged.

// Encryption configures end-to-end encryption.
type Encryption struct {
	// Dir holds the crypto store (crypto.db), its pickle key, the recovery
	// key and, with password login, the session. Created 0700. Required.
	Dir string
	// Require refuses to send call events into a room that is not
	// encrypted (they are dropped, reason unencrypted_room) and ignores
	// plaintext call events. Rooms the bridge creates are always encrypted.
	Require bool
	// Device, when set, keeps the device (crypto store, session, pickle
	// and recovery keys) there instead of in Dir (device.go). Default:
	// nil, files in Dir.
	Device DeviceStore
}

// Files in Encryption.Dir.
const (
	cryptoDBFile    = "crypto.db"
	pickleKeyFile   = "pickle.key"
	recoveryKeyFile = "recovery.key"
	sessionFile     = "session.json"
)

// reasonUnencrypted is the drop reason of events refused for a room that
// is not encrypted (Encryption.Require).
const reasonUnencrypted = "unencrypted_room"

// errUnencryptedRoom: the room is not encrypted and encryption is required.
var errUnencryptedRoom = errors.New("the room is not end-to-end encrypted and matrix.require_encryption is on")

// megolmAlgorithm is the room encryption icebox turns on.
const megolmAlgorithm = id.AlgorithmMegolmV1

// e2ee is the bridge's end-to-end encryption: the crypto helper and its
// store, the device's cross-signing, the rooms whose state was read before
// a send, and the decryption of sync batches. The bridge has one only with
// Config.Encryption; its methods take a nil *e2ee as "no encryption".
type e2ee struct {
	cli           *mautrix.Client
	log           zerolog.Logger
	dir           string // Encryption.Dir
	enc           *Encryption
	require       bool // Encryption.Require
	homeserver    string
	user          string
	password      string // answers the homeserver's password prompt when cross-signing
	undecryptable *prometheus.CounterVec

	helper *cryptohelper.CryptoHelper // nil until init succeeded
	up     atomic.Bool                // init succeeded and Run goes on (tests)
	own    atomic.Pointer[id.Device]  // the device's keys while up (EncryptionIdentity)

	roomsMu     sync.Mutex
	roomsLoaded map[id.RoomID]bool // rooms whose full state was read in this process
}

// newE2EE returns the encryption part, or nil without Config.Encryption.
func newE2EE(cfg Config, cli *mautrix.Client, log zerolog.Logger, undecryptable *prometheus.CounterVec) *e2ee {
	if cfg.Encryption == nil {
		return nil
	}
	return &e2ee{cli: cli, log: log, dir: cfg.Encryption.Dir, enc: cfg.Encryption, require: cfg.Encryption.Require,
		homeserver: cfg.HomeserverURL, user: cfg.UserID, password: cfg.Password,
		undecryptable: undecryptable, roomsLoaded: make(map[id.RoomID]bool)}
}

// ready reports whether encryption is up (tests).
func (c *e2ee) ready() bool { return c != nil && c.up.Load() }

// init opens the crypto store and brings the device's encryption up: keys
// on the homeserver, the crypto helper's handlers on the client's syncer,
// cross-signing. It is called once the token is verified (the device ID is
// known). life is Run's: the helper's waits for late room keys end with it.
// A failure leaves the client as it was, so that a transient one can be
// retried.
//
// With the device in a shared database (Encryption.Device), the database
// being away (restarting, a connection it ended) fails the start with
// signaling.ErrStoreUnavailable; init tries again, backing off, until ctx
// ends (the node running the bridge loses its lease, or stops). Such a
// failure never makes a new account: mautrix makes one only when the
// store answers that it has none, and refuses it when the homeserver has
// the device's keys.
func (c *e2ee) init(ctx, life context.Context) error {
	delay := storeRetryMin
	for {
		err := c.initOnce(ctx, life)
		if err == nil || !errors.Is(err, signaling.ErrStoreUnavailable) || ctx.Err() != nil {
			return err
		}
		c.log.Warn().Err(err).Dur("retry_in", delay).Msg("matrix end-to-end encryption: the device's database is unavailable; retrying")
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay = min(delay*2, storeRetryMax)
	}
}

// The backoff of init's retries while the device's database is away.
const (
	storeRetryMin = 100 * time.Millisecond
	storeRetryMax = 5 * time.Second
)

// storeError marks err as the device database's unavailability
// (signaling.ErrStoreUnavailable) when the device store says it is one:
// mautrix passes the database driver's errors through.
func (c *e2ee) storeError(err error) error {
	if err == nil || c.enc.Device == nil || errors.Is(err, signaling.ErrStoreUnavailable) {
		return err
	}
	if u, ok := c.enc.Device.(interface{ Unavailable(error) bool }); ok && u.Unavailable(err) {
		return fmt.Errorf("%w: %w", signaling.ErrStoreUnavailable, err)
	}
	return err
}

// adoptUploadedAccount mends a start that stopped between the key upload
// and its record. mautrix saves a new account (not yet "shared") before
// uploading its keys and marks it shared after the homeserver answered; a
// start stopped in between (the node stopped or was killed, its database
// went away, the answer was lost) leaves the store holding the very
// account whose keys the homeserver has, not marked shared, and mautrix
// then refuses the device for good ("olm account is not marked as shared,
// but there are keys on the server") as if its store were lost. When the
// homeserver's keys of the device are the stored account's own, the
// account is marked shared — and its one-time keys published, all of which
// went with that upload — as the upload's answer would have. adopted is
// false for any other failure, and when the keys differ (the store really
// is another account's: that stays refused).
func (c *e2ee) adoptUploadedAccount(ctx context.Context, helper *cryptohelper.CryptoHelper, initErr error) (adopted bool, err error) {
	if !strings.Contains(initErr.Error(), "olm account is not marked as shared, but there are keys on the server") {
		return false, nil
	}
	mach := helper.Machine()
	acc := mach.GetAccount()
	if acc == nil || acc.Shared {
		return false, nil
	}
	user, dev := c.cli.UserID, c.cli.DeviceID
	resp, err := c.cli.QueryKeys(quiet(ctx), &mautrix.ReqQueryKeys{DeviceKeys: map[id.UserID]mautrix.DeviceIDList{user: {dev}}})
	if err != nil {
		return false, fmt.Errorf("querying the device's keys on the homeserver: %w", err)
	}
	keys := resp.DeviceKeys[user][dev]
	own := mach.OwnIdentity()
	if keys.Keys.GetEd25519(dev) != own.SigningKey || keys.Keys.GetCurve25519(dev) != own.IdentityKey {
		return false, nil
	}
	acc.Internal.MarkKeysAsPublished()
	acc.Shared = true
	if err := mach.CryptoStore.PutAccount(ctx, acc); err != nil {
		return false, fmt.Errorf("marking the account as shared: %w", err)
	}
	c.log.Warn().Str("device_id", string(dev)).Str("identity_key", string(own.IdentityKey)).
		Msg("matrix: the device's keys reached the homeserver at a start that stopped before recording it; the stored account is the one on the homeserver and is now marked as shared")
	return true, nil
}

func (c *e2ee) initOnce(ctx, life context.Context) (err error) {
	var (
		dbPath   string
		existing bool
		dbu      *dbutil.Database
	)
	if c.enc.Device != nil {
		// The store is in the shared database: it exists once its pickle
		// key does (both are written at the first start).
		dbPath = "the database's crypto store"
		_, rerr := c.enc.readDeviceFile(ctx, pickleKeyFile)
		if rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("matrix: pickle key: %w", rerr)
		}
		existing = rerr == nil
	} else {
		if err := os.MkdirAll(c.dir, 0o700); err != nil {
			return fmt.Errorf("matrix: encryption directory: %w", err)
		}
		dbPath = filepath.Join(c.dir, cryptoDBFile)
		_, statErr := os.Stat(dbPath)
		existing = statErr == nil
	}
	pickle, err := c.pickleKey(ctx, existing)
	if err != nil {
		return err
	}
	if c.enc.Device != nil {
		dbu, err = c.enc.Device.OpenCryptoDB()
		if err != nil {
			return fmt.Errorf("matrix: crypto store: %w", err)
		}
	} else if dbu, err = openCryptoStore(dbPath, existing); err != nil {
		return err
	}
	helper, err := cryptohelper.NewCryptoHelper(c.cli, pickle, dbu)
	if err != nil {
		_ = dbu.Close()
		return fmt.Errorf("matrix: crypto: %w", err)
	}
	defer func() {
		if err != nil {
			_ = helper.Close()
			c.cli.StateStore = nil // NewCryptoHelper sets it; a retry makes a new one
		}
	}()
	// mautrix gives up waiting for a room key when Run ends (its waits
	// end with the handlers' context): that is not an undecryptable event.
	helper.DecryptErrorCallback = func(evt *event.Event, err error) {
		if life.Err() != nil {
			c.log.Debug().Str("event_id", string(evt.ID)).Msg("matrix decryption abandoned: the bridge is stopping")
			return
		}
		c.countUndecryptable(evt, err)
	}
	if err := helper.Init(quiet(ctx)); err != nil {
		adopted, aerr := c.adoptUploadedAccount(ctx, helper, err)
		if aerr != nil {
			return c.storeError(fmt.Errorf("matrix: end-to-end encryption: %w", aerr))
		}
		if !adopted {
			return c.storeError(c.explainCryptoInit(err, dbPath))
		}
		if err := helper.Init(quiet(ctx)); err != nil {
			return c.storeError(c.explainCryptoInit(err, dbPath))
		}
	}
	mach := helper.Machine()
	// Call content is parsed by the handlers themselves (leniently); an
	// offer that does not fit mautrix's struct must still be decrypted.
	mach.IgnorePostDecryptionParseErrors = true
	c.cli.Crypto = helper
	c.helper = helper
	c.log.Info().Str("device_id", string(c.cli.DeviceID)).Str("identity_key", string(mach.OwnIdentity().IdentityKey)).
		Bool("new_store", !existing).Msg("matrix end-to-end encryption ready")
	c.crossSign(ctx)
	c.own.Store(mach.OwnIdentity())
	c.up.Store(true)
	return nil
}

// EncryptionIdentity returns the device's ID and its identity and signing
// keys while the bridge runs with end-to-end encryption up; empty strings
// before, after, and without encryption. It tells which Olm account a
// running bridge is (the nodes sharing a database must all be the same).
func (b *Bridge) EncryptionIdentity() (deviceID, identityKey, signingKey string) {
	if b.crypto == nil {
		return "", "", ""
	}
	d := b.crypto.own.Load()
	if d == nil {
		return "", "", ""
	}
	return string(d.DeviceID), string(d.IdentityKey), string(d.SigningKey)
}

// openCryptoStore opens the SQLite file of the crypto and room-state
// stores, creating it 0600 when it does not exist yet.
func openCryptoStore(dbPath string, existing bool) (*dbutil.Database, error) {
	if !existing {
		// SQLite creates files 0644, and its -wal and -shm files take the
		// database's mode: the keys are for icebox alone.
		f, err := os.OpenFile(dbPath, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("matrix: crypto store: %w", err)
		}
		_ = f.Close()
	}
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("matrix: crypto store %s: %w", dbPath, err)
	}
	dbu, err := dbutil.NewWithDB(db, "sqlite")
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("matrix: crypto store %s: %w", dbPath, err)
	}
	return dbu, nil
}

// explainCryptoInit turns mautrix's errors about a device and a store that
// do not belong together into what happened and what to do.
func (c *e2ee) explainCryptoInit(err error, dbPath string) error {
	msg := err.Error()
	dev, dir := string(c.cli.DeviceID), c.dir
	replace := fmt.Sprintf("log in as a new device: with password login, delete %s, %s* and %s in %s (keep %s: it cross-signs the new device) and restart; "+
		"with an access token, make a new login for icebox, set matrix.access_token and matrix.device_id to it, and delete %s* and %s",
		sessionFile, cryptoDBFile, pickleKeyFile, dir, recoveryKeyFile, cryptoDBFile, pickleKeyFile)
	switch {
	case strings.Contains(msg, "olm account is not marked as shared, but there are keys on the server"),
		strings.Contains(msg, "mismatching identity key on server"):
		return fmt.Errorf("matrix: device %s of %s already has encryption keys on %s, but the crypto store %s does not hold them (it was lost or replaced): "+
			"this device can never decrypt or be trusted again; %s", dev, c.user, c.homeserver, dbPath, replace)
	case strings.Contains(msg, "olm account is marked as shared, keys seem to have disappeared from the server"):
		return fmt.Errorf("matrix: device %s of %s has no keys on %s any more (the device was deleted or logged out?), but the crypto store %s holds its keys; %s",
			dev, c.user, c.homeserver, dbPath, replace)
	case strings.Contains(msg, "mismatching device ID in client and crypto store"):
		return fmt.Errorf("matrix: the crypto store %s belongs to another device than %s (%v): a store serves one device; %s", dbPath, dev, err, replace)
	}
	return fmt.Errorf("matrix: end-to-end encryption: %w", err)
}

// pickleKey returns the key that encrypts the crypto store's secrets,
// generating it when the store is new. A store without its key cannot be
// read: that is an error, not a reason to start over silently.
func (c *e2ee) pickleKey(ctx context.Context, storeExists bool) ([]byte, error) {
	path := c.enc.deviceFilePath(pickleKeyFile)
	raw, err := c.enc.readDeviceFile(ctx, pickleKeyFile)
	switch {
	case err == nil:
		key, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
		if derr != nil || len(key) < 32 {
			return nil, fmt.Errorf("matrix: %s is not a pickle key icebox wrote (base64 of 32 bytes)", path)
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("matrix: pickle key: %w", err)
	case storeExists:
		return nil, fmt.Errorf("matrix: %s is missing but the crypto store %s exists: the store cannot be read without it; "+
			"restore the file, or replace the device (delete %s, %s* and %s in %s and restart)",
			path, c.enc.deviceFilePath(cryptoDBFile), sessionFile, cryptoDBFile, pickleKeyFile, c.dir)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("matrix: pickle key: %w", err)
	}
	if err := c.enc.writeDeviceFile(ctx, pickleKeyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n")); err != nil {
		return nil, fmt.Errorf("matrix: pickle key: %w", err)
	}
	return key, nil
}

// crossSign makes the device trusted by its own account, once: it creates
// the account's cross-signing keys (stored on the homeserver encrypted
// with a new recovery key, which is written to recovery.key) and signs the
// device with them; a later device of the same account is signed with the
// stored recovery key. Failures are logged and retried at the next start:
// an unsigned device still encrypts, clients merely show it unverified.
func (c *e2ee) crossSign(ctx context.Context) {
	ctx = quiet(ctx)
	mach := c.helper.Machine()
	path := c.enc.deviceFilePath(recoveryKeyFile)
	log := c.log.With().Str("device_id", string(c.cli.DeviceID)).Logger()
	hasKeys, verified, err := mach.GetOwnVerificationStatus(ctx)
	if err != nil {
		log.Warn().Err(err).Msg("matrix cross-signing status unknown; the device stays as it is until the next start")
		return
	}
	if verified {
		return
	}
	stored, err := c.enc.readDeviceFile(ctx, recoveryKeyFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn().Err(err).Msg("matrix recovery key unreadable; the device is not cross-signed")
		return
	}
	recoveryKey := strings.TrimSpace(string(stored))
	switch {
	case hasKeys && recoveryKey != "":
		if err := mach.VerifyWithRecoveryKey(ctx, recoveryKey); err != nil {
			log.Warn().Err(err).Str("recovery_key_file", path).Msg("matrix device not cross-signed with the stored recovery key")
			return
		}
		log.Info().Msg("matrix device cross-signed with the stored recovery key")
		return
	case hasKeys:
		log.Warn().Str("user_id", c.user).Str("recovery_key_file", path).
			Msg("the service user has cross-signing keys that icebox did not make and no recovery key is stored: the device stays unverified (put the account's recovery key in the file, mode 0600, and restart)")
		return
	}
	var uia mautrix.UIACallback
	if c.password != "" {
		uia = func(resp *mautrix.RespUserInteractive) any {
			return &mautrix.ReqUIAuthLogin{
				BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: resp.Session},
				User:         c.user,
				Password:     c.password,
			}
		}
	}
	key, _, err := mach.GenerateAndUploadCrossSigningKeys(ctx, uia, "")
	if err != nil {
		line := log.Warn().Err(err)
		if uia == nil {
			line = line.Str("hint", "with an access token icebox cannot answer the homeserver's password prompt; configure matrix.password_file")
		}
		line.Msg("matrix cross-signing keys not uploaded; the device stays unverified, retried at the next start")
		return
	}
	if err := c.enc.writeDeviceFile(ctx, recoveryKeyFile, []byte(key+"\n")); err != nil {
		log.Error().Err(err).Str("recovery_key_file", path).
			Msg("matrix cross-signing keys uploaded but the recovery key could not be kept; a later device cannot be cross-signed with them")
	}
	if err := mach.SignOwnDevice(ctx, mach.OwnIdentity()); err != nil {
		log.Warn().Err(err).Msg("matrix device not signed with the new cross-signing keys")
		return
	}
	if err := mach.SignOwnMasterKey(ctx); err != nil {
		log.Warn().Err(err).Msg("matrix master key not signed by the device")
		return
	}
	log.Info().Str("recovery_key_file", path).Msg("matrix device cross-signed; recovery key stored")
}

// checkRoom decides whether call events may go into roomID: it makes sure
// the client knows the room's encryption state and members (the whole
// state is read once per room and process; the sync keeps it current) and,
// with Require, refuses a room that is not encrypted.
func (c *e2ee) checkRoom(ctx context.Context, roomID id.RoomID) error {
	if c == nil {
		return nil
	}
	c.roomsMu.Lock()
	loaded := c.roomsLoaded[roomID]
	c.roomsMu.Unlock()
	if !loaded {
		if _, err := c.cli.State(ctx, roomID); err != nil {
			return err
		}
		c.roomsMu.Lock()
		c.roomsLoaded[roomID] = true
		c.roomsMu.Unlock()
	}
	encrypted, err := c.cli.StateStore.IsEncrypted(ctx, roomID)
	if err != nil {
		return fmt.Errorf("reading the encryption state of %s: %w", roomID, err)
	}
	if !encrypted && c.require {
		return errUnencryptedRoom
	}
	return nil
}

// decryptTimeline replaces the encrypted events of a joined room's
// timeline by their decryption, in place. Events it cannot decrypt yet
// stay: mautrix's handler waits for their keys and redispatches them.
func (c *e2ee) decryptTimeline(ctx context.Context, roomID id.RoomID, events []*event.Event) {
	if c == nil || c.helper == nil {
		return
	}
	for i, evt := range events {
		if evt.Type.Type != event.EventEncrypted.Type || evt.StateKey != nil {
			continue
		}
		evt.RoomID = roomID
		evt.Type.Class = event.MessageEventType
		if evt.Content.Parsed == nil && evt.Content.ParseRaw(evt.Type) != nil {
			continue // mautrix's handler counts it
		}
		dec, err := c.helper.Decrypt(ctx, evt)
		if err != nil {
			continue
		}
		events[i] = dec
	}
}

// countUndecryptable counts an encrypted event that could not be decrypted,
// after mautrix waited for its key and asked the sender's devices for it.
func (c *e2ee) countUndecryptable(evt *event.Event, err error) {
	reason := "error"
	if errors.Is(err, crypto.ErrNoSessionFound) {
		reason = "no_session"
	}
	c.undecryptable.WithLabelValues(reason).Inc()
	c.log.Warn().Err(err).Str("room_id", string(evt.RoomID)).Str("sender", string(evt.Sender)).
		Str("event_id", string(evt.ID)).Str("reason", reason).Msg("matrix event could not be decrypted")
}

// encryptionContent is the m.room.encryption state of the rooms icebox
// creates.
func encryptionState() *event.Event {
	return &event.Event{
		Type:    event.StateEncryption,
		Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: megolmAlgorithm}},
	}
}

// close closes the crypto store when Run ends; the next Run opens
// it again.
func (c *e2ee) close() {
	if c == nil || c.helper == nil {
		return
	}
	c.up.Store(false)
	c.own.Store(nil)
	c.cli.Crypto = nil
	if err := c.helper.Close(); err != nil {
		c.log.Warn().Err(err).Msg("closing the matrix crypto store")
	}
	c.helper = nil
	c.cli.StateStore = nil
	c.roomsMu.Lock()
	clear(c.roomsLoaded)
	c.roomsMu.Unlock()
}
