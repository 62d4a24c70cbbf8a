package matrix_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/cryptohelper"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// MatrixRTC media keys between icebox's bridge and another end-to-end
// encrypting Matrix device (a mautrix Olm machine, as a member's client),
// through a real Dendrite, in an encrypted room both are in.

// keySink records the keys the bridge delivers.
type keySink struct {
	mu   sync.Mutex
	keys []e2ee.KeyEvent
}

func (s *keySink) RTCKey(e e2ee.KeyEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, e)
}

func (s *keySink) all() []e2ee.KeyEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]e2ee.KeyEvent(nil), s.keys...)
}

// keyPeer is a Matrix device with its own Olm machine that sends media
// keys as a member's client does and keeps the to-device events it
// decrypts (mautrix's own handler drops the types it does not know, so the
// peer takes the encrypted ones first, before the machine's handler).
type keyPeer struct {
	cli  *mautrix.Client
	mach *crypto.OlmMachine

	mu  sync.Mutex
	got []*crypto.DecryptedOlmEvent
}

func newKeyPeer(t *testing.T, hs *matrixtest.Homeserver, userID, password string) *keyPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := mautrix.NewClient(hs.URL(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.Log = zerolog.Nop()
	syncer := mautrix.NewDefaultSyncer()
	cli.Syncer = syncer
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID},
		Password:   password, StoreCredentials: true,
	}); err != nil {
		t.Fatalf("peer login: %v", err)
	}
	dir := t.TempDir()
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "crypto.db")+"?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db, err := dbutil.NewWithDB(raw, "sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pickle := make([]byte, 32)
	helper, err := cryptohelper.NewCryptoHelper(cli, pickle, db)
	if err != nil {
		t.Fatal(err)
	}
	p := &keyPeer{cli: cli}
	syncer.OnSync(p.take) // before Init registers the machine's handler
	if err := helper.Init(ctx); err != nil {
		t.Fatalf("peer crypto: %v", err)
	}
	cli.Crypto = helper
	p.mach = helper.Machine()
	syncCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cli.SyncWithContext(syncCtx)
	}()
	t.Cleanup(func() {
		stop()
		<-done
		if err := helper.Close(); err != nil {
			t.Errorf("peer crypto close: %v", err)
		}
	})
	return p
}

func (p *keyPeer) take(ctx context.Context, resp *mautrix.RespSync, _ string) bool {
	kept := resp.ToDevice.Events[:0]
	for _, evt := range resp.ToDevice.Events {
		if evt.Type.Type != event.ToDeviceEncrypted.Type {
			kept = append(kept, evt)
			continue
		}
		evt.Type.Class = event.ToDeviceEventType
		if err := evt.Content.ParseRaw(evt.Type); err != nil {
			continue
		}
		if dec := p.mach.HandleEncryptedEvent(ctx, evt); dec != nil {
			p.mu.Lock()
			p.got = append(p.got, dec)
			p.mu.Unlock()
		}
	}
	resp.ToDevice.Events = kept
	return true
}

func (p *keyPeer) received() []*crypto.DecryptedOlmEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*crypto.DecryptedOlmEvent(nil), p.got...)
}

func (p *keyPeer) device() membership.Device {
	return membership.Device{UserID: string(p.cli.UserID), DeviceID: string(p.cli.DeviceID)}
}

// sendEncrypted sends content as an Olm-encrypted to-device event of typ
// to one device.
func (p *keyPeer) sendEncrypted(t *testing.T, to membership.Device, typ string, content any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		id.UserID(to.UserID): {id.DeviceID(to.DeviceID): {Raw: asMap(t, content)}},
	}}
	enc, err := p.mach.EncryptToDevices(ctx, event.Type{Type: typ, Class: event.ToDeviceEventType}, req)
	if err != nil {
		t.Fatalf("encrypt to-device: %v", err)
	}
	if enc.Messages[id.UserID(to.UserID)][id.DeviceID(to.DeviceID)] == nil {
		t.Fatalf("no Olm session with %v", to)
	}
	if _, err := p.cli.SendToDevice(ctx, event.ToDeviceEncrypted, enc); err != nil {
		t.Fatalf("send to-device: %v", err)
	}
}

