package matrixtest

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
	_ "modernc.org/sqlite" // the "sqlite" driver: pure Go, so no cgo and no libsqlite3
)

const (
	// requestTimeout bounds each client-server API call an E2EEUser makes
	// for the test (not the sync long-poll, which runs until the test ends).
	requestTimeout = 30 * time.Second
	// inviteTimeout is how long Join waits for an invite to reach this
	// user's sync after the server refused the join. createRoom invites
	// synchronously on the one homeserver, so this only covers a slow sync.
	inviteTimeout = 10 * time.Second
	// roomMessagesLimit is the page size RoomMessages asks for; test rooms
	// are far smaller, so one page (plus the empty one that ends paging)
	// usually suffices.
	roomMessagesLimit = 1000
)

// E2EEUser is a real Matrix client with its own device and crypto store
// (mautrix cryptohelper, pure-Go Olm under -tags goolm, modernc.org/sqlite in
// t.TempDir()), syncing in the background until the test ends. It keeps every
// timeline event it receives, decrypted where it was encrypted.
//
// Its methods may be called from several goroutines.
type E2EEUser struct {
	// Client is the logged-in mautrix client, with Crypto and StateStore
	// set. Use it for what the helpers below do not cover; do not start a
	// second sync on it.
	Client *mautrix.Client

	helper          *cryptohelper.CryptoHelper
	decryptFailures atomic.Int64

	mu      sync.Mutex
	events  []Event
	seen    map[string]bool // event IDs in events
	invites map[string]bool // room IDs this user has been invited to
	// changed is closed and replaced whenever sync dispatched an event, so
	// that waiters re-check their condition.
	changed  chan struct{}
	syncDone bool  // the sync loop has returned
	syncErr  error // what it returned, if it was not the test ending
}

// Event is a timeline event as an E2EEUser received it.
type Event struct {
	ID, Type, Sender, RoomID string
	// Encrypted is true when the event arrived as m.room.encrypted and was
	// decrypted; Type and Content are then the decrypted ones.
	Encrypted bool
	// Content is the (decrypted) content as raw JSON, exactly as it was
	// sent, whether or not mautrix's own struct for Type could parse it.
	Content json.RawMessage
}

// NewE2EEUser logs userID in with password as a new device, gives it a crypto
// store of its own, uploads its device keys and starts syncing. The sync is
// stopped, and waited for, when the test ends. Setup errors end the test.
func (hs *Homeserver) NewE2EEUser(t testing.TB, userID, password string) *E2EEUser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	fail := func(err error) {
		t.Helper()
		t.Fatalf("matrixtest: e2ee user %s: %v", userID, err)
	}

	cli, err := mautrix.NewClient(hs.URL(), "", "")
	if err != nil {
		fail(err)
	}
	logs := &testLogWriter{t: t}
	// Warnings only: debug logs carry request bodies, and warnings (a failed
	// decryption, a failed key share) are what explains a failing test.
	cli.Log = zerolog.New(logs).Level(zerolog.WarnLevel).With().Str("user", userID).Logger()
	syncer := mautrix.NewDefaultSyncer()
	// mautrix's structs for call events are strict; a test may send content
	// they do not parse, and it must still arrive. Events keeps VeryRaw.
	syncer.ParseErrorHandler = func(*event.Event, error) bool { return true }
	cli.Syncer = syncer

	if _, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID},
		Password:                 password,
		InitialDeviceDisplayName: "matrixtest",
		StoreCredentials:         true,
	}); err != nil {
		fail(fmt.Errorf("login: %w", err))
	}

	dir := t.TempDir() // before the Cleanup below, so it is removed after the store is closed
	db, err := openCryptoDB(filepath.Join(dir, "crypto.db"))
	if err != nil {
		fail(err)
	}
	helper, err := cryptohelper.NewCryptoHelper(cli, []byte(randomHex(t, 32)), db)
	if err != nil {
		fail(errors.Join(err, db.Close()))
	}
	u := &E2EEUser{
		Client:  cli,
		helper:  helper,
		seen:    map[string]bool{},
		invites: map[string]bool{},
		changed: make(chan struct{}),
	}
	helper.DecryptErrorCallback = func(*event.Event, error) { u.decryptFailures.Add(1) }
	if err := helper.Init(ctx); err != nil {
		fail(errors.Join(fmt.Errorf("crypto init: %w", err), helper.Close()))
	}
	// A decrypted event whose content mautrix cannot parse would otherwise
	// be a decryption failure; the raw content is all Events needs.
	helper.Machine().IgnorePostDecryptionParseErrors = true
	cli.Crypto = helper
	// Registered after Init, so it runs after the state store handler Init
	// added: a waiter woken by it sees the store already updated.
	syncer.OnEvent(u.receive)

	syncCtx, stopSync := context.WithCancel(context.Background())
	synced := make(chan struct{})
	go func() {
		defer close(synced)
		err := cli.SyncWithContext(syncCtx)
		u.mu.Lock()
		defer u.mu.Unlock()
		if syncCtx.Err() == nil {
			u.syncErr = err
		}
		u.syncDone = true
		u.notifyLocked()
	}()
	t.Cleanup(func() {
		// First, as the test is over: stopping the sync logs a canceled
		// request, and cryptohelper's key-wait goroutines can outlive the
		// sync by seconds; their logs would reach a finished test.
		logs.close()
		stopSync()
		<-synced
		u.mu.Lock()
		syncErr := u.syncErr
		u.mu.Unlock()
		if syncErr != nil {
			t.Errorf("matrixtest: e2ee user %s: sync ended during the test: %v", userID, syncErr)
		}
		if err := helper.Close(); err != nil {
			t.Errorf("matrixtest: e2ee user %s: close crypto store: %v", userID, err)
		}
	})
	return u
}

