package framecrypt

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Codec is the media codec of a frame, which decides its clear header.
type Codec uint8

// Codecs. The zero value is no codec and is refused.
const (
	Opus Codec = iota + 1
	VP8
	VP9
	H264
	H265
	AV1
)

func (c Codec) String() string {
	switch c {
	case Opus:
		return "opus"
	case VP8:
		return "vp8"
	case VP9:
		return "vp9"
	case H264:
		return "h264"
	case H265:
		return "h265"
	case AV1:
		return "av1"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// livekit's UNENCRYPTED_BYTES: VP8 keeps its frame tag (3 bytes) and on key
// frames the start code and dimensions too (10); audio keeps Opus' TOC byte.
const (
	vp8KeyHeader   = 10
	vp8DeltaHeader = 3
	audioHeader    = 1
)

// IsVP8KeyFrame reports whether a VP8 frame is a key frame, as WebRTC
// decides frame.type: bit 0 of the frame tag is clear on key frames.
func IsVP8KeyFrame(frame []byte) bool { return len(frame) > 0 && frame[0]&0x01 == 0 }

// header returns how many leading bytes stay in clear and whether the rest
// is escaped with emulation prevention bytes (livekit's
// getUnencryptedBytes). keyFrame is WebRTC's frame.type == "key"; for
// H.264/H.265 frames livekit cannot parse (no Annex B start code first, no
// slice NAL unit) it falls back to VP8's sizes, as here.
func header(frame []byte, codec Codec, keyFrame bool) (int, bool, error) {
	vp8 := vp8DeltaHeader
	if keyFrame {
		vp8 = vp8KeyHeader
	}
	switch codec {
	case Opus:
		return audioHeader, false, nil
	case VP8:
		return vp8, false, nil
	case VP9:
		return 0, false, nil
	case H264, H265:
		if n, ok := firstSliceHeader(frame, codec); ok {
			return n, true, nil
		}
		return vp8, false, nil
	}
	return 0, false, fmt.Errorf("%w: %v", ErrUnsupportedCodec, codec)
}

// firstSliceHeader is livekit's processNALUsForEncryption for a known
// codec: the Annex B stream's NAL units are scanned (findNALUIndices, with
// its quirks: a NAL unit starting in the last 3 bytes is not seen, data
// before the first start code is an error) and the clear part ends two
// bytes into the first slice NAL unit. It stops at the first slice instead
// of collecting all indexes, and looks at a NAL unit's type when it starts
// rather than when its end is found (the end scan would not change the
// outcome: once the loop is entered the unit is collected), so a frame
// whose slice comes first is not scanned to its end.
func firstSliceHeader(s []byte, codec Codec) (int, bool) {
	n := len(s)
	search := n - 3
	start, pos := 0, 0
	for pos < search {
		if start > 0 && isSlice(s[start], codec) {
			return start + 2, true
		}
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
			pos = n
		}
		if start == 0 {
			end := pos
			for end > start && s[end-1] == 0 {
				end--
			}
			if end != start {
				return 0, false // "byte stream contains leading data"
			}
		}
		scl := 3
		if pos < n-3 && s[pos] == 0 && s[pos+1] == 0 && s[pos+2] == 0 && s[pos+3] == 1 {
			scl = 4
		}
		pos += scl
		start = pos
	}
	return 0, false // "Could not find NALU"
}

func isSlice(b byte, codec Codec) bool {
	if codec == H265 {
		t := (b >> 1) & 0x3f
		return t <= 9 || (t >= 16 && t <= 21)
	}
	t := b & 0x1f
	return t == 1 || t == 5
}

// MakeIV builds livekit's IV: SSRC, RTP timestamp and timestamp minus the
// send count modulo 0xffff, each a big-endian uint32 (wrapping as
// DataView.setUint32 does).
func MakeIV(ssrc, rtpTimestamp, sendCount uint32) [IVLength]byte {
	var iv [IVLength]byte
	binary.BigEndian.PutUint32(iv[0:], ssrc)
	binary.BigEndian.PutUint32(iv[4:], rtpTimestamp)
	binary.BigEndian.PutUint32(iv[8:], rtpTimestamp-sendCount%0xffff)
	return iv
}

// Seal appends the encrypted form of frame to dst and returns it: the
// codec's header in clear, the AES-GCM ciphertext of the rest with the
// header as additional data, the IV and the trailer (IV length, keyIndex),
// escaped after the header for H.264/H.265. An empty frame stays empty
// (livekit passes DTX frames through). dst must not overlap frame.
func (k *Key) Seal(dst, frame []byte, codec Codec, keyFrame bool, iv [IVLength]byte, keyIndex uint8) ([]byte, error) {
	if len(frame) == 0 {
		return dst, nil
	}
	h, nalu, err := header(frame, codec, keyFrame)
	if err != nil {
		return dst, fmt.Errorf("framecrypt: seal: %w", err)
	}
	if h > len(frame) {
		return dst, fmt.Errorf("framecrypt: seal: %w: %d bytes, %v header is %d", ErrTooShort, len(frame), codec, h)
	}
	body := len(frame) - h + tagLength + IVLength + trailerLength
	// For H.264/H.265 the sealed body is written after room for the worst
	// case escaping (one byte per two), then escaped forward into place:
	// the write position never passes the read position.
	slack := 0
	if nalu {
		slack = body/2 + 1
	}
	base := len(dst)
	out := grow(dst, h+slack+body)
	copy(out[base:], frame[:h])
	sealAt := base + h + slack
	// The IV goes to its place first and is the nonce from there: a slice
	// of the local array would escape to the heap through the interface.
	ivAt := sealAt + len(frame) - h + tagLength
	copy(out[ivAt:], iv[:])
	out[ivAt+IVLength] = IVLength
	out[ivAt+IVLength+1] = keyIndex
	k.aead.Seal(out[sealAt:sealAt], out[ivAt:ivAt+IVLength], frame[h:], frame[:h])
	if !nalu {
		return out, nil
	}
	w := escapeRBSP(out[base+h:], out[sealAt:sealAt+body])
	return out[:base+h+w], nil
}

// escapeRBSP is livekit's writeRbsp: after two zero bytes, a byte ≤ 3 gets
// an emulation prevention byte (3) before it. It writes src to dst and
// returns the length written; dst may start before src in the same array
// if it leaves room for the inserted bytes.
func escapeRBSP(dst, src []byte) int {
	w, zeros := 0, 0
	for i := 0; i < len(src); {
		if zeros < 2 {
			// Runs without a zero byte need no escape: copy them whole
			// (copy is a memmove, safe for the overlap).
			j := bytes.IndexByte(src[i:], 0)
			if j < 0 {
				j = len(src) - i
			}
			if j > 0 {
				w += copy(dst[w:], src[i:i+j])
				i += j
				zeros = 0
				continue
			}
		}
		b := src[i]
		if b <= 3 && zeros >= 2 {
			dst[w] = 3
			w++
			zeros = 0
		}
		dst[w] = b
		w++
		i++
		if b == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return w
}

var emulationPrevention = []byte{0, 0, 3}

// needsUnescape is livekit's needsRbspUnescaping, with its loop bound (a
// 00 00 03 ending on the last byte does not count).
func needsUnescape(s []byte) bool {
	return len(s) >= 4 && bytes.Index(s[:len(s)-1], emulationPrevention) >= 0
}

// appendUnescaped is livekit's parseRbsp: 00 00 03 becomes 00 00.
func appendUnescaped(dst, s []byte) []byte {
	for {
		j := bytes.Index(s, emulationPrevention)
		if j < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:j+2]...)
		s = s[j+3:]
	}
}

// FrameKeyIndex returns the key index in an encrypted frame's trailer.
func FrameKeyIndex(frame []byte) (uint8, error) {
	if len(frame) == 0 {
		return 0, fmt.Errorf("framecrypt: key index: %w", ErrTooShort)
	}
	return frame[len(frame)-1], nil
}

// Open appends the decrypted form of an encrypted frame to dst and returns
// it, checking the tag with this key whatever key index the trailer names.
// An empty frame stays empty. dst must not overlap frame.
func (k *Key) Open(dst, frame []byte, codec Codec, keyFrame bool) ([]byte, error) {
	if len(frame) == 0 {
		return dst, nil
	}
	h, nalu, err := header(frame, codec, keyFrame)
	if err != nil {
		return dst, fmt.Errorf("framecrypt: open: %w", err)
	}
	if h > len(frame) {
		return dst, fmt.Errorf("framecrypt: open: %w: %d bytes, %v header is %d", ErrTooShort, len(frame), codec, h)
	}
	base := len(dst)
	out := append(dst, frame[:h]...)
	if nalu && needsUnescape(frame[h:]) {
		out = appendUnescaped(out, frame[h:])
	} else {
		out = append(out, frame[h:]...)
	}
	return k.openAt(out, base, h)
}

// openAt decrypts in place the frame copied (and unescaped) to out[base:]
// with its h header bytes, returning out[:base+plaintext].
func (k *Key) openAt(out []byte, base, h int) ([]byte, error) {
	f := out[base:]
	if len(f) < h+tagLength+IVLength+trailerLength {
		return out[:base], fmt.Errorf("framecrypt: open: %w: %d bytes after unescaping, need %d", ErrTooShort, len(f), h+tagLength+IVLength+trailerLength)
	}
	if n := f[len(f)-2]; n != IVLength {
		return out[:base], fmt.Errorf("framecrypt: open: %w: IV length %d", ErrBadTrailer, n)
	}
	// The plaintext (and, on failure, the cleared output) ends before the
	// IV, so the IV is read in place.
	ivAt := len(f) - trailerLength - IVLength
	pt, err := k.aead.Open(f[h:h], f[ivAt:ivAt+IVLength], f[h:ivAt], f[:h])
	if err != nil {
		return out[:base], fmt.Errorf("framecrypt: open: %w", ErrDecrypt)
	}
	return out[:base+h+len(pt)], nil
}

// grow extends b by n bytes, reallocating only when its capacity is short.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*len(b)+n)
	copy(nb, b)
	return nb
}
