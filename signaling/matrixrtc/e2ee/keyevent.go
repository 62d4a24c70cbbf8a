package e2ee

import (
	"context"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// KeyEvent is one media key a member's device sent icebox's device: the
// key the device encrypts its frames with at Index. The Matrix bridge
// delivers only keys that arrived Olm-encrypted from Device itself, so
// Device is authenticated; RoomID is what the sender said.
type KeyEvent struct {
	RoomID string
	Device membership.Device
	// Index is the key index of the sender's key ring, 0 to 255.
	Index int
	// Key is the raw key material (16 bytes from Element Call), the HKDF
	// input of the frame key. Never logged.
	Key []byte
	// SentTS is when the sender sent it (its sent_ts), else when it arrived.
	SentTS time.Time
}

// Sender sends icebox's own media key to member devices: the Matrix
// bridge's SendRTCKey (Olm-encrypted to-device messages).
type Sender interface {
	SendRTCKey(ctx context.Context, roomID string, index int, key []byte, to []membership.Device) error
}