// openCryptoDB opens the SQLite file the crypto and state stores share, with
// the settings of mautrix's own "sqlite3-fk-wal" dialect (which needs cgo's
// mattn/go-sqlite3) expressed for modernc.org/sqlite.
func openCryptoDB(path string) (*dbutil.Database, error) {
	db, err := sql.Open("sqlite", "file:"+path+
		"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open crypto store: %w", err)
	}
	// dbutil only looks at the "sqlite" prefix to pick its SQL dialect.
	wrapped, err := dbutil.NewWithDB(db, "sqlite")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("open crypto store: %w", err), db.Close())
	}
	return wrapped, nil
}

// receive is the sync's listener for every event, run after the state store
// has been updated. It keeps timeline events (decrypted ones once more, after
// decryption) and notes invites.
func (u *E2EEUser) receive(_ context.Context, evt *event.Event) {
	u.mu.Lock()
	defer u.mu.Unlock()
	defer u.notifyLocked()
	src := evt.Mautrix.EventSource
	if src&event.SourceInvite != 0 && evt.Type == event.StateMember &&
		evt.GetStateKey() == u.Client.UserID.String() && evt.Content.AsMember().Membership == event.MembershipInvite {
		u.invites[evt.RoomID.String()] = true
	}
	// An m.room.encrypted event comes back through here decrypted, unless
	// decryption failed (DecryptFailures counts those).
	if src&event.SourceTimeline == 0 || evt.Type == event.EventEncrypted || u.seen[evt.ID.String()] {
		return
	}
	u.seen[evt.ID.String()] = true
	u.events = append(u.events, Event{
		ID:        evt.ID.String(),
		Type:      evt.Type.Type,
		Sender:    evt.Sender.String(),
		RoomID:    evt.RoomID.String(),
		Encrypted: evt.Mautrix.WasEncrypted,
		Content:   slices.Clone(evt.Content.VeryRaw),
	})
}

func (u *E2EEUser) notifyLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// waitUntil calls cond until it is true, once at first and again after each
// event the sync dispatches. It returns false when timeout passes or the sync
// has ended, with the sync's error if it failed.
func (u *E2EEUser) waitUntil(timeout time.Duration, cond func() bool) (bool, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		// Taken before cond, so that a change while cond runs is not missed.
		u.mu.Lock()
		changed, done, err := u.changed, u.syncDone, u.syncErr
		u.mu.Unlock()
		if cond() {
			return true, nil
		}
		if done {
			return false, fmt.Errorf("sync ended: %v", err)
		}
		select {
		case <-changed:
		case <-timer.C:
			return cond(), nil
		}
	}
}

// UserID is the user's full Matrix ID, as the server spells it.
func (u *E2EEUser) UserID() string { return u.Client.UserID.String() }

// DeviceID is the device this E2EEUser logged in as.
func (u *E2EEUser) DeviceID() string { return u.Client.DeviceID.String() }

