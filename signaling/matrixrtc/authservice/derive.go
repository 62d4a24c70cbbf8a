package authservice

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

// LegacySlot is the MatrixRTC slot /sfu/get joins: the room's one call
// (application "m.call", call_id ""), as lk-jwt-service fixes it.
const LegacySlot = "m.call#ROOM"

// RoomAlias is the LiveKit room name of a MatrixRTC slot in a Matrix room:
// unpadded standard base64 of SHA-256 over the JSON array [roomID, slotID],
// as lk-jwt-service derives it (so both services meet in the same room).
func RoomAlias(roomID, slotID string) string {
	return hashJSON(roomID, slotID)
}

// Identity is the LiveKit participant identity /get_token gives: unpadded
// standard base64 of SHA-256 over the JSON array [userID, deviceID,
// memberID], as lk-jwt-service derives it.
func Identity(userID, deviceID, memberID string) string {
	return hashJSON(userID, deviceID, memberID)
}

// LegacyIdentity is the identity /sfu/get gives: "userID:deviceID" in clear,
// as lk-jwt-service does for the legacy endpoint.
func LegacyIdentity(userID, deviceID string) string {
	return userID + ":" + deviceID
}

func hashJSON(parts ...string) string {
	// json.Marshal of a []string cannot fail. Its HTML escaping (<, >, &
	// as \u003c…) is what lk-jwt-service hashes too: it marshals the same
	// way.
	b, _ := json.Marshal(parts)
	sum := sha256.Sum256(b)
	return base64.RawStdEncoding.EncodeToString(sum[:])
}
