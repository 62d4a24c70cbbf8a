package e2ee

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/framecrypt"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/gateway"
)

// Errors of the Transformer (each frame error wraps one of them or a
// framecrypt error).
var (
	// ErrNoKey: no key to decrypt the sender's frame with (no key from that
	// member yet), or none of icebox's to encrypt with (before Start).
	ErrNoKey = errors.New("e2ee: no media key")
	// ErrUnsupportedCodec: a codec the gateway does not encrypt; the frame
	// is refused, never passed in clear.
	ErrUnsupportedCodec = errors.New("e2ee: codec not encrypted")
	// ErrClosed: the Session was closed.
	ErrClosed = errors.New("e2ee: session closed")
)

// transformer is a Session's gateway.FrameTransformer.
type transformer struct{ s *Session }

var _ gateway.FrameTransformer = transformer{}

// Encrypts is true: every frame leaves encrypted or not at all.
func (t transformer) Encrypts() bool { return true }

// Outbound encrypts a frame of the client's with icebox's current key.
func (t transformer) Outbound(f gateway.Frame) ([]byte, error) {
	s := t.s
	codec, err := codecOf(f.MimeType)
	if err == nil && s.isClosed() {
		err = ErrClosed
	}
	if err != nil {
		return nil, s.failed(dirEncrypt, err)
	}
	s.encMu.Lock()
	out, err := s.enc.Encrypt(nil, f.Payload, codec, keyFrame(codec, f.Payload), f.SSRC, f.RTPTimestamp)
	s.encMu.Unlock()
	if err != nil {
		if errors.Is(err, framecrypt.ErrMissingKey) {
			err = fmt.Errorf("%w: icebox's key is not made yet: %w", ErrNoKey, err)
		}
		return nil, s.failed(dirEncrypt, err)
	}
	return out, nil
}

// Inbound decrypts a member's frame with the key its trailer names, from
// the member's key ring (by the frame's LiveKit identity).
func (t transformer) Inbound(f gateway.Frame) ([]byte, error) {
	s := t.s
	codec, err := codecOf(f.MimeType)
	if err == nil && s.isClosed() {
		err = ErrClosed
	}
	if err != nil {
		return nil, s.failed(dirDecrypt, err)
	}
	ring := s.ring(f.Participant)
	if ring == nil {
		return nil, s.failed(dirDecrypt, fmt.Errorf("%w from %s", ErrNoKey, f.Participant))
	}
	out, err := ring.Decrypt(nil, f.Payload, codec, keyFrame(codec, f.Payload))
	if err != nil {
		return nil, s.failed(dirDecrypt, err)
	}
	return out, nil
}

// failed counts a frame failure under its reason and returns err.
func (s *Session) failed(dir string, err error) error {
	s.reg.metrics.failures.WithLabelValues(dir, failReason(err)).Inc()
	return err
}

func failReason(err error) string {
	switch {
	case errors.Is(err, ErrClosed):
		return failClosed
	case errors.Is(err, ErrUnsupportedCodec), errors.Is(err, framecrypt.ErrUnsupportedCodec):
		return failUnsupported
	case errors.Is(err, ErrNoKey):
		return failNoKey
	case errors.Is(err, framecrypt.ErrMissingKey):
		return failMissingKey
	case errors.Is(err, framecrypt.ErrKeyInvalid):
		return failKeyInvalid
	case errors.Is(err, framecrypt.ErrDecrypt):
		return failAuth
	}
	return failMalformed
}

// codecOf maps a track's MIME type to the codecs icebox encrypts: Opus,
// VP8 and H.264 (what Element Call sends). Anything else is refused.
func codecOf(mime string) (framecrypt.Codec, error) {
	switch strings.ToLower(mime) {
	case "audio/opus":
		return framecrypt.Opus, nil
	case "video/vp8":
		return framecrypt.VP8, nil
	case "video/h264":
		return framecrypt.H264, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrUnsupportedCodec, mime)
}

// keyFrame is WebRTC's frame.type == "key", which decides VP8's clear
// header: bit 0 of the frame tag, in clear in encrypted frames too. For
// H.264 it matters only for a frame without a slice NAL unit (livekit then
// falls back to VP8's sizes); WebRTC's depacketizer marks a frame holding
// an SPS or an IDR slice as a key frame, and so does this.
func keyFrame(codec framecrypt.Codec, payload []byte) bool {
	switch codec {
	case framecrypt.VP8:
		return framecrypt.IsVP8KeyFrame(payload)
	case framecrypt.H264:
		return h264KeyFrame(payload)
	}
	return false
}

// h264KeyFrame looks at the NAL unit types of an Annex B frame up to its
// first slice: an SPS (7) or an IDR slice (5) makes it a key frame.
func h264KeyFrame(b []byte) bool {
	for {
		i := bytes.Index(b, startCode)
		if i < 0 || i+3 >= len(b) {
			return false
		}
		b = b[i+3:]
		switch b[0] & 0x1f {
		case 5, 7:
			return true
		case 1:
			return false
		}
	}
}

var startCode = []byte{0, 0, 1}
