package framecrypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/pbkdf2"
	"crypto/sha256"
	"fmt"
	"sync"
)

// livekit-client's constants (src/e2ee/constants.ts).
const (
	// DefaultRatchetSalt is KEY_PROVIDER_DEFAULTS.ratchetSalt, the HKDF and
	// PBKDF2 salt of every key derivation.
	DefaultRatchetSalt = "LKFrameEncryptionKey"
	// IVLength is the AES-GCM IV length livekit writes into every frame.
	IVLength = 12
	// trailerLength: the IV length byte and the key index byte.
	trailerLength = 2
	// tagLength: AES-GCM's 16-byte tag, appended to the ciphertext.
	tagLength = 16
	// hkdfInfoLength: livekit passes new ArrayBuffer(128) as HKDF info.
	hkdfInfoLength = 128
	// chainKeyLength: a ratchet derives 256 bits.
	chainKeyLength = 32
	// pbkdf2Iterations: livekit's PBKDF2 parameters for string passphrases.
	pbkdf2Iterations = 100000
)

// Options are livekit-client's KeyProviderOptions that matter here.
type Options struct {
	// RatchetSalt is the derivation salt; livekit's default is DefaultRatchetSalt.
	RatchetSalt string
	// KeySize is the AES key size in bytes (livekit's keySize/8): 16 or 32.
	KeySize int
	// RatchetWindowSize is how many ratchet steps a failing frame is retried
	// with before it counts as a failure; 0 disables ratcheting.
	RatchetWindowSize int
	// FailureTolerance is how many failures a key index takes before it is
	// marked invalid; negative never marks one invalid.
	FailureTolerance int
	// KeyRingSize is the number of key indexes per sender, 1 to 256.
	KeyRingSize int
}

// ElementCallOptions are the options of Element Call's MatrixKeyProvider:
// livekit's defaults with ratchetWindowSize 10 and keyringSize 256.
func ElementCallOptions() Options {
	return Options{RatchetSalt: DefaultRatchetSalt, KeySize: 16, RatchetWindowSize: 10, FailureTolerance: 10, KeyRingSize: 256}
}

func (o Options) validate() error {
	if o.KeySize != 16 && o.KeySize != 32 {
		return fmt.Errorf("%w: key size %d bytes, want 16 or 32", ErrBadKey, o.KeySize)
	}
	if o.KeyRingSize < 1 || o.KeyRingSize > 256 {
		return fmt.Errorf("%w: key ring size %d, want 1 to 256", ErrBadKey, o.KeyRingSize)
	}
	if o.RatchetWindowSize < 0 {
		return fmt.Errorf("%w: negative ratchet window", ErrBadKey)
	}
	return nil
}

type kdf uint8

const (
	kdfHKDF kdf = iota
	kdfPBKDF2
)

// Key is one frame encryption key: the AES-GCM cipher livekit-client
// derives from a key's material, and the material itself for ratcheting.
// A Key is immutable and safe for concurrent use.
type Key struct {
	kdf      kdf
	material []byte
	salt     string
	keySize  int
	aead     cipher.AEAD

	ratchetOnce sync.Once
	ratcheted   *Key
	ratchetErr  error
}

// NewKey derives the frame key from raw key material as Element Call's
// MatrixKeyProvider and livekit-client do: the material is HKDF input
// (importKey "raw" … "HKDF"), the AES-GCM key HKDF-SHA256(material,
// salt, info = 128 zero bytes).
func NewKey(material []byte, opts Options) (*Key, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("framecrypt: new key: %w", err)
	}
	if len(material) == 0 {
		return nil, fmt.Errorf("framecrypt: new key: %w: empty material", ErrBadKey)
	}
	return newKey(kdfHKDF, material, opts.RatchetSalt, opts.KeySize)
}

// NewPassphraseKey derives the frame key from a string passphrase as
// livekit-client's ExternalE2EEKeyProvider.setKey(string) does: PBKDF2-SHA256,
// 100000 iterations, the ratchet salt.
func NewPassphraseKey(passphrase string, opts Options) (*Key, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("framecrypt: new passphrase key: %w", err)
	}
	return newKey(kdfPBKDF2, []byte(passphrase), opts.RatchetSalt, opts.KeySize)
}

func newKey(alg kdf, material []byte, salt string, keySize int) (*Key, error) {
	raw, err := derive(alg, material, salt, keySize)
	if err != nil {
		return nil, fmt.Errorf("framecrypt: derive key: %w", err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("framecrypt: derive key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("framecrypt: derive key: %w", err)
	}
	return &Key{kdf: alg, material: append([]byte(nil), material...), salt: salt, keySize: keySize, aead: aead}, nil
}

// derive is livekit's getAlgoOptions + deriveKey/deriveBits.
func derive(alg kdf, material []byte, salt string, n int) ([]byte, error) {
	switch alg {
	case kdfPBKDF2:
		return pbkdf2.Key(sha256.New, string(material), []byte(salt), pbkdf2Iterations, n)
	default:
		return hkdf.Key(sha256.New, material, []byte(salt), string(make([]byte, hkdfInfoLength)), n)
	}
}

// Ratchet returns the next key of the ratchet (livekit's ratchet(): 256
// bits derived from the material, imported with the same algorithm) and its
// chain key, the raw material other participants would import. The step is
// computed once per Key.
func (k *Key) Ratchet() (*Key, []byte, error) {
	k.ratchetOnce.Do(func() {
		var chain []byte
		chain, k.ratchetErr = derive(k.kdf, k.material, k.salt, chainKeyLength)
		if k.ratchetErr == nil {
			k.ratcheted, k.ratchetErr = newKey(k.kdf, chain, k.salt, k.keySize)
		}
	})
	if k.ratchetErr != nil {
		return nil, nil, fmt.Errorf("framecrypt: ratchet: %w", k.ratchetErr)
	}
	return k.ratcheted, append([]byte(nil), k.ratcheted.material...), nil
}