// sendClear sends content in clear as a to-device event of typ.
func (p *keyPeer) sendClear(t *testing.T, to membership.Device, typ string, content any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		id.UserID(to.UserID): {id.DeviceID(to.DeviceID): {Raw: asMap(t, content)}},
	}}
	if _, err := p.cli.SendToDevice(ctx, event.Type{Type: typ, Class: event.ToDeviceEventType}, req); err != nil {
		t.Fatalf("send to-device: %v", err)
	}
}

// sendRawEncrypted sends an m.room.encrypted to-device event whose Olm
// ciphertext is garbage, for icebox's device.
func (p *keyPeer) sendRawEncrypted(t *testing.T, to membership.Device) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := p.mach.GetOrFetchDevice(ctx, id.UserID(to.UserID), id.DeviceID(to.DeviceID))
	if err != nil {
		t.Fatal(err)
	}
	content := map[string]any{
		"algorithm":  id.AlgorithmOlmV1,
		"sender_key": p.mach.OwnIdentity().IdentityKey,
		"ciphertext": map[string]any{string(dev.IdentityKey): map[string]any{
			"type": 1, "body": base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, 120)),
		}},
	}
	req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
		id.UserID(to.UserID): {id.DeviceID(to.DeviceID): {Raw: content}},
	}}
	if _, err := p.cli.SendToDevice(ctx, event.ToDeviceEncrypted, req); err != nil {
		t.Fatalf("send to-device: %v", err)
	}
}

