package authservice

import "encoding/json"

// FociKey is the .well-known/matrix/client key (MSC4143) under which a
// homeserver names the MatrixRTC focus its clients use.
const FociKey = "org.matrix.msc4143.rtc_foci"

// Focus is one entry of the rtc_foci list: a LiveKit SFU reached through
// its authorization service at ServiceURL (https://<host><base_path>).
type Focus struct {
	Type       string `json:"type"` // "livekit"
	ServiceURL string `json:"livekit_service_url"`
}

// WellKnownClient is the fragment of the homeserver's
// .well-known/matrix/client that points Element Call and Element X at the
// service at serviceURL, indented for an operator to merge into the file.
func WellKnownClient(serviceURL string) []byte {
	// Marshalling a map of plain strings cannot fail.
	b, _ := json.MarshalIndent(map[string][]Focus{FociKey: {{Type: "livekit", ServiceURL: serviceURL}}}, "", "  ")
	return append(b, '\n')
}
