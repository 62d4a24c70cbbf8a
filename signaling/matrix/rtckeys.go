package matrix

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	rtce2ee "github.com/icebox-voip/icebox/signaling/matrixrtc/e2ee"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// MatrixRTC media keys (issue 17, the gateway's end-to-end encryption):
// each member of a call sends every other member's device the key it
// encrypts its frames with, as an Olm-encrypted to-device message, and
// icebox's device does the same for the legs it runs.
//
//   - Sending (SendRTCKey): io.element.call.encryption_keys with the
//     content matrix-js-sdk 43's ToDeviceKeyTransport sends (what Element
//     Call and Element X read today), Olm-encrypted to each device by
//     mautrix (one-time keys claimed where there is no Olm session yet),
//     all devices in one to-device request.
//   - Receiving: mautrix's Olm machine decrypts to-device messages in its
//     OnSync handler and drops the event types it does not know. The bridge
//     registers its own OnSync handler before the machine's: it takes the
//     m.room.encrypted to-device events out of the response and hands them
//     to the machine itself (HandleEncryptedEvent, which does what the
//     machine's handler would do with room keys and the like and returns
//     the events it does not handle), keeping the decrypted key events.
//     Both io.element.call.encryption_keys and MSC4143's
//     m.rtc.encryption_key (and its unstable org.matrix.msc4143 name) are
//     read. A key reaches Config.RTCKeys only if it came Olm-encrypted from
//     the device it names; every other one is counted and dropped, logged
//     without its key.

// RTCKeySink receives the media keys of MatrixRTC members (e2ee.Registry
// implements it). RTCKey is called from the sync goroutine: it must not
// block. The Key slice is the sink's.
type RTCKeySink interface {
	RTCKey(rtce2ee.KeyEvent)
}

// To-device event types of media keys.
const (
	// rtcKeyTypeElement is matrix-js-sdk's EventType.CallEncryptionKeysPrefix.
	rtcKeyTypeElement = "io.element.call.encryption_keys"
	// MSC4143's, stable and unstable.
	rtcKeyTypeMSC4143         = "m.rtc.encryption_key"
	rtcKeyTypeMSC4143Unstable = "org.matrix.msc4143.rtc.encryption_key"
)

var rtcKeyTypes = []string{rtcKeyTypeElement, rtcKeyTypeMSC4143, rtcKeyTypeMSC4143Unstable}

// Key material bounds: matrix-js-sdk makes 16 random bytes; MSC4143
// suggests 32. Anything outside is not a key a member made.
const (
	minRTCKeyLen = 16
	maxRTCKeyLen = 64
	maxRTCIndex  = 255 // one byte in the frame trailer
)

// Results of a received key (icebox_matrix_rtc_keys_received_total).
const (
	keyDelivered     = "delivered"     // handed to Config.RTCKeys
	keyUnencrypted   = "unencrypted"   // a key event sent in clear
	keyWrongDevice   = "wrong_device"  // the Olm session's device is not the one the key names, or is unknown
	keyMalformed     = "malformed"     // content that is not a key: fields missing or of the wrong type, bad base64, length, index
	keyUnknownRoom   = "unknown_room"  // a room icebox's user is not joined to
	keyUndecryptable = "undecryptable" // an Olm-encrypted to-device event that did not decrypt (its type is hidden: perhaps a key)
)

var rtcKeyResults = []string{keyDelivered, keyUnencrypted, keyWrongDevice, keyMalformed, keyUnknownRoom, keyUndecryptable}

// Results per target device of a sent key (icebox_matrix_rtc_keys_sent_total).
const (
	keySentOK       = "ok"
	keySentNoDevice = "no_device" // the device's keys are unknown, or no Olm session could be made (no one-time key)
	keySentFailed   = "failed"    // the homeserver refused or could not be reached
)

