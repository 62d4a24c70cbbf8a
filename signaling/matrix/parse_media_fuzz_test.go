package matrix

import (
	"encoding/json"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
)

// FuzzParseNegotiateAndMedia: a negotiate, a metadata change or an invite
// with media is either refused or accepted in a shape the service takes:
// a description of type offer or answer with an SDP, identifiers of the
// spec's grammar, metadata and capabilities that are JSON objects.
func FuzzParseNegotiateAndMedia(f *testing.F) {
	f.Add(TypeNegotiate, `{"call_id":"c1","party_id":"p","version":"1","lifetime":60000,"description":{"type":"offer","sdp":"v=0"},"sdp_stream_metadata":{"s":{"purpose":"m.usermedia"}}}`)
	f.Add(TypeNegotiate, `{"call_id":"a.b~c","party_id":"p","description":{"type":"answer","sdp":"v=0"}}`)
	f.Add(TypeStreamMetadataChanged, `{"call_id":"c1","party_id":"p","sdp_stream_metadata":{"s":{"purpose":"m.screenshare","audio_muted":true}}}`)
	f.Add(TypeInvite, `{"call_id":"c1","party_id":"p","lifetime":60000,"offer":{"sdp":"x"},"capabilities":{"m.call.dtmf":false},"sdp_stream_metadata":null}`)
	f.Add(TypeCandidates, `{"call_id":"c1","party_id":"p","candidates":[{"candidate":"","usernameFragment":"u"}]}`)
	f.Fuzz(func(t *testing.T, typ, content string) {
		c, err := parseCallContent(typ, []byte(content))
		if err != nil {
			return
		}
		if !signaling.ValidCallID(c.CallID) || (c.PartyID != "" && !signaling.ValidCallID(c.PartyID)) {
			t.Fatalf("accepted identifiers %q, %q", c.CallID, c.PartyID)
		}
		for name, raw := range map[string]json.RawMessage{"metadata": c.Media.StreamMetadata, "capabilities": c.Media.Capabilities} {
			var m map[string]any
			if raw != nil && json.Unmarshal(raw, &m) != nil {
				t.Fatalf("accepted %s that is not an object: %s", name, raw)
			}
		}
		switch typ {
		case TypeNegotiate:
			if (c.Description.Type != "offer" && c.Description.Type != "answer") || c.Description.SDP == "" {
				t.Fatalf("negotiate accepted with description %+v", c.Description)
			}
		case TypeStreamMetadataChanged:
			if c.Media.StreamMetadata == nil {
				t.Fatal("metadata change accepted without metadata")
			}
		}
	})
}
