package framecrypt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

func testRing(t testing.TB, opts Options, index int, key string) *KeyRing {
	t.Helper()
	r, err := NewKeyRing(opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetKey(index, unhex(t, key)); err != nil {
		t.Fatal(err)
	}
	return r
}

const key16 = "000102030405060708090a0b0c0d0e0f"

// TestMakeIV: the third word is timestamp − (count mod 0xffff), wrapping
// below zero as DataView.setUint32 does; a count of 0xffff is 0 again.
func TestMakeIV(t *testing.T) {
	for _, c := range []struct {
		ssrc, ts, count uint32
		want            string
	}{
		{0x11223344, 960, 32767, "11223344000003c0ffff83c1"},
		{1, 100, 0, "000000010000006400000064"},
		{1, 100, 0xffff, "000000010000006400000064"},
		{1, 100, 0x10000, "000000010000006400000063"},
		{0xffffffff, 0xffffffff, 0xfffe, "ffffffffffffffffffff0001"},
	} {
		iv := MakeIV(c.ssrc, c.ts, c.count)
		if got := hex.EncodeToString(iv[:]); got != c.want {
			t.Errorf("MakeIV(%#x, %d, %d) = %s, want %s", c.ssrc, c.ts, c.count, got, c.want)
		}
	}
}

// TestEscapeRBSP: emulation prevention as H.264 7.4.1 (and livekit's
// writeRbsp/parseRbsp) define it, both ways.
func TestEscapeRBSP(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"000003", "00000303"},
		{"000000", "00000300"},
		{"00000000", "0000030000"},
		{"000001", "00000301"},
		{"000004", "000004"},
		{"0000000000", "00000300000300"},
		{"0100020000ff", "0100020000ff"},
	} {
		in := unhex(t, c.in)
		dst := make([]byte, len(in)*2)
		got := dst[:escapeRBSP(dst, in)]
		if hex.EncodeToString(got) != c.want {
			t.Errorf("escape %s = %x, want %s", c.in, got, c.want)
		}
		if back := appendUnescaped(nil, got); !bytes.Equal(back, in) {
			t.Errorf("unescape %x = %x, want %s", got, back, c.in)
		}
	}
}

// TestHeader: the clear header per codec and frame type.
func TestHeader(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
		codec Codec
		key   bool
		want  int
		nalu  bool
	}{
		{"opus", []byte{1, 2, 3}, Opus, false, 1, false},
		{"vp8 key", make([]byte, 20), VP8, true, 10, false},
		{"vp8 delta", make([]byte, 20), VP8, false, 3, false},
		{"vp9", make([]byte, 20), VP9, true, 0, false},
		{"h264 idr after sps", annexB([]byte{0x67, 1, 2}, []byte{0x65, 0x88, 3, 4}), H264, true, 4 + 3 + 3 + 2, true},
		{"h264 non-idr 3-byte start", []byte{0, 0, 1, 0x41, 0x9a, 5, 6, 7}, H264, false, 5, true},
		{"h264 leading data", []byte{9, 0, 0, 1, 0x41, 0x9a, 5, 6, 7}, H264, false, 3, false},
		{"h264 no slice", annexB([]byte{0x67, 1, 2, 3, 4}), H264, true, 10, false},
		{"h264 slice in last 3 bytes", []byte{0, 0, 0, 1, 0x67, 1, 0, 0, 1, 0x41, 0x9a}, H264, false, 3, false},
		{"h265 cra", annexB([]byte{0x40, 1, 2}, []byte{0x2a, 0x01, 3, 4}), H265, true, 4 + 3 + 3 + 2, true},
		{"h265 vps only", annexB([]byte{0x40, 1, 2, 3, 4}), H265, false, 3, false},
		{"tiny", []byte{0, 0}, H264, false, 3, false},
	} {
		n, nalu, err := header(c.frame, c.codec, c.key)
		if err != nil || n != c.want || nalu != c.nalu {
			t.Errorf("%s: header %d nalu %v err %v, want %d %v", c.name, n, nalu, err, c.want, c.nalu)
		}
	}
	for _, c := range []Codec{0, AV1, 99} {
		if _, _, err := header([]byte{1, 2, 3}, c, false); !errors.Is(err, ErrUnsupportedCodec) {
			t.Errorf("%v: %v, want ErrUnsupportedCodec", c, err)
		}
	}
}