// CreateEncryptedRoom creates a private_chat room with m.room.encryption
// (m.megolm.v1.aes-sha2) in its initial state, inviting the given user IDs,
// and returns its ID.
func (u *E2EEUser) CreateEncryptedRoom(t testing.TB, invite ...string) string {
	t.Helper()
	return u.createRoom(t, invite, &event.Event{
		Type:    event.StateEncryption,
		Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
	})
}

// CreatePlainRoom creates an unencrypted private_chat room, inviting the given
// user IDs, and returns its ID.
func (u *E2EEUser) CreatePlainRoom(t testing.TB, invite ...string) string {
	t.Helper()
	return u.createRoom(t, invite)
}

func (u *E2EEUser) createRoom(t testing.TB, invite []string, initialState ...*event.Event) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req := &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: initialState}
	for _, user := range invite {
		req.Invite = append(req.Invite, id.UserID(user))
	}
	// CreateRoom also records the membership and the initial state
	// (encryption) in the state store, so Send can use the room at once.
	resp, err := u.Client.CreateRoom(ctx, req)
	if err != nil {
		t.Fatalf("matrixtest: %s: create room: %v", u.UserID(), err)
	}
	return resp.RoomID.String()
}

// Join joins roomID, waiting for the invite to reach this user first if the
// server refuses the join, and returns once the state store knows the room:
// the membership and, if the room has it, its encryption. Without the latter
// a Send right after joining would go out in plaintext.
func (u *E2EEUser) Join(t testing.TB, roomID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	room := id.RoomID(roomID)
	joinsBefore := u.ownJoins(roomID)
	_, err := u.Client.JoinRoomByID(ctx, room)
	if errors.Is(err, mautrix.MForbidden) {
		invited, _ := u.waitUntil(inviteTimeout, func() bool {
			u.mu.Lock()
			defer u.mu.Unlock()
			return u.invites[roomID]
		})
		if invited {
			_, err = u.Client.JoinRoomByID(ctx, room)
		}
	}
	if err != nil {
		t.Fatalf("matrixtest: %s: join %s: %v", u.UserID(), roomID, err)
	}
	// The sync may still be handling a batch fetched before the join, with
	// the invite in it, which would set the state store's membership back to
	// "invite" after State below. Batches are handled in order: once the
	// join itself has come through the sync, no earlier one is left.
	if ok, err := u.waitUntil(inviteTimeout, func() bool { return u.ownJoins(roomID) > joinsBefore }); !ok {
		t.Fatalf("matrixtest: %s: joined %s, but the join did not come through the sync within %v (%v)", u.UserID(), roomID, inviteTimeout, err)
	}
	// State, unlike the sync, has the room's whole state now, and it writes
	// it to the state store.
	state, err := u.Client.State(ctx, room)
	if err != nil {
		t.Fatalf("matrixtest: %s: state of %s after join: %v", u.UserID(), roomID, err)
	}
	if !u.Client.StateStore.IsInRoom(ctx, room, u.Client.UserID) {
		t.Fatalf("matrixtest: %s: joined %s, but the state store does not show it", u.UserID(), roomID)
	}
	if _, encrypted := state[event.StateEncryption][""]; encrypted {
		if ok, err := u.Client.StateStore.IsEncrypted(ctx, room); !ok {
			t.Fatalf("matrixtest: %s: %s is encrypted, but the state store does not know it (err %v)", u.UserID(), roomID, err)
		}
	}
}

// ownJoins counts this user's own joins to roomID among the timeline events
// received so far.
func (u *E2EEUser) ownJoins(roomID string) int {
	n := 0
	for _, ev := range u.Events(roomID) {
		var m struct {
			Membership string `json:"membership"`
		}
		if ev.Type == event.StateMember.Type && ev.Sender == u.UserID() &&
			json.Unmarshal(ev.Content, &m) == nil && m.Membership == string(event.MembershipJoin) {
			n++
		}
	}
	return n
}

// WaitJoined waits until this user's state store shows userID joined to
// roomID, as it must before a Send shares the room key with userID's devices.
func (u *E2EEUser) WaitJoined(t testing.TB, roomID, userID string, timeout time.Duration) {
	t.Helper()
	ok, err := u.waitUntil(timeout, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		return u.Client.StateStore.IsInRoom(ctx, id.RoomID(roomID), id.UserID(userID))
	})
	if !ok {
		t.Fatalf("matrixtest: %s: %s not seen joined to %s within %v (%v)", u.UserID(), userID, roomID, timeout, err)
	}
}

