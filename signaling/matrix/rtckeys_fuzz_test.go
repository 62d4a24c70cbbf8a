package matrix

import (
	"strings"
	"testing"
)

// FuzzParseRTCKey: a to-device key event's content, in either form, is
// refused or gives a key the gateway can use: a room ID, an index of one
// byte, 16 to 64 bytes of key; the io.element.call form always names the
// sending device.
func FuzzParseRTCKey(f *testing.F) {
	f.Add(rtcKeyTypeElement, `{"keys":{"index":0,"key":"AAECAwQFBgcICQoLDA0ODw=="},"room_id":"!r:s","member":{"claimed_device_id":"DEV","id":"@u:s:DEV"},"session":{"call_id":"","application":"m.call","scope":"m.room"},"sent_ts":1700000000000}`)
	f.Add(rtcKeyTypeMSC4143, `{"room_id":"!r:s","member":{"id":"m"},"media_key":{"index":255,"key":"AAECAwQFBgcICQoLDA0ODw"}}`)
	f.Add(rtcKeyTypeMSC4143Unstable, `{"room_id":"!r:s","media_key":{"index":1e2,"key":"AAECAwQFBgcICQoLDA0ODwABAgMEBQYHCAkKCwwNDg8="}}`)
	f.Add(rtcKeyTypeElement, `{"keys":{"index":-1,"key":"=="},"room_id":"x"}`)
	f.Fuzz(func(t *testing.T, typ, content string) {
		k, err := parseRTCKey(typ, []byte(content))
		if err != nil {
			return
		}
		if !strings.HasPrefix(k.RoomID, "!") || k.Index < 0 || k.Index > maxRTCIndex ||
			len(k.Key) < minRTCKeyLen || len(k.Key) > maxRTCKeyLen {
			t.Fatalf("accepted room %q, index %d, %d key bytes", k.RoomID, k.Index, len(k.Key))
		}
		if typ == rtcKeyTypeElement && k.claimedDevice == "" {
			t.Fatal("accepted an io.element.call key naming no device")
		}
	})
}