// rtcKeys receives and counts media keys; the bridge has one when
// Config.RTCKeys is set.
type rtcKeys struct {
	sinkMu   sync.Mutex
	sink     RTCKeySink // Config.RTCKeys or SetRTCKeys; each Run takes it once
	log      zerolog.Logger
	cli      *mautrix.Client
	crypto   *e2ee // nil without encryption: every key is then unencrypted
	now      func() time.Time
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
}

// newRTCKeys makes the key part and registers its metrics. The sent
// counter is made even without a sink: SendRTCKey works without one.
func newRTCKeys(cfg Config, cli *mautrix.Client, log zerolog.Logger) *rtcKeys {
	f := promauto.With(cfg.Registerer)
	k := &rtcKeys{sink: cfg.RTCKeys, log: log, cli: cli, now: cfg.Now,
		received: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_rtc_keys_received_total",
			Help: "MatrixRTC media keys received as to-device messages (io.element.call.encryption_keys, m.rtc.encryption_key), by result: delivered (to the gateway's key registry), unencrypted (sent in clear; dropped), wrong_device (the Olm session's device is not the one the key names, or unknown; dropped), malformed (dropped), unknown_room (a room icebox is not in; dropped), undecryptable (an Olm-encrypted to-device message that did not decrypt, perhaps a key).",
		}, []string{"result"}),
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_matrix_rtc_keys_sent_total",
			Help: "icebox's MatrixRTC media keys sent as Olm-encrypted to-device messages, per target device, by result: ok, no_device (the device's keys are unknown or no Olm session could be made), failed (the homeserver refused the request or could not be reached).",
		}, []string{"result"}),
	}
	for _, r := range rtcKeyResults {
		k.received.WithLabelValues(r)
	}
	for _, r := range []string{keySentOK, keySentNoDevice, keySentFailed} {
		k.sent.WithLabelValues(r)
	}
	return k
}

// register adds the key handlers to a Run's syncer. It must run before
// the crypto helper registers its own (Init): the OnSync handler takes
// the encrypted to-device events before the Olm machine's handler would
// decrypt them and drop the keys.
func (k *rtcKeys) register(s *syncer) {
	if k == nil {
		return
	}
	k.sinkMu.Lock()
	sink := k.sink
	k.sinkMu.Unlock()
	if sink == nil {
		return
	}
	s.OnSync(func(ctx context.Context, resp *mautrix.RespSync, _ string) bool {
		k.takeEncrypted(ctx, resp, sink)
		return true
	})
	for _, t := range rtcKeyTypes {
		s.OnEventType(event.Type{Type: t, Class: event.ToDeviceEventType}, k.onClear)
	}
}

// onClear drops a key event that came in clear: anyone can send one
// claiming any device.
func (k *rtcKeys) onClear(_ context.Context, evt *event.Event) {
	k.drop(keyUnencrypted, evt.Type.Type, string(evt.Sender), "", "", nil)
}

// takeEncrypted decrypts the response's Olm-encrypted to-device events
// through the Olm machine, takes the media keys among them and removes
// them all from the response (decrypting one twice would fail and make
// mautrix replace the Olm session).
func (k *rtcKeys) takeEncrypted(ctx context.Context, resp *mautrix.RespSync, sink RTCKeySink) {
	if k.crypto == nil || k.crypto.helper == nil {
		return
	}
	mach := k.crypto.helper.Machine()
	kept := resp.ToDevice.Events[:0]
	for _, evt := range resp.ToDevice.Events {
		if evt.Type.Type != event.ToDeviceEncrypted.Type {
			kept = append(kept, evt)
			continue
		}
		evt.Type.Class = event.ToDeviceEventType
		if err := evt.Content.ParseRaw(evt.Type); err != nil && !errors.Is(err, event.ErrContentAlreadyParsed) {
			kept = append(kept, evt) // the machine's handler logs and skips it
			continue
		}
		// The machine reports a failed decryption only in its log: a hook
		// on the context's logger (which the machine prefers to its own)
		// sees it. The logger discards what it writes, as the sync's does.
		var failed failedDecryption
		hctx := zerolog.New(io.Discard).Hook(&failed).WithContext(ctx)
		dec := mach.HandleEncryptedEvent(hctx, evt)
		if failed {
			k.drop(keyUndecryptable, event.ToDeviceEncrypted.Type, string(evt.Sender), "", "", nil)
			continue
		}
		if dec != nil {
			k.decrypted(ctx, dec, sink)
		}
	}
	clear(resp.ToDevice.Events[len(kept):])
	resp.ToDevice.Events = kept
}