// TestDecryptErrors: damaged frames give typed errors and never decrypt.
func TestDecryptErrors(t *testing.T) {
	r := testRing(t, ElementCallOptions(), 2, key16)
	e := NewEncryptor(r)
	e.start = func() uint32 { return 100 } // IV ends 0xffffff9e: the cut below ends in 0xff, an unset index
	plain := append([]byte{0x31, 0x0a, 0x01}, pattern(100, 1)...)
	ct, err := e.Encrypt(nil, plain, VP8, false, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if ct[len(ct)-1] != 2 || ct[len(ct)-2] != IVLength {
		t.Fatalf("trailer %x", ct[len(ct)-2:])
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(ct)) }
	for _, c := range []struct {
		name  string
		frame []byte
		codec Codec
		want  error
	}{
		{"tag", mut(func(b []byte) []byte { b[len(b)-15] ^= 0x80; return b }), VP8, ErrDecrypt},
		{"header", mut(func(b []byte) []byte { b[1] ^= 1; return b }), VP8, ErrDecrypt},
		{"ciphertext", mut(func(b []byte) []byte { b[10] ^= 1; return b }), VP8, ErrDecrypt},
		{"iv", mut(func(b []byte) []byte { b[len(b)-5] ^= 1; return b }), VP8, ErrDecrypt},
		{"iv length", mut(func(b []byte) []byte { b[len(b)-2] = 16; return b }), VP8, ErrBadTrailer},
		{"key index", mut(func(b []byte) []byte { b[len(b)-1] = 9; return b }), VP8, ErrMissingKey},
		{"truncated", append(bytes.Clone(ct[:20]), IVLength, 2), VP8, ErrTooShort},
		{"trailer only", []byte{IVLength, 2}, VP8, ErrTooShort},
		{"truncated keeps index", ct[:len(ct)-5], VP8, ErrMissingKey},
		{"one byte", []byte{2}, VP8, ErrTooShort},
		{"av1", ct, AV1, ErrUnsupportedCodec},
		{"wrong frame type", ct, VP8 /* as key frame below */, ErrDecrypt},
	} {
		key := c.name == "wrong frame type"
		out, err := r.Decrypt(nil, c.frame, c.codec, key)
		if !errors.Is(err, c.want) || out != nil {
			t.Errorf("%s: %x, %v; want %v", c.name, out, err, c.want)
		}
	}
	if out, err := r.Decrypt(nil, ct, VP8, false); err != nil || !bytes.Equal(out, plain) {
		t.Fatalf("intact frame: %v", err)
	}
	if out, err := r.Decrypt([]byte("x"), nil, VP8, false); err != nil || string(out) != "x" {
		t.Fatalf("empty frame: %q %v", out, err)
	}
	if _, err := NewEncryptor(&KeyRing{keys: make([]*Key, 1), failures: make([]int, 1)}).Encrypt(nil, plain, VP8, false, 1, 1); !errors.Is(err, ErrMissingKey) {
		t.Fatalf("encrypt without key: %v", err)
	}
	if _, err := e.Encrypt(nil, []byte{1, 2}, VP8, true, 1, 1); !errors.Is(err, ErrTooShort) {
		t.Fatalf("encrypt 2-byte key frame: %v", err)
	}
}

