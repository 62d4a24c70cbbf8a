package framecrypt

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecrypt: any frame, codec and frame type gives a plaintext or one of
// the package's errors, never a panic; a frame that decrypts re-encrypts
// with its own IV to the same bytes for non-NAL codecs.
func FuzzDecrypt(f *testing.F) {
	v := loadVectors(f)
	for _, vf := range v.Vectors {
		f.Add(unhex(f, vf.Encrypted), uint8(vf.codec(f)), vf.keyFrame())
	}
	f.Add([]byte{}, uint8(VP8), false)
	f.Add([]byte{0, 0, 1, 0x65, 0, 0, 3, 0x0c, 0}, uint8(H264), true)
	f.Add([]byte{0x0c, 0}, uint8(Opus), false)
	sif := []byte{0xaa, 0xbb}
	var rs []*KeyRing
	for _, k := range v.Keys {
		o := ElementCallOptions()
		o.RatchetWindowSize = 2 // keep iterations fast
		r, err := NewKeyRing(o, sif)
		if err != nil {
			f.Fatal(err)
		}
		if err := r.SetKey(k.Index, unhex(f, k.Key)); err != nil {
			f.Fatal(err)
		}
		rs = append(rs, r)
	}
	known := []error{ErrMissingKey, ErrKeyInvalid, ErrDecrypt, ErrUnsupportedCodec, ErrTooShort, ErrBadTrailer, ErrUnexpectedSIF}
	f.Fuzz(func(t *testing.T, frame []byte, codec uint8, keyFrame bool) {
		for _, r := range rs {
			in := bytes.Clone(frame)
			out, err := r.Decrypt(nil, frame, Codec(codec), keyFrame)
			if !bytes.Equal(in, frame) {
				t.Fatal("Decrypt modified its input")
			}
			if err != nil {
				ok := false
				for _, k := range known {
					ok = ok || errors.Is(err, k)
				}
				if !ok {
					t.Fatalf("untyped error %v", err)
				}
				if out != nil {
					t.Fatalf("error %v with output %x", err, out)
				}
				continue
			}
			// What decrypted re-seals with the frame's IV and index to the
			// frame itself (VP8/VP9/Opus: no escaping to normalize).
			if len(frame) < IVLength+trailerLength || bytes.HasSuffix(frame, sif) || (Codec(codec) != Opus && Codec(codec) != VP8 && Codec(codec) != VP9) {
				continue
			}
			idx := frame[len(frame)-1]
			var iv [IVLength]byte
			copy(iv[:], frame[len(frame)-trailerLength-IVLength:])
			r.mu.Lock()
			k := r.keys[int(idx)%len(r.keys)]
			r.mu.Unlock()
			again, err := k.Seal(nil, out, Codec(codec), keyFrame, iv, idx)
			if err != nil || !bytes.Equal(again, frame) {
				t.Fatalf("re-seal: %v\n %x\nwant\n %x", err, again, frame)
			}
		}
	})
}
