// Package e2ee keeps the media keys of icebox's MatrixRTC gateway legs and
// encrypts and decrypts their frames with them, as Element Call does with
// matrix-js-sdk 43's RTCEncryptionManager and livekit-client's frame
// encryption:
//
//   - Each Session (one per room icebox's device takes part in) owns
//     icebox's own media key for that room: 16 random bytes, key index 0
//     first, sent to every member on Start and used at once.
//   - A member who joins gets the current key if it is younger than the
//     grace period (10 s); otherwise the key is rotated. A member who leaves
//     always rotates it. Rotating makes a new random key at the next index
//     (modulo 256), sends it to the members (the leaver excluded) and starts
//     encrypting with it only after the use delay (1 s), so that receivers
//     have it when the first frame under it arrives; until then frames go
//     out under the previous key, which receivers keep at its own index.
//   - The members' keys (Registry.RTCKey, from the Matrix bridge) go into a
//     framecrypt.KeyRing per member device, addressed by the frame's key
//     index, under the device's LiveKit identity ("<user>:<device>"). A key
//     arriving for a room before icebox opened its Session, or from a device
//     before it is a member, is kept a short, bounded time and count and
//     applied when the Session opens or the member joins (Element Call sends
//     its key as soon as it sees the new membership). A key older (sent_ts)
//     than the one already held at its index is dropped (a reordered
//     delivery after a quick leave and join). A member who leaves is
//     forgotten with its keys.
//   - Session.Transformer is the gateway's FrameTransformer: Outbound
//     encrypts the client's frames with icebox's current key, Inbound
//     decrypts a member's with the key its trailer names. Only Opus, VP8
//     and H.264 are encrypted or decrypted; any other codec is refused (an
//     error: the gateway drops the frame), never passed in clear.
//
// Key material is never logged.
//
// Wiring (node): the registry sends with the Matrix bridge and receives
// from it, so it is given to the bridge after both exist and before Run:
//
//	reg := e2ee.NewRegistry(bridge, e2ee.Config{Logger: log, Registerer: prom})
//	bridge.SetRTCKeys(reg)
//
// and per gateway leg: s := reg.Open(roomID, icebox's device); the leg's
// gateway.Config.Transformer = s.Transformer(); s.Start(ctx, members) once
// the leg joins; s.MemberJoined / s.MemberLeft on membership changes (they
// send to-device messages and wait for the homeserver: not from the
// bridge's sync goroutine); s.Close() when the leg ends.
package e2ee
