package matrix

import (
	"encoding/json"
	"strings"

	"github.com/icebox-voip/icebox/signaling"
)

// What icebox says about its clients' streams and abilities when the
// client said nothing. matrix-js-sdk (Element) labels a call's streams by
// sdp_stream_metadata: without it, it logs "did not get any
// SDPStreamMetadata! Can not send/receive multiple streams" and falls back
// to one unlabelled stream. So when an icebox client sends an invite,
// answer or negotiate without metadata, icebox derives it from the SDP:
// every stream id of an a=msid line, purpose m.usermedia, not muted. A
// client that shares a screen or mutes must say so itself (and then its
// metadata is sent as it gave it, unchanged).
//
// Capabilities are sent honestly: icebox does not implement call transfer,
// and DTMF is up to its client, which did not claim it — so an invite or
// answer without capabilities says {"m.call.transferee": false,
// "m.call.dtmf": false}. A client's own capabilities are sent unchanged.

// defaultCapabilities is what an icebox client that sent none can do.
var defaultCapabilities = json.RawMessage(`{"m.call.dtmf":false,"m.call.transferee":false}`)

// withDefaults is m with the metadata derived from sdp when m has none,
// and (capabilities true: invite, answer) the default capabilities when m
// has none.
func withDefaults(m signaling.Media, sdp string, capabilities bool) media {
	out := media{StreamMetadata: m.StreamMetadata, Capabilities: m.Capabilities}
	if len(out.StreamMetadata) == 0 {
		out.StreamMetadata = metadataFromSDP(sdp)
	}
	if len(out.Capabilities) == 0 && capabilities {
		out.Capabilities = defaultCapabilities
	}
	return out
}

// metadataFromSDP derives sdp_stream_metadata from an SDP's a=msid lines
// (RFC 8830: "a=msid:<stream id> [<track id>]"): each stream id, "-" (no
// stream) aside, as m.usermedia, not muted. nil when there is none.
func metadataFromSDP(sdp string) json.RawMessage {
	type entry struct {
		Purpose    string `json:"purpose"`
		AudioMuted bool   `json:"audio_muted"`
		VideoMuted bool   `json:"video_muted"`
	}
	streams := map[string]entry{}
	for line := range strings.Lines(sdp) {
		rest, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), "a=msid:")
		if !ok {
			continue
		}
		id, _, _ := strings.Cut(rest, " ")
		if id == "" || id == "-" || len(id) > 255 || len(streams) >= 32 {
			continue
		}
		streams[id] = entry{Purpose: signaling.PurposeUserMedia}
	}
	if len(streams) == 0 {
		return nil
	}
	raw, err := json.Marshal(streams)
	if err != nil { // cannot happen: strings and booleans
		return nil
	}
	return raw
}