// failedDecryption is set by the Olm machine's error line for a to-device
// event it could not decrypt.
type failedDecryption bool

func (f *failedDecryption) Run(_ *zerolog.Event, level zerolog.Level, msg string) {
	if level >= zerolog.ErrorLevel && msg == "Failed to decrypt to-device event" {
		*f = true
	}
}

// decrypted checks a decrypted to-device event that the Olm machine did
// not handle and delivers it if it is a valid key from the device it names.
func (k *rtcKeys) decrypted(ctx context.Context, dec *crypto.DecryptedOlmEvent, sink RTCKeySink) {
	typ := dec.Type.Type
	switch typ {
	case rtcKeyTypeElement, rtcKeyTypeMSC4143, rtcKeyTypeMSC4143Unstable:
	default:
		return // not a key; mautrix ignores it too
	}
	sender := string(dec.Sender)
	olmDevice := ""
	if dec.SenderDevice != nil {
		olmDevice = string(dec.SenderDevice.DeviceID)
	}
	key, err := parseRTCKey(typ, dec.Content.VeryRaw)
	if err != nil {
		k.drop(keyMalformed, typ, sender, olmDevice, key.RoomID, err)
		return
	}
	// The device the key is for is the Olm session's: the machine found
	// it by the session's identity key (and checked its signing key). A
	// key naming another device, or from a device the machine does not
	// know, is not trusted.
	if olmDevice == "" || (key.claimedDevice != "" && key.claimedDevice != olmDevice) {
		k.drop(keyWrongDevice, typ, sender, olmDevice, key.RoomID, fmt.Errorf("the key names device %q", key.claimedDevice))
		return
	}
	if !k.cli.StateStore.IsInRoom(ctx, id.RoomID(key.RoomID), k.cli.UserID) {
		k.drop(keyUnknownRoom, typ, sender, olmDevice, key.RoomID, nil)
		return
	}
	sent := k.now()
	if key.sentTS > 0 {
		sent = time.UnixMilli(key.sentTS)
	}
	k.received.WithLabelValues(keyDelivered).Inc()
	k.log.Debug().Str("type", typ).Str("room_id", key.RoomID).Str("sender", sender).Str("device_id", olmDevice).
		Int("index", key.Index).Msg("MatrixRTC media key received")
	sink.RTCKey(rtce2ee.KeyEvent{RoomID: key.RoomID, Device: membership.Device{UserID: sender, DeviceID: olmDevice},
		Index: key.Index, Key: key.Key, SentTS: sent})
}

// drop counts and logs a key that is not delivered; never its material.
func (k *rtcKeys) drop(result, typ, sender, device, room string, err error) {
	k.received.WithLabelValues(result).Inc()
	// A key naming another device than its Olm session's is an attempt to
	// pass as another member; the rest is noise anyone can send.
	line := k.log.Info()
	if result == keyWrongDevice {
		line = k.log.Warn()
	}
	if err != nil {
		line = line.Err(err)
	}
	line.Str("type", typ).Str("sender", sender).Str("device_id", device).Str("room_id", room).Str("result", result).
		Msg("MatrixRTC media key dropped")
}

// rtcKey is a parsed key event, either form.
type rtcKey struct {
	RoomID        string
	Index         int
	Key           []byte
	claimedDevice string // the device the content names ("" when the form names none)
	sentTS        int64  // ms; 0 when absent
}

