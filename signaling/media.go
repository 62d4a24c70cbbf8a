package signaling

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// Stream metadata and capabilities: what Matrix VoIP clients say about the
// streams of an SDP (sdp_stream_metadata: stream id → purpose and mute
// flags) and about themselves (capabilities). icebox checks their shape and
// carries them as received, between its own clients and Matrix, in both
// directions: a field it does not know is passed on, not dropped.

// Stream purposes (sdp_stream_metadata's purpose).
const (
	PurposeUserMedia   = "m.usermedia"
	PurposeScreenShare = "m.screenshare"
)

// Bounds on the media fields: a call has a handful of streams, and a
// Matrix event is at most 64 KiB with the SDP beside them.
const (
	maxMediaBytes = 8 << 10
	maxStreams    = 32
	maxStreamID   = 255
)

// Media is what an invite, answer, negotiate or metadata change says about
// its streams and its sender, as JSON objects carried unchanged; nil when
// absent.
type Media struct {
	// StreamMetadata is sdp_stream_metadata: {"<stream id>": {"purpose":
	// "m.usermedia"|"m.screenshare", "audio_muted": bool, "video_muted":
	// bool}, …}.
	StreamMetadata json.RawMessage `json:"sdp_stream_metadata,omitempty"`
	// Capabilities is capabilities, e.g. {"m.call.transferee": false,
	// "m.call.dtmf": false}.
	Capabilities json.RawMessage `json:"capabilities,omitempty"`
}

// keepMedia records m as the latest media of the side that sent it: the
// caller's party or the chosen answer's. Another party (a device still
// ringing) is carried to the others but not kept: it is no side yet.
func keepMedia(c *Call, user, party string, m Media) {
	var side *Media
	switch {
	case isCaller(c, user, party):
		side = &c.CallerMedia
	case isAnswerer(c, user, party):
		side = &c.AnswererMedia
	default:
		return
	}
	if m.StreamMetadata != nil {
		side.StreamMetadata = m.StreamMetadata
	}
	if m.Capabilities != nil {
		side.Capabilities = m.Capabilities
	}
}

// StreamMetadataEntry is one stream's metadata, the fields icebox checks.
type StreamMetadataEntry struct {
	Purpose    string `json:"purpose"`
	AudioMuted *bool  `json:"audio_muted,omitempty"`
	VideoMuted *bool  `json:"video_muted,omitempty"`
}

// checkMedia returns m with JSON null read as absent, or ErrInvalid saying
// which field is wrong (field names as the API writes them).
func checkMedia(m Media) (Media, error) {
	var err error
	if m.StreamMetadata, err = checkStreamMetadata(m.StreamMetadata, false); err != nil {
		return Media{}, err
	}
	if m.Capabilities, err = checkObject("capabilities", m.Capabilities); err != nil {
		return Media{}, err
	}
	return m, nil
}

// CheckStreamMetadata checks the shape of sdp_stream_metadata: an object
// of at most 32 streams, each an object whose purpose is m.usermedia or
// m.screenshare and whose audio_muted and video_muted, when present, are
// booleans. Other fields are allowed (and carried). required refuses an
// absent or null value.
func CheckStreamMetadata(raw json.RawMessage, required bool) (json.RawMessage, error) {
	return checkStreamMetadata(raw, required)
}

func checkStreamMetadata(raw json.RawMessage, required bool) (json.RawMessage, error) {
	raw, err := checkObject("sdp_stream_metadata", raw)
	switch {
	case err != nil:
		return nil, err
	case raw == nil && required:
		return nil, invalidf("sdp_stream_metadata is required")
	case raw == nil:
		return nil, nil
	}
	var streams map[string]json.RawMessage
	if err := json.Unmarshal(raw, &streams); err != nil {
		return nil, invalidf("sdp_stream_metadata must be a JSON object")
	}
	if len(streams) > maxStreams {
		return nil, invalidf("sdp_stream_metadata holds more than %d streams", maxStreams)
	}
	for id, v := range streams {
		if id == "" || len(id) > maxStreamID {
			return nil, invalidf("sdp_stream_metadata: a stream id must be 1-%d bytes", maxStreamID)
		}
		if _, err := checkObject("sdp_stream_metadata."+id, v); err != nil || v == nil || isNull(v) {
			return nil, invalidf("sdp_stream_metadata: each stream's metadata must be a JSON object")
		}
		var e StreamMetadataEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, invalidf("sdp_stream_metadata: purpose must be a string, audio_muted and video_muted booleans")
		}
		if e.Purpose != PurposeUserMedia && e.Purpose != PurposeScreenShare {
			return nil, invalidf(`sdp_stream_metadata: purpose must be "m.usermedia" or "m.screenshare"`)
		}
	}
	return raw, nil
}

// checkObject checks raw is a JSON object (or absent: nil, null) of at most
// maxMediaBytes, valid UTF-8; null comes back as nil.
func checkObject(field string, raw json.RawMessage) (json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || isNull(raw):
		return nil, nil
	case len(raw) > maxMediaBytes:
		return nil, invalidf("%s is larger than %d bytes", field, maxMediaBytes)
	case raw[0] != '{' || !json.Valid(raw) || !utf8.Valid(raw):
		return nil, invalidf("%s must be a JSON object", field)
	}
	return raw, nil
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }
