// Package framecrypt encrypts and decrypts media frames exactly as
// livekit-client's end-to-end encryption does (version 2.21.0, the one
// Element Call runs), so icebox's MatrixRTC gateway can publish frames that
// Element Call members decrypt and decrypt the frames they publish.
//
// The format, as livekit-client's FrameCryptor writes it:
//
//	frame = header ‖ AES-GCM(key, iv, aad=header, payload) ‖ iv(12) ‖ 12 ‖ keyIndex
//
// The header is the codec's bytes left in clear so the SFU and depacketizers
// keep working: Opus 1 (the TOC byte), VP8 10 on key frames and 3 on delta
// frames, VP9 0, H.264/H.265 everything up to and including the first slice
// NAL unit's first two bytes. For H.264/H.265 the part after the header
// (ciphertext, IV and trailer) is then escaped with emulation prevention
// bytes so it cannot contain a start code. The IV is SSRC ‖ RTP timestamp ‖
// (timestamp − sendCount mod 0xffff), big endian, with a per-SSRC send
// counter that starts at a random value below 0xffff.
//
// Keys are derived from a participant's raw key (Element Call's
// MatrixKeyProvider imports it as HKDF material) with HKDF-SHA256, salt
// "LKFrameEncryptionKey" and 128 zero bytes of info, into an AES-128-GCM
// key; a ratchet step is 32 bytes of the same HKDF, used as the next raw
// key. Each sender has a ring of keys (256 in Element Call) addressed by the
// trailer's key index.
//
// Not implemented: AV1 (livekit-client refuses it too), and livekit's
// optional per-frame metadata ("packet trailer") that a publisher may append
// to video frames, which Element Call does not enable.
package framecrypt