// rtcKeyContent holds the fields of both forms: matrix-js-sdk's
// {keys{index, key}, room_id, member{claimed_device_id, id}, session,
// sent_ts} and MSC4143's {room_id, member{id}, media_key{index, key},
// slot_id}.
type rtcKeyContent struct {
	RoomID   *string     `json:"room_id"`
	Keys     *keyEntry   `json:"keys"`
	MediaKey *keyEntry   `json:"media_key"`
	Member   *keyMember  `json:"member"`
	SentTS   json.Number `json:"sent_ts"`
}

type keyEntry struct {
	Index json.Number `json:"index"`
	Key   *string     `json:"key"`
}

type keyMember struct {
	ClaimedDeviceID *string `json:"claimed_device_id"`
}

// parseRTCKey reads a key event's content as matrix-js-sdk's
// ToDeviceKeyTransport validates it (room_id, keys.key, a numeric
// keys.index and member.claimed_device_id required), or as MSC4143's, and
// checks the key: standard base64 (padded or not, as atob takes it),
// 16 to 64 bytes, index 0 to 255. The error names the field, never a
// value; the returned key carries the room when it was read.
func parseRTCKey(typ string, raw []byte) (rtcKey, error) {
	var c rtcKeyContent
	if err := json.Unmarshal(raw, &c); err != nil {
		return rtcKey{}, errors.New("content is not a key object")
	}
	var k rtcKey
	if c.RoomID == nil || !strings.HasPrefix(*c.RoomID, "!") {
		return k, errors.New("room_id missing or not a room ID")
	}
	k.RoomID = *c.RoomID
	entry, field := c.MediaKey, "media_key"
	if typ == rtcKeyTypeElement {
		entry, field = c.Keys, "keys"
		if c.Member == nil || c.Member.ClaimedDeviceID == nil || *c.Member.ClaimedDeviceID == "" {
			return k, errors.New("member.claimed_device_id missing")
		}
	}
	if c.Member != nil && c.Member.ClaimedDeviceID != nil {
		k.claimedDevice = *c.Member.ClaimedDeviceID
	}
	if entry == nil || entry.Key == nil {
		return k, fmt.Errorf("%s.key missing", field)
	}
	idx, err := entry.Index.Int64()
	if err != nil || idx < 0 || idx > maxRTCIndex {
		return k, fmt.Errorf("%s.index missing or not an integer from 0 to %d", field, maxRTCIndex)
	}
	k.Index = int(idx)
	key, err := decodeKeyBase64(*entry.Key)
	if err != nil {
		return k, fmt.Errorf("%s.key is not base64", field)
	}
	if len(key) < minRTCKeyLen || len(key) > maxRTCKeyLen {
		return k, fmt.Errorf("%s.key is %d bytes, want %d to %d", field, len(key), minRTCKeyLen, maxRTCKeyLen)
	}
	k.Key = key
	if c.SentTS != "" {
		if ts, err := c.SentTS.Int64(); err == nil && ts > 0 {
			k.sentTS = ts
		}
	}
	return k, nil
}