// TestFailureTolerance: as livekit's ParticipantKeyHandler, a key index
// that failed more than FailureTolerance times drops frames without trying
// (ErrKeyInvalid) until a key is set at that index again.
func TestFailureTolerance(t *testing.T) {
	opts := ElementCallOptions()
	sender := testRing(t, opts, 0, key16)
	receiver := testRing(t, opts, 0, "ffeeddccbbaa99887766554433221100") // not the sender's
	e := NewEncryptor(sender)
	frame, _ := e.Encrypt(nil, []byte{0x78, 1, 2, 3}, Opus, false, 5, 960)
	for i := 0; i <= opts.FailureTolerance; i++ {
		if _, err := receiver.Decrypt(nil, frame, Opus, false); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("attempt %d: %v, want ErrDecrypt", i, err)
		}
	}
	if _, err := receiver.Decrypt(nil, frame, Opus, false); !errors.Is(err, ErrKeyInvalid) {
		t.Fatalf("after %d failures: %v, want ErrKeyInvalid", opts.FailureTolerance+1, err)
	}
	if err := receiver.SetKey(0, unhex(t, key16)); err != nil {
		t.Fatal(err)
	}
	if out, err := receiver.Decrypt(nil, frame, Opus, false); err != nil || !bytes.Equal(out, []byte{0x78, 1, 2, 3}) {
		t.Fatalf("after the right key: %x %v", out, err)
	}
	// A negative tolerance never marks a key invalid.
	opts.FailureTolerance = -1
	opts.RatchetWindowSize = 0
	never := testRing(t, opts, 0, "ffeeddccbbaa99887766554433221100")
	for i := 0; i < 30; i++ {
		if _, err := never.Decrypt(nil, frame, Opus, false); !errors.Is(err, ErrDecrypt) {
			t.Fatalf("tolerance -1, attempt %d: %v", i, err)
		}
	}
}

// TestRatchetWindow: a sender that ratcheted its key n times is followed
// by a receiver with window ≥ n, not by one with a smaller window.
func TestRatchetWindow(t *testing.T) {
	opts := ElementCallOptions()
	k, err := NewKey(unhex(t, key16), opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if k, _, err = k.Ratchet(); err != nil {
			t.Fatal(err)
		}
	}
	sender, _ := NewKeyRing(opts, nil)
	sender.Set(1, k)
	frame, _ := NewEncryptor(sender).Encrypt(nil, []byte{0x78, 9}, Opus, false, 1, 1)
	opts.RatchetWindowSize = 2
	if _, err := testRing(t, opts, 1, key16).Decrypt(nil, frame, Opus, false); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("window 2 for 3 ratchets: %v", err)
	}
	opts.RatchetWindowSize = 3
	if out, err := testRing(t, opts, 1, key16).Decrypt(nil, frame, Opus, false); err != nil || !bytes.Equal(out, []byte{0x78, 9}) {
		t.Fatalf("window 3: %x %v", out, err)
	}
}

// TestServerInjectedFrames: with the room's SIF trailer, livekit-server's
// blank frames pass without the trailer, other frames ending in it are
// refused, and frames without it decrypt as usual.
func TestServerInjectedFrames(t *testing.T) {
	sif := []byte("sif-trailer!")
	r, _ := NewKeyRing(ElementCallOptions(), sif)
	_ = r.SetKey(0, unhex(t, key16))
	silence := append([]byte{0xf8, 0xff, 0xfe}, make([]byte, 77)...)
	for _, p := range [][]byte{silence, sifVP8KeyFrame8x8, sifH264SPS, sifH264PPS, sifH264IDR} {
		out, err := r.Decrypt(nil, append(bytes.Clone(p), sif...), VP8, true)
		if err != nil || !bytes.Equal(out, p) {
			t.Errorf("SIF %x: %x %v", p, out, err)
		}
	}
	if _, err := r.Decrypt(nil, append([]byte{0xf8, 0xff, 0xfe, 1}, sif...), Opus, false); !errors.Is(err, ErrUnexpectedSIF) {
		t.Errorf("unknown SIF payload: %v", err)
	}
	frame, _ := NewEncryptor(r).Encrypt(nil, []byte{0x78, 1}, Opus, false, 1, 1)
	if out, err := r.Decrypt(nil, frame, Opus, false); err != nil || !bytes.Equal(out, []byte{0x78, 1}) {
		t.Errorf("encrypted frame with SIF configured: %x %v", out, err)
	}
}

