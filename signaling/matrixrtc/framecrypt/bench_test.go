package framecrypt

import (
	"testing"
)

// BenchmarkEncrypt/Decrypt: one frame per op with reused buffers, the
// gateway's steady state (Element Call's options, a 16-byte key).
func BenchmarkEncrypt(b *testing.B) {
	for _, c := range benchFrames() {
		b.Run(c.name, func(b *testing.B) {
			r := testRing(b, ElementCallOptions(), 0, key16)
			e := NewEncryptor(r)
			dst := make([]byte, 0, 2048)
			b.SetBytes(int64(len(c.data)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := e.Encrypt(dst, c.data, c.codec, c.key, 1, uint32(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecrypt(b *testing.B) {
	for _, c := range benchFrames() {
		b.Run(c.name, func(b *testing.B) {
			r := testRing(b, ElementCallOptions(), 0, key16)
			ct, err := NewEncryptor(r).Encrypt(nil, c.data, c.codec, c.key, 1, 1)
			if err != nil {
				b.Fatal(err)
			}
			dst := make([]byte, 0, 2048)
			b.SetBytes(int64(len(c.data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.Decrypt(dst, ct, c.codec, c.key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchFrames() []goFrame {
	return []goFrame{
		{"opus-100", Opus, false, append([]byte{0x78}, pattern(99, 1)...)},
		{"vp8-delta-1000", VP8, false, append([]byte{0x31, 0x0a, 0x01}, pattern(997, 3)...)},
		{"h264-delta-1000", H264, false, annexB(append([]byte{0x41, 0x9a}, pattern(993, 6)...))},
	}
}