// decodeKeyBase64 decodes standard base64 with or without padding.
func decodeKeyBase64(s string) ([]byte, error) {
	if strings.HasSuffix(s, "=") {
		return base64.StdEncoding.Strict().DecodeString(s)
	}
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

// SendRTCKey sends icebox's media key for roomID's call at index to each
// device, as matrix-js-sdk's ToDeviceKeyTransport sends a member's:
// io.element.call.encryption_keys, Olm-encrypted per device (Olm sessions
// made where there are none: one-time keys claimed), in one to-device
// request. icebox's own device is skipped. A device whose keys are unknown
// or with which no Olm session could be made is an error naming it; the
// others still get the key. Nothing is sent in clear.
func (b *Bridge) SendRTCKey(ctx context.Context, roomID string, index int, key []byte, to []membership.Device) error {
	c := b.crypto
	if !c.ready() {
		return errors.New("matrix: send MatrixRTC key: end-to-end encryption is not up (Config.Encryption, Run)")
	}
	if index < 0 || index > maxRTCIndex || len(key) < minRTCKeyLen || len(key) > maxRTCKeyLen {
		return fmt.Errorf("matrix: send MatrixRTC key: index %d or key length %d out of range", index, len(key))
	}
	me := b.rtcDevice()
	content := map[string]any{
		"keys":    map[string]any{"index": index, "key": base64.StdEncoding.EncodeToString(key)},
		"room_id": roomID,
		"member":  map[string]any{"claimed_device_id": me.DeviceID, "id": me.Identity()},
		"session": map[string]any{"call_id": "", "application": "m.call", "scope": "m.room"},
		"sent_ts": b.cfg.Now().UnixMilli(),
	}
	mach := c.helper.Machine()
	qctx := quiet(ctx)
	req := &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{}}
	var errs []error
	targets := 0
	for _, d := range to {
		if d == me || d.UserID == "" || d.DeviceID == "" {
			continue
		}
		user, dev := id.UserID(d.UserID), id.DeviceID(d.DeviceID)
		if _, dup := req.Messages[user][dev]; dup {
			continue
		}
		if _, err := mach.GetOrFetchDevice(qctx, user, dev); err != nil {
			b.keys.sent.WithLabelValues(keySentNoDevice).Inc()
			errs = append(errs, fmt.Errorf("matrix: send MatrixRTC key to device %s of %s: no device keys: %w", dev, user, err))
			continue
		}
		if req.Messages[user] == nil {
			req.Messages[user] = map[id.DeviceID]*event.Content{}
		}
		req.Messages[user][dev] = &event.Content{Raw: content}
		targets++
	}
	if targets == 0 {
		return errors.Join(errs...)
	}
	keyType := event.Type{Type: rtcKeyTypeElement, Class: event.ToDeviceEventType}
	enc, err := mach.EncryptToDevices(qctx, keyType, req)
	if err != nil {
		b.keys.sent.WithLabelValues(keySentFailed).Add(float64(targets))
		return errors.Join(append(errs, fmt.Errorf("matrix: send MatrixRTC key in %s: %w", roomID, err))...)
	}
	sending := 0
	for user, devs := range req.Messages {
		for dev := range devs {
			if enc.Messages[user][dev] == nil {
				b.keys.sent.WithLabelValues(keySentNoDevice).Inc()
				errs = append(errs, fmt.Errorf("matrix: send MatrixRTC key to device %s of %s: no Olm session (no one-time key could be claimed)", dev, user))
				continue
			}
			sending++
		}
	}
	if sending == 0 {
		return errors.Join(errs...)
	}
	if _, err := b.cli.SendToDevice(qctx, event.ToDeviceEncrypted, enc); err != nil {
		b.keys.sent.WithLabelValues(keySentFailed).Add(float64(sending))
		return errors.Join(append(errs, fmt.Errorf("matrix: send MatrixRTC key in %s: %w", roomID, err))...)
	}
	b.keys.sent.WithLabelValues(keySentOK).Add(float64(sending))
	b.log.Debug().Str("room_id", roomID).Int("index", index).Int("devices", sending).Msg("MatrixRTC media key sent")
	return errors.Join(errs...)
}

// SetRTCKeys sets the sink of members' media keys (Config.RTCKeys), for
// when it could not be made before the bridge: e2ee.Registry sends with
// the bridge. It takes effect at the next Run; nil stops reading keys.
func (b *Bridge) SetRTCKeys(sink RTCKeySink) {
	b.keys.sinkMu.Lock()
	defer b.keys.sinkMu.Unlock()
	b.keys.sink = sink
}

// rtcDevice is icebox's own device (user and device ID), known once Run
// logged in.
func (b *Bridge) rtcDevice() membership.Device {
	return membership.Device{UserID: string(b.cli.UserID), DeviceID: string(b.cli.DeviceID)}
}