func asMap(t *testing.T, v any) map[string]any {
	t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// elementKey is a key event's content as matrix-js-sdk 43's
// ToDeviceKeyTransport sends it.
func elementKey(room string, from membership.Device, index int, key []byte) map[string]any {
	return map[string]any{
		"keys":    map[string]any{"index": index, "key": base64.StdEncoding.EncodeToString(key)},
		"room_id": room,
		"member":  map[string]any{"claimed_device_id": from.DeviceID, "id": from.Identity()},
		"session": map[string]any{"call_id": "", "application": "m.call", "scope": "m.room"},
		"sent_ts": time.Now().UnixMilli(),
	}
}

// msc4143Key is MSC4143's m.rtc.encryption_key content.
func msc4143Key(room string, index int, key []byte) map[string]any {
	return map[string]any{
		"room_id":   room,
		"member":    map[string]any{"id": "member-xyz"},
		"media_key": map[string]any{"index": index, "key": base64.RawStdEncoding.EncodeToString(key)},
	}
}

func keyOf(b byte) []byte { return bytes.Repeat([]byte{b}, 16) }

func keysReceived(t *testing.T, b *testBridge, result string) float64 {
	t.Helper()
	return testutil.ToFloat64(matrix.RTCKeysCounter(b.Bridge, false, result))
}

// TestRTCKeys: keys cross both ways, Olm-encrypted, in both forms; every
// key that is not genuine is dropped and counted, and none is delivered.
func TestRTCKeys(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", servicePassword, false)
	bobID, _, _ := hs.Register(t, "bob", "bob-password", false)
	_, otherDevice := hs.Login(t, bobID, "bob-password") // another device of bob's, without keys
	peer := newKeyPeer(t, hs, bobID, "bob-password")
	sink := &keySink{}
	tb, room := startKeyBridge(t, hs, svcID, bobID, sink, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := peer.cli.JoinRoomByID(ctx, id.RoomID(room)); err != nil {
		t.Fatalf("peer join: %v", err)
	}
	me := matrix.OwnDevice(tb.Bridge)
	bob := peer.device()

	// A genuine key delivered: the fence after the keys that must not be.
	fence := 0
	waitDelivered := func(n int) {
		t.Helper()
		waitFor(t, 30*time.Second, "keys delivered", func() bool { return len(sink.all()) >= n }, tb.logs.String)
	}

	t.Run("element form, member to icebox", func(t *testing.T) {
		peer.sendEncrypted(t, me, "io.element.call.encryption_keys", elementKey(room, bob, 0, keyOf(1)))
		fence++
		waitDelivered(fence)
		got := sink.all()[0]
		if got.RoomID != room || got.Device != bob || got.Index != 0 || !bytes.Equal(got.Key, keyOf(1)) {
			t.Errorf("delivered %+v (key %x); want room %s, device %v, index 0, key %x", got, got.Key, room, bob, keyOf(1))
		}
		if d := time.Since(got.SentTS); d < 0 || d > time.Minute {
			t.Errorf("SentTS %v is not the sender's sent_ts", got.SentTS)
		}
	})

	t.Run("msc4143 form, member to icebox", func(t *testing.T) {
		peer.sendEncrypted(t, me, "m.rtc.encryption_key", msc4143Key(room, 7, keyOf(2)))
		fence++
		waitDelivered(fence)
		got := sink.all()[fence-1]
		if got.RoomID != room || got.Device != bob || got.Index != 7 || !bytes.Equal(got.Key, keyOf(2)) {
			t.Errorf("delivered %+v; want room %s, device %v, index 7, key 2…", got, room, bob)
		}
	})

	t.Run("icebox to member", func(t *testing.T) {
		key := keyOf(3)
		nobody := membership.Device{UserID: bobID, DeviceID: "NOSUCHDEVICE"}
		err := tb.SendRTCKey(ctx, room, 5, key, []membership.Device{bob, me, nobody})
		if err == nil || !strings.Contains(err.Error(), "NOSUCHDEVICE") {
			t.Errorf("SendRTCKey error = %v; want one naming NOSUCHDEVICE", err)
		}
		var got *crypto.DecryptedOlmEvent
		waitFor(t, 30*time.Second, "the peer receives icebox's key", func() bool {
			for _, e := range peer.received() {
				if e.Type.Type == "io.element.call.encryption_keys" {
					got = e
					return true
				}
			}
			return false
		}, tb.logs.String)
		if got.Sender != id.UserID(me.UserID) || got.SenderDevice == nil || got.SenderDevice.DeviceID != id.DeviceID(me.DeviceID) {
			t.Errorf("key from %s device %v; want icebox's device %v", got.Sender, got.SenderDevice, me)
		}
		var c struct {
			Keys struct {
				Index *int   `json:"index"`
				Key   string `json:"key"`
			} `json:"keys"`
			RoomID string `json:"room_id"`
			Member struct {
				ClaimedDeviceID string `json:"claimed_device_id"`
				ID              string `json:"id"`
			} `json:"member"`
			Session struct {
				CallID      *string `json:"call_id"`
				Application string  `json:"application"`
				Scope       string  `json:"scope"`
			} `json:"session"`
			SentTS int64 `json:"sent_ts"`
		}
		if err := json.Unmarshal(got.Content.VeryRaw, &c); err != nil {
			t.Fatal(err)
		}
		if c.Keys.Index == nil || *c.Keys.Index != 5 || c.Keys.Key != base64.StdEncoding.EncodeToString(key) || c.RoomID != room ||
			c.Member.ClaimedDeviceID != me.DeviceID || c.Member.ID != me.Identity() ||
			c.Session.CallID == nil || *c.Session.CallID != "" || c.Session.Application != "m.call" || c.Session.Scope != "m.room" ||
			time.Since(time.UnixMilli(c.SentTS)).Abs() > time.Minute {
			t.Errorf("content %s is not matrix-js-sdk's", got.Content.VeryRaw)
		}
		if v := testutil.ToFloat64(matrix.RTCKeysCounter(tb.Bridge, true, "ok")); v != 1 {
			t.Errorf("keys sent ok = %v, want 1", v)
		}
		if v := testutil.ToFloat64(matrix.RTCKeysCounter(tb.Bridge, true, "no_device")); v != 1 {
			t.Errorf("keys sent no_device = %v, want 1", v)
		}
	})

	t.Run("not genuine: dropped and counted", func(t *testing.T) {
		before := len(sink.all())
		forged := elementKey(room, membership.Device{UserID: bobID, DeviceID: otherDevice}, 1, keyOf(9))
		peer.sendEncrypted(t, me, "io.element.call.encryption_keys", forged)
		peer.sendClear(t, me, "io.element.call.encryption_keys", elementKey(room, bob, 1, keyOf(9)))
		peer.sendClear(t, me, "m.rtc.encryption_key", msc4143Key(room, 1, keyOf(9)))
		bad := []map[string]any{
			{"keys": "nope", "room_id": room, "member": map[string]any{"claimed_device_id": bob.DeviceID}},
			elementKey(room, bob, 1, nil),
			elementKey(room, bob, 300, keyOf(9)),
			elementKey(room, bob, 1, keyOf(9)[:8]),
		}
		bad[1]["keys"] = map[string]any{"index": 1, "key": "!!not base64!!"}
		noDevice := elementKey(room, bob, 1, keyOf(9))
		delete(noDevice, "member")
		bad = append(bad, noDevice)
		for _, c := range bad {
			peer.sendEncrypted(t, me, "io.element.call.encryption_keys", c)
		}
		peer.sendEncrypted(t, me, "m.rtc.encryption_key", map[string]any{"room_id": room, "media_key": map[string]any{"index": 1.5, "key": "AAAA"}})
		peer.sendEncrypted(t, me, "io.element.call.encryption_keys", elementKey("!elsewhere:"+hs.ServerName(), bob, 1, keyOf(9)))
		peer.sendRawEncrypted(t, me)
		// The fence: to-device messages arrive in order.
		peer.sendEncrypted(t, me, "io.element.call.encryption_keys", elementKey(room, bob, 2, keyOf(4)))
		waitDelivered(before + 1)
		for _, k := range sink.all()[before:] {
			if k.Index != 2 || !bytes.Equal(k.Key, keyOf(4)) {
				t.Errorf("delivered %+v, which is not genuine", k)
			}
		}
		want := map[string]float64{"delivered": 3, "wrong_device": 1, "unencrypted": 2, "malformed": 6, "unknown_room": 1, "undecryptable": 1}
		for result, n := range want {
			if v := keysReceived(t, tb, result); v != n {
				t.Errorf("icebox_matrix_rtc_keys_received_total{result=%q} = %v, want %v", result, v, n)
			}
		}
	})

	logs := tb.logs.String()
	for _, b := range []byte{1, 2, 3, 4, 9} {
		for _, enc := range []string{base64.StdEncoding.EncodeToString(keyOf(b)), base64.RawStdEncoding.EncodeToString(keyOf(b)), hex.EncodeToString(keyOf(b))} {
			if strings.Contains(logs, enc) {
				t.Errorf("the bridge's log contains key material %s", enc)
			}
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("the test ran out of time")
	}
}

// startKeyBridge runs an encrypted bridge of the service user with sink as
// its Config.RTCKeys, or the sink later returns given to SetRTCKeys before
// Run, and a calls service (the sync needs one), and returns it with the
// encrypted room it made for a conversation with bob (who is invited).
func startKeyBridge(t *testing.T, hs *matrixtest.Homeserver, svcID, bobID string, sink matrix.RTCKeySink, later func(*matrix.Bridge) matrix.RTCKeySink) (*testBridge, string) {
	t.Helper()
	st := openStore(t)
	tb := newBridge(t, matrix.Config{
		HomeserverURL: hs.URL(), UserID: svcID, Password: servicePassword, Store: st,
		Encryption: &matrix.Encryption{Dir: filepath.Join(t.TempDir(), "matrix"), Require: true},
		RTCKeys:    sink,
	}, matrix.Timing{Poll: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 400 * time.Millisecond})
	matrix.SetSyncBackoff(tb.Bridge, 50*time.Millisecond, 400*time.Millisecond)
	calls, err := signaling.NewService(signaling.ServiceConfig{
		Store: st, RoomIndex: st, Publisher: &recorder{}, Outbound: tb.Encoder(), Rooms: tb.Bridge,
		Logger: zerolog.New(tb.logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopCalls := context.WithCancel(context.Background())
	callsDone := make(chan error, 1)
	go func() { callsDone <- calls.Run(runCtx) }()
	t.Cleanup(func() {
		stopCalls()
		if err := <-callsDone; err != nil {
			t.Errorf("calls Run: %v", err)
		}
	})
	tb.SetCalls(calls)
	if later != nil {
		tb.SetRTCKeys(later(tb.Bridge))
	}
	stop := runScoped(t, tb)
	t.Cleanup(stop)
	waitFor(t, 60*time.Second, "encryption up and a first sync", func() bool {
		return matrix.EncryptionUp(tb.Bridge) && matrix.Syncs(tb.Bridge) > 0
	}, tb.logs.String)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conv, err := calls.PutConversation(ctx, inConv, []string{"alice", bobID}, "")
	if err != nil {
		t.Fatal(err)
	}
	return tb, conv.RoomID
}
