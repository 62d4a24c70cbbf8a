package httpapi

import (
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
)

// TestCallViewMedia: GET /calls/{id} returns the latest
// sdp_stream_metadata and capabilities of each side — from the invite and
// the answer, replaced by a negotiate's and a metadata change's, a field
// an event lacks keeping the one before; a refused change leaves them;
// the listing (GET /calls) leaves them out like the SDPs.
func TestCallViewMedia(t *testing.T) {
	e := newAPIEnv(t)
	md := `{"as":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true,"x-vendor":1}}`
	caps := `{"m.call.transferee":false,"m.call.dtmf":false}`
	var c callResponse
	if err := json.Unmarshal(e.mustDo(t, userToken("alice"), "POST", "/calls/initiate",
		`{"conversation_id":"c1","sdp_offer":"v=0 offer","sdp_stream_metadata":`+md+`,"capabilities":`+caps+`}`, http.StatusCreated), &c); err != nil {
		t.Fatal(err)
	}
	type side struct{ md, caps string } // "" is absent
	check := func(step string, caller, answerer side) {
		t.Helper()
		var v map[string]any
		if err := json.Unmarshal(e.mustDo(t, userToken("bob"), "GET", "/calls/"+c.ID, "", http.StatusOK), &v); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]side{"caller_media": caller, "answerer_media": answerer} {
			got, _ := v[name].(map[string]any)
			if want == (side{}) {
				if _, present := v[name]; present {
					t.Errorf("%s: %s = %v, want absent", step, name, v[name])
				}
				continue
			}
			for field, w := range map[string]string{"sdp_stream_metadata": want.md, "capabilities": want.caps} {
				var wv any
				if w != "" {
					wv = asJSON(t, w)
				}
				if !reflect.DeepEqual(got[field], wv) {
					t.Errorf("%s: %s.%s = %v, want %s", step, name, field, got[field], w)
				}
			}
		}
	}
	check("after the invite", side{md, caps}, side{})

	bmd := `{"bs":{"purpose":"m.usermedia","audio_muted":false,"video_muted":false}}`
	bcaps := `{"m.call.transferee":true}`
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+c.ID+"/answer", `{"sdp_answer":"v=0 answer","sdp_stream_metadata":`+bmd+`,"capabilities":`+bcaps+`}`, http.StatusOK)
	check("after the answer", side{md, caps}, side{bmd, bcaps})

	held := `{"bs":{"purpose":"m.usermedia","audio_muted":false,"video_muted":false},"bscreen":{"purpose":"m.screenshare"}}`
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+c.ID+"/negotiate", `{"description":{"type":"offer","sdp":"v=0 b"},"sdp_stream_metadata":`+held+`}`, http.StatusNoContent)
	check("after bob's negotiate", side{md, caps}, side{held, bcaps})

	muted := `{"as":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}`
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+c.ID+"/metadata_changed", `{"sdp_stream_metadata":`+muted+`}`, http.StatusNoContent)
	check("after alice's metadata change", side{muted, caps}, side{held, bcaps})

	e.mustDo(t, userToken("alice"), "POST", "/calls/"+c.ID+"/metadata_changed", `{"sdp_stream_metadata":{"as":{"purpose":"m.other"}}}`, http.StatusBadRequest)
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+c.ID+"/negotiate", `{"description":{"type":"answer","sdp":"v=0 a"},"sdp_stream_metadata":[]}`, http.StatusBadRequest)
	check("after refused changes", side{muted, caps}, side{held, bcaps})

	var list struct {
		Calls []map[string]any `json:"calls"`
	}
	if err := json.Unmarshal(e.mustDo(t, userToken("alice"), "GET", "/calls?conversation_id=c1", "", http.StatusOK), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Calls) != 1 || list.Calls[0]["caller_media"] != nil || list.Calls[0]["answerer_media"] != nil {
		t.Errorf("GET /calls = %v; want the call without its media", list.Calls)
	}

	e.mustDo(t, userToken("alice"), "POST", "/calls/"+c.ID+"/hangup", ``, http.StatusOK)
	check("after the hangup", side{muted, caps}, side{held, bcaps})
}
