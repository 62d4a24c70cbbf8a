package framecrypt

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// KeyRing holds one sender's keys by key index, as livekit-client's
// ParticipantKeyHandler: the current index (the one a sender encrypts with),
// a failure count per index and, when decrypting fails, a ratchet of the
// key up to the ratchet window. It is safe for concurrent use.
type KeyRing struct {
	opts Options
	sif  []byte

	mu       sync.Mutex
	keys     []*Key
	failures []int
	current  int
}

// NewKeyRing returns an empty key ring. sifTrailer is the room's
// server-injected-frame trailer (the join response's sif_trailer), or nil.
func NewKeyRing(opts Options, sifTrailer []byte) (*KeyRing, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("framecrypt: new key ring: %w", err)
	}
	return &KeyRing{
		opts:     opts,
		sif:      bytes.Clone(sifTrailer),
		keys:     make([]*Key, opts.KeyRingSize),
		failures: make([]int, opts.KeyRingSize),
	}, nil
}

// SetKey derives a key from raw material (NewKey) and sets it at index
// (modulo the ring size), makes index current and clears its failures, as
// setKey does when MatrixKeyProvider hands livekit a member's key.
func (r *KeyRing) SetKey(index int, material []byte) error {
	k, err := NewKey(material, r.opts)
	if err != nil {
		return err
	}
	r.Set(index, k)
	return nil
}

// Set puts a derived key at index (modulo the ring size), makes it current
// and clears its failures.
func (r *KeyRing) Set(index int, k *Key) { r.Put(index, k, true) }

// Put puts a derived key at index (modulo the ring size) and clears its
// failures; current makes it the index Encryptors use (livekit's setKey
// with updateCurrentKeyIndex), which a sender does only once the others
// had time to receive the key.
func (r *KeyRing) Put(index int, k *Key, current bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.slot(index)
	r.keys[i] = k
	r.failures[i] = 0
	if current {
		r.current = i
	}
}

func (r *KeyRing) slot(index int) int {
	i := index % len(r.keys)
	if i < 0 {
		i += len(r.keys)
	}
	return i
}

// Current returns the current key index and its key (nil when unset).
func (r *KeyRing) Current() (uint8, *Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return uint8(r.current), r.keys[r.current]
}

// Decrypt appends the decrypted frame to dst, with the key at the frame's
// key index, as livekit-client's decodeFunction: an empty frame passes; a
// frame ending with the SIF trailer passes without it if it is one of the
// payloads the server injects; an index marked invalid drops the frame
// (ErrKeyInvalid); a missing key counts a failure (ErrMissingKey); a failed
// tag is retried with up to RatchetWindowSize ratchets of the key — a
// ratcheted key that works replaces it and becomes current — and otherwise
// counts a failure (ErrDecrypt). keyFrame is WebRTC's frame.type == "key"
// (see IsVP8KeyFrame). dst must not overlap frame.
func (r *KeyRing) Decrypt(dst, frame []byte, codec Codec, keyFrame bool) ([]byte, error) {
	if len(frame) == 0 {
		return dst, nil
	}
	if len(r.sif) > 0 && bytes.HasSuffix(frame, r.sif) {
		payload := frame[:len(frame)-len(r.sif)]
		if !isSIFPayload(payload) {
			return dst, fmt.Errorf("framecrypt: decrypt: %w", ErrUnexpectedSIF)
		}
		return append(dst, payload...), nil
	}
	idx := int(frame[len(frame)-1])
	if idx >= len(r.keys) {
		// livekit looks the index up without the modulo it applies when
		// setting keys: beyond the ring there is no key (and no count).
		return dst, fmt.Errorf("framecrypt: decrypt: %w: index %d beyond a ring of %d", ErrMissingKey, idx, len(r.keys))
	}
	r.mu.Lock()
	if r.invalid(idx) {
		r.mu.Unlock()
		return dst, fmt.Errorf("framecrypt: decrypt: %w: index %d", ErrKeyInvalid, idx)
	}
	k := r.keys[idx]
	if k == nil {
		r.failure(idx)
		r.mu.Unlock()
		return dst, fmt.Errorf("framecrypt: decrypt: %w: index %d", ErrMissingKey, idx)
	}
	r.mu.Unlock()

	out, err := k.Open(dst, frame, codec, keyFrame)
	if err == nil {
		r.success(idx)
		return out, nil
	}
	if !isDecryptFailure(err) {
		return dst, err
	}
	try := k
	for n := 0; n < r.opts.RatchetWindowSize; n++ {
		next, _, rerr := try.Ratchet()
		if rerr != nil {
			return dst, rerr
		}
		try = next
		if out, err = try.Open(dst, frame, codec, keyFrame); err == nil {
			r.mu.Lock()
			// Only if no other key was set meanwhile (livekit's check too).
			if r.keys[idx] == k {
				r.keys[idx] = try
				r.current = idx
			}
			r.failures[idx] = 0
			r.mu.Unlock()
			return out, nil
		}
	}
	r.mu.Lock()
	// livekit counts the failure only while the current key is valid.
	if !r.invalid(r.current) {
		r.failure(idx)
	}
	r.mu.Unlock()
	return dst, err
}

