package framecrypt

import "errors"

// Errors callers branch on (with errors.Is); every error this package
// returns wraps one of them.
var (
	// ErrMissingKey: no key at the frame's key index (or none set to encrypt with).
	ErrMissingKey = errors.New("framecrypt: missing key")
	// ErrKeyInvalid: the key at the frame's index failed more often than the
	// failure tolerance; frames for it are dropped until a new key is set.
	ErrKeyInvalid = errors.New("framecrypt: key marked invalid")
	// ErrDecrypt: authentication failed with the key and its ratchets (wrong
	// key, tampered frame or trailer).
	ErrDecrypt = errors.New("framecrypt: decryption failed")
	// ErrUnsupportedCodec: a codec livekit-client does not encrypt (AV1) or an unknown one.
	ErrUnsupportedCodec = errors.New("framecrypt: unsupported codec")
	// ErrTooShort: the frame cannot hold the codec's header (and, when
	// decrypting, the tag, IV and trailer).
	ErrTooShort = errors.New("framecrypt: frame too short")
	// ErrBadTrailer: the trailer names an IV length other than livekit's 12.
	ErrBadTrailer = errors.New("framecrypt: bad trailer")
	// ErrUnexpectedSIF: a frame ends with the server-injected-frame trailer
	// but is none of the payloads the server injects; livekit-client drops it.
	ErrUnexpectedSIF = errors.New("framecrypt: unexpected server injected frame")
	// ErrBadKey: key material or options livekit-client would not accept.
	ErrBadKey = errors.New("framecrypt: bad key")
)
