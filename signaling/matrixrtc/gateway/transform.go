package gateway

import "errors"

// FrameTransformer is the seam of end-to-end encryption: it is applied to
// each encoded media frame (a whole Opus packet or VP8 frame, after RTP
// depacketization), on the way into the LiveKit room (Outbound: the
// client's frame, encrypted for the call's members) and on the way out
// (Inbound: a member's frame, decrypted for the client). LiveKit's E2EE
// (AES-GCM over the frame, the codec's header bytes left in clear, an
// IV/key-index trailer) is frame-level, so it cannot be applied per RTP
// packet. The real implementation is e2ee.Session's Transformer (over
// framecrypt); Identity is for tests.
//
// Implementations are called from one goroutine per track, concurrently
// across tracks. An error drops that frame (counted).
type FrameTransformer interface {
	// Encrypts reports whether Outbound's frames leave end-to-end
	// encrypted. The gateway publishes into an end-to-end encrypted room
	// only with a transformer that does ("never media sent unencrypted").
	Encrypts() bool
	// Outbound transforms a frame of the client's before it is published.
	Outbound(f Frame) ([]byte, error)
	// Inbound transforms a frame a member published before it goes down
	// to the client.
	Inbound(f Frame) ([]byte, error)
}

// Frame is one encoded media frame and what a transformer needs to know
// of it. Payload is owned by the call: a transformer may return it or a
// new slice, and must not keep it.
type Frame struct {
	// Participant is the LiveKit identity the frame is published under:
	// the gateway's own for Outbound, the member's for Inbound (the key is
	// the sender's).
	Participant string
	// MimeType is the codec, e.g. "audio/opus", "video/VP8".
	MimeType string
	// RTPTimestamp is the frame's RTP timestamp (the sender's clock).
	RTPTimestamp uint32
	// SSRC is the RTP stream's: the client's track for Outbound, the
	// member's for Inbound. LiveKit's frame IV starts with it (with the
	// timestamp and a per-SSRC counter), so an encrypting transformer
	// keeps IVs of the client's audio and video apart.
	SSRC    uint32
	Payload []byte
}

// Identity passes frames unchanged and does not encrypt. Tests only: the
// gateway refuses it for an end-to-end encrypted room.
type Identity struct{}

// Encrypts is false: frames leave as they came.
func (Identity) Encrypts() bool { return false }

// Outbound returns the frame unchanged.
func (Identity) Outbound(f Frame) ([]byte, error) { return f.Payload, nil }

// Inbound returns the frame unchanged.
func (Identity) Inbound(f Frame) ([]byte, error) { return f.Payload, nil }

// ErrUnencrypted is the refusal to publish into an end-to-end encrypted
// room without a transformer that encrypts: media would reach the members
// (and the SFU) in clear.
var ErrUnencrypted = errors.New("gateway: the room is end-to-end encrypted and the frame transformer does not encrypt")