// Send sends a message event of eventType with content (anything
// JSON-marshalable) to roomID and returns its event ID. It is encrypted when
// the state store says the room is. Sending to a room the state store does not
// show this user in ends the test: the encryption state would be unknown.
func (u *E2EEUser) Send(t testing.TB, roomID, eventType string, content any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	room := id.RoomID(roomID)
	if !u.Client.StateStore.IsInRoom(ctx, room, u.Client.UserID) {
		t.Fatalf("matrixtest: %s: send %s: the state store does not show %s joined; use CreateEncryptedRoom, CreatePlainRoom or Join first",
			u.UserID(), eventType, roomID)
	}
	resp, err := u.Client.SendMessageEvent(ctx, room, event.Type{Type: eventType, Class: event.MessageEventType}, content)
	if err != nil {
		t.Fatalf("matrixtest: %s: send %s to %s: %v", u.UserID(), eventType, roomID, err)
	}
	return resp.EventID.String()
}

// WaitEvent returns the first timeline event in roomID that match accepts,
// among those received so far and those still to come, waiting at most
// timeout.
func (u *E2EEUser) WaitEvent(t testing.TB, roomID string, match func(Event) bool, timeout time.Duration) Event {
	t.Helper()
	var found Event
	ok, err := u.waitUntil(timeout, func() bool {
		for _, ev := range u.Events(roomID) {
			if match(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	if !ok {
		u.mu.Lock()
		var types []string
		for _, ev := range u.events {
			if ev.RoomID == roomID {
				types = append(types, ev.Type)
			}
		}
		u.mu.Unlock()
		t.Fatalf("matrixtest: %s: no matching event in %s within %v (%v); received %d: %s; decryption failures: %d",
			u.UserID(), roomID, timeout, err, len(types), strings.Join(types, ", "), u.DecryptFailures())
	}
	return found
}

// Events returns the timeline events received in roomID so far, in the order
// they arrived.
func (u *E2EEUser) Events(roomID string) []Event {
	u.mu.Lock()
	defer u.mu.Unlock()
	var evs []Event
	for _, ev := range u.events {
		if ev.RoomID == roomID {
			evs = append(evs, ev)
		}
	}
	return evs
}

// DecryptFailures is how many encrypted events could not be decrypted, even
// after waiting for their keys.
func (u *E2EEUser) DecryptFailures() int { return int(u.decryptFailures.Load()) }

// RoomMessages returns every event of roomID as the homeserver serves it
// (GET /_matrix/client/v3/rooms/{roomID}/messages, newest first, paging until
// an empty chunk), as raw JSON objects, read with token — an account that is
// a member of the room. It is what the server stores and hands out, so it
// shows whether content was encrypted on the wire.
func (hs *Homeserver) RoomMessages(t testing.TB, token, roomID string) []json.RawMessage {
	t.Helper()
	var all []json.RawMessage
	from := ""
	for {
		q := url.Values{"dir": {"b"}, "limit": {fmt.Sprint(roomMessagesLimit)}}
		if from != "" {
			q.Set("from", from)
		}
		var page struct {
			Chunk []json.RawMessage `json:"chunk"`
			End   string            `json:"end"`
		}
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?" + q.Encode()
		// Dendrite's SQLite answers 500 "database is locked" now and then
		// on a busy machine: a read is safe to repeat.
		var err error
		for attempt := 1; attempt <= 5; attempt++ {
			if err = hs.do(http.MethodGet, path, token, nil, &page); err == nil || !strings.Contains(err.Error(), "500 Internal Server Error") {
				break
			}
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("matrixtest: room messages of %s: %v", roomID, err)
		}
		all = append(all, page.Chunk...)
		// A short page is the last: no need to ask for the next.
		if len(page.Chunk) < roomMessagesLimit || page.End == "" || page.End == from {
			return all
		}
		from = page.End
	}
}

// testLogWriter hands mautrix's log lines to t.Log until close, and drops
// them after: testing panics on a Log after the test has finished.
type testLogWriter struct {
	mu     sync.Mutex
	t      testing.TB
	closed bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
}