// isDecryptFailure: the failures livekit's WebCrypto call reports (and
// retries with a ratchet): a bad tag or a frame too short for one. A bad
// IV length counts as one too (livekit would try it with that IV length).
func isDecryptFailure(err error) bool {
	return errors.Is(err, ErrDecrypt) || errors.Is(err, ErrTooShort) || errors.Is(err, ErrBadTrailer)
}

func (r *KeyRing) invalid(i int) bool {
	return r.opts.FailureTolerance >= 0 && r.failures[i] > r.opts.FailureTolerance
}

func (r *KeyRing) failure(i int) {
	if r.opts.FailureTolerance >= 0 {
		r.failures[i]++
	}
}

func (r *KeyRing) success(i int) {
	r.mu.Lock()
	r.failures[i] = 0
	r.mu.Unlock()
}

// Encryptor encrypts one publisher's frames with its key ring's current key,
// keeping livekit's send counter per SSRC for the IV. It is not safe for
// concurrent use: one per published track (or per goroutine).
type Encryptor struct {
	ring   *KeyRing
	counts map[uint32]uint32
	start  func() uint32
}

// NewEncryptor returns an Encryptor over ring.
func NewEncryptor(ring *KeyRing) *Encryptor {
	return &Encryptor{ring: ring, counts: make(map[uint32]uint32), start: randomStart}
}

// randomStart is livekit's Math.floor(Math.random() * 0xffff): a random
// first send count below 0xffff, like an RTP sequence number's start.
func randomStart() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return binary.BigEndian.Uint32(b[:]) % 0xffff
}

// Encrypt appends the encrypted frame to dst with the ring's current key and
// index and the IV from ssrc, rtpTimestamp and this SSRC's send counter.
// dst must not overlap frame.
func (e *Encryptor) Encrypt(dst, frame []byte, codec Codec, keyFrame bool, ssrc, rtpTimestamp uint32) ([]byte, error) {
	if len(frame) == 0 {
		return dst, nil
	}
	idx, k := e.ring.Current()
	if k == nil {
		return dst, fmt.Errorf("framecrypt: encrypt: %w: index %d", ErrMissingKey, idx)
	}
	count, ok := e.counts[ssrc]
	if !ok {
		count = e.start()
	}
	out, err := k.Seal(dst, frame, codec, keyFrame, MakeIV(ssrc, rtpTimestamp, count), idx)
	if err != nil {
		return dst, err
	}
	e.counts[ssrc] = count + 1
	return out, nil
}

// Payloads livekit-server injects (livekit-client's sifPayload.ts, taken
// from livekit's downtrack.go): blank VP8 and H.264 key frames and Opus
// silence.
var (
	sifVP8KeyFrame8x8 = []byte{
		0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x08, 0x00, 0x08, 0x00, 0x00, 0x47, 0x08, 0x85, 0x85, 0x88,
		0x85, 0x84, 0x88, 0x02, 0x02, 0x00, 0x0c, 0x0d, 0x60, 0x00, 0xfe, 0xff, 0xab, 0x50, 0x80,
	}
	sifH264SPS = []byte{
		0x67, 0x42, 0xc0, 0x1f, 0x0f, 0xd9, 0x1f, 0x88, 0x88, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
		0x00, 0x03, 0x00, 0xc8, 0x3c, 0x60, 0xc9, 0x20,
	}
	sifH264PPS = []byte{0x68, 0x87, 0xcb, 0x83, 0xcb, 0x20}
	sifH264IDR = []byte{0x65, 0x88, 0x84, 0x0a, 0xf2, 0x62, 0x80, 0x00, 0xa7, 0xbe}
)

// isSIFPayload: livekit compares SHA-256 hashes of these; comparing the
// bytes is the same test.
func isSIFPayload(p []byte) bool {
	if bytes.Equal(p, sifVP8KeyFrame8x8) || bytes.Equal(p, sifH264SPS) || bytes.Equal(p, sifH264PPS) || bytes.Equal(p, sifH264IDR) {
		return true
	}
	// Opus silence: f8 ff fe and 77 zero bytes.
	if len(p) != 80 || p[0] != 0xf8 || p[1] != 0xff || p[2] != 0xfe {
		return false
	}
	for _, b := range p[3:] {
		if b != 0 {
			return false
		}
	}
	return true
}