// TestOptions: livekit's bounds on key ring size and key size.
func TestOptions(t *testing.T) {
	for _, mod := range []func(*Options){
		func(o *Options) { o.KeyRingSize = 0 },
		func(o *Options) { o.KeyRingSize = 257 },
		func(o *Options) { o.KeySize = 24 },
		func(o *Options) { o.RatchetWindowSize = -1 },
	} {
		o := ElementCallOptions()
		mod(&o)
		if _, err := NewKeyRing(o, nil); !errors.Is(err, ErrBadKey) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if _, err := NewKey(nil, ElementCallOptions()); !errors.Is(err, ErrBadKey) {
		t.Errorf("empty material: %v", err)
	}
	// A ring of 16 takes index 17 as 1, as livekit's modulo does.
	o := ElementCallOptions()
	o.KeyRingSize = 16
	r := testRing(t, o, 17, key16)
	if idx, k := r.Current(); idx != 1 || k == nil {
		t.Errorf("index 17 in a ring of 16: current %d", idx)
	}
	// A frame naming index 17 finds no key: livekit does not wrap on lookup.
	f17, _ := r.keys[1].Seal(nil, []byte{0x78, 1}, Opus, false, MakeIV(1, 1, 1), 17)
	if _, err := r.Decrypt(nil, f17, Opus, false); !errors.Is(err, ErrMissingKey) {
		t.Errorf("index 17 in a ring of 16: %v, want ErrMissingKey", err)
	}
	// Put without current keeps encrypting with the old index.
	k2, _ := NewKey([]byte("next key"), o)
	r.Put(2, k2, false)
	if idx, k := r.Current(); idx != 1 || k == k2 {
		t.Errorf("after Put(2, current=false): current %d", idx)
	}
	r.Put(2, k2, true)
	if idx, k := r.Current(); idx != 2 || k != k2 {
		t.Errorf("after Put(2, current=true): current %d", idx)
	}
}

// TestPassphraseKey: 256-bit keys and PBKDF2 passphrase keys round-trip
// and differ from HKDF keys of the same bytes.
func TestPassphraseKey(t *testing.T) {
	o := ElementCallOptions()
	o.KeySize = 32
	pk, err := NewPassphraseKey("correct horse", o)
	if err != nil {
		t.Fatal(err)
	}
	hk, _ := NewKey([]byte("correct horse"), o)
	iv := MakeIV(1, 2, 3)
	ct, err := pk.Seal(nil, []byte{0x78, 1, 2, 3}, Opus, false, iv, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hk.Open(nil, ct, Opus, false); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("HKDF key opened a PBKDF2 frame: %v", err)
	}
	if out, err := pk.Open(nil, ct, Opus, false); err != nil || !bytes.Equal(out, []byte{0x78, 1, 2, 3}) {
		t.Fatalf("open: %x %v", out, err)
	}
	next, _, err := pk.Ratchet()
	if err != nil || next.kdf != kdfPBKDF2 {
		t.Fatalf("ratchet keeps PBKDF2: %v", err)
	}
}

// TestNoSteadyStateAllocations: with a reused destination buffer,
// encrypting and decrypting allocates nothing, H.264 escaping included.
func TestNoSteadyStateAllocations(t *testing.T) {
	r := testRing(t, ElementCallOptions(), 0, key16)
	e := NewEncryptor(r)
	for _, f := range goFrames() {
		enc := make([]byte, 0, 4096)
		dec := make([]byte, 0, 4096)
		ct, err := e.Encrypt(enc, f.data, f.codec, f.key, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		ct = bytes.Clone(ct)
		ts := uint32(1)
		if n := testing.AllocsPerRun(50, func() {
			ts += 960
			if _, err := e.Encrypt(enc, f.data, f.codec, f.key, 1, ts); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: encrypt allocates %.1f times", f.name, n)
		}
		if n := testing.AllocsPerRun(50, func() {
			if _, err := r.Decrypt(dec, ct, f.codec, f.key); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: decrypt allocates %.1f times", f.name, n)
		}
	}
}

// TestEncryptAppends: Encrypt and Decrypt append to dst, as AEAD.Seal does.
func TestEncryptAppends(t *testing.T) {
	r := testRing(t, ElementCallOptions(), 0, key16)
	e := NewEncryptor(r)
	for _, f := range goFrames() {
		ct, err := e.Encrypt([]byte("prefix"), f.data, f.codec, f.key, 1, 1)
		if err != nil || string(ct[:6]) != "prefix" {
			t.Fatalf("%s: %v", f.name, err)
		}
		pt, err := r.Decrypt([]byte("pre"), ct[6:], f.codec, f.key)
		if err != nil || string(pt[:3]) != "pre" || !bytes.Equal(pt[3:], f.data) {
			t.Fatalf("%s: %x %v", f.name, pt, err)
		}
	}
}

// findNALUIndicesRef is livekit's findNALUIndices + findSliceNALUUnencryptedBytes
// transcribed literally (all indexes first, leading data an error), the
// reference for firstSliceHeader's early exits.
func findNALUIndicesRef(s []byte, codec Codec) (int, bool) {
	var result []int
	start, pos, search := 0, 0, len(s)-3
	for pos < search {
		for pos < search {
			if pos < search-1 && s[pos] == 0 && s[pos+1] == 0 && s[pos+2] == 0 && s[pos+3] == 1 {
				break
			}
			if s[pos] == 0 && s[pos+1] == 0 && s[pos+2] == 1 {
				break
			}
			pos++
		}
		if pos >= search {
			pos = len(s)
		}
		end := pos
		for end > start && s[end-1] == 0 {
			end--
		}
		if start == 0 {
			if end != start {
				return 0, false
			}
		} else {
			result = append(result, start)
		}
		scl := 3
		if pos < len(s)-3 && s[pos] == 0 && s[pos+1] == 0 && s[pos+2] == 0 && s[pos+3] == 1 {
			scl = 4
		}
		start = pos + scl
		pos = start
	}
	for _, i := range result {
		if isSlice(s[i], codec) {
			return i + 2, true
		}
	}
	return 0, false
}

// TestFirstSliceHeaderMatchesLiveKit: on many generated byte streams of
// start codes, zero runs and NAL headers, the early-exit scan agrees with
// the literal transcription.
func TestFirstSliceHeaderMatchesLiveKit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := [][]byte{{0, 0, 1}, {0, 0, 0, 1}, {0}, {0, 0}, {0x65}, {0x41}, {0x67}, {0x68}, {0x09}, {0x26, 0x01}, {0x40}, {0x2a}, {7, 8, 9}, {3}, {1}}
	for i := 0; i < 50000; i++ {
		var s []byte
		if rng.IntN(4) > 0 {
			s = append(s, 0, 0, 0, 1)
		}
		for n := rng.IntN(12); n > 0; n-- {
			s = append(s, tokens[rng.IntN(len(tokens))]...)
		}
		for _, c := range []Codec{H264, H265} {
			gn, gok := firstSliceHeader(s, c)
			wn, wok := findNALUIndicesRef(s, c)
			if gn != wn || gok != wok {
				t.Fatalf("%v %x: %d %v, livekit %d %v", c, s, gn, gok, wn, wok)
			}
		}
	}
}

// TestConcurrentKeyChanges: decrypting and encrypting on several goroutines
// while keys are set and rotated is race-free (run with -race) and every
// frame either decrypts to its plaintext or fails with a typed error.
func TestConcurrentKeyChanges(t *testing.T) {
	r := testRing(t, ElementCallOptions(), 0, key16)
	frames := make([][]byte, 0, 8)
	e := NewEncryptor(r)
	for i := 0; i < 8; i++ {
		ct, err := e.Encrypt(nil, []byte{0x78, byte(i), 1, 2, 3}, Opus, false, 1, uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, ct)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]byte, 0, 64)
			enc := NewEncryptor(r)
			for i := 0; i < 300; i++ {
				f := frames[i%len(frames)]
				out, err := r.Decrypt(dst, f, Opus, false)
				if err == nil && (len(out) != 5 || out[1] != byte(i%len(frames))) {
					t.Errorf("decrypted %x", out)
					return
				}
				if err != nil && !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrKeyInvalid) && !errors.Is(err, ErrMissingKey) {
					t.Errorf("untyped %v", err)
					return
				}
				if _, err := enc.Encrypt(dst, []byte{0x78, 1}, Opus, false, 2, uint32(i)); err != nil {
					t.Errorf("encrypt: %v", err)
					return
				}
			}
		}()
	}
	for i := 0; i < 50; i++ {
		if err := r.SetKey(i%3, []byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.SetKey(0, unhex(t, key16)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
