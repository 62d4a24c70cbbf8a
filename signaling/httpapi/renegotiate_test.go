package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Renegotiation, stream metadata and whole candidates over both transports:
// REST routes and WebSocket commands of the same operations, and the events
// the other participant's socket receives.

// readEvent reads c until a message of type typ and returns it (events
// and replies of other types are skipped).
func readEvent(t *testing.T, c *websocket.Conn, typ string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if m := readMsg(t, c); m["type"] == typ {
			return m
		}
	}
	t.Fatalf("no %s within 5s", typ)
	return nil
}

// command sends a WebSocket command and returns its reply or error message.
func command(t *testing.T, c *websocket.Conn, ref, msg string) map[string]any {
	t.Helper()
	writeText(t, c, `{"ref":"`+ref+`",`+strings.TrimPrefix(msg, "{"))
	for {
		m := readMsg(t, c)
		if (m["type"] == "reply" || m["type"] == "error") && m["ref"] == ref {
			return m
		}
	}
}

func errorCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func asJSON(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRenegotiationOverRESTAndWebSocket: alice calls bob with metadata and
// capabilities; both reach bob unchanged, and his back to her. Then bob's
// negotiate offer (a WebSocket command) reaches alice as CallNegotiate and
// her answer (REST) reaches him; a second answer is 409 no_offer on both
// transports; crossing offers follow the glare rule (the callee yields,
// 409 negotiation_glare); metadata_changed goes both ways as
// CallStreamMetadataChanged; candidates keep every field; after the hangup
// a negotiate is 409 call_ended.
func TestRenegotiationOverRESTAndWebSocket(t *testing.T) {
	e := newAPIEnv(t)
	alice, _, err := e.dialWS(t, userToken("alice"))
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := e.dialWS(t, userToken("bob"))
	if err != nil {
		t.Fatal(err)
	}
	// Accept returns before the hub registers a connection: an event
	// published in between is not bob's (failed once on a loaded machine).
	waitFor(t, 5*time.Second, func() bool { return e.hub.Connections() == 2 }, "alice's and bob's connections registered")
	md := `{"as":{"purpose":"m.usermedia","audio_muted":false,"video_muted":true,"x-vendor":1}}`
	caps := `{"m.call.transferee":false,"m.call.dtmf":true}`
	reply := command(t, alice, "i", `{"type":"initiate","conversation_id":"c1","sdp_offer":"v=0 offer","sdp_stream_metadata":`+md+`,"capabilities":`+caps+`}`)
	if reply["type"] != "reply" {
		t.Fatalf("initiate: %v", reply)
	}
	id := reply["result"].(map[string]any)["id"].(string)
	inv := readEvent(t, bob, "CallInvite")
	if !reflect.DeepEqual(inv["sdp_stream_metadata"], asJSON(t, md)) || !reflect.DeepEqual(inv["capabilities"], asJSON(t, caps)) {
		t.Errorf("CallInvite media = %v, %v", inv["sdp_stream_metadata"], inv["capabilities"])
	}
	bmd := `{"bs":{"purpose":"m.screenshare","audio_muted":true,"video_muted":false}}`
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+id+"/answer", `{"sdp_answer":"v=0 answer","sdp_stream_metadata":`+bmd+`}`, http.StatusOK)
	if ans := readEvent(t, alice, "CallAnswer"); !reflect.DeepEqual(ans["sdp_stream_metadata"], asJSON(t, bmd)) {
		t.Errorf("CallAnswer metadata = %v", ans["sdp_stream_metadata"])
	}

	// bob (the callee) offers over the WebSocket; alice answers over REST.
	if r := command(t, bob, "n1", `{"type":"negotiate","call_id":"`+id+`","description":{"type":"offer","sdp":"v=0 hold"},"sdp_stream_metadata":`+bmd+`}`); r["type"] != "reply" {
		t.Fatalf("negotiate offer: %v", r)
	}
	neg := readEvent(t, alice, "CallNegotiate")
	if d, _ := neg["description"].(map[string]any); d["type"] != "offer" || d["sdp"] != "v=0 hold" || neg["participant_id"] != "bob" ||
		!reflect.DeepEqual(neg["sdp_stream_metadata"], asJSON(t, bmd)) {
		t.Errorf("CallNegotiate = %v", neg)
	}
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+id+"/negotiate", `{"description":{"type":"answer","sdp":"v=0 ok"}}`, http.StatusNoContent)
	if d, _ := readEvent(t, bob, "CallNegotiate")["description"].(map[string]any); d["type"] != "answer" || d["sdp"] != "v=0 ok" {
		t.Errorf("bob got the answer %v", d)
	}
	body := e.mustDo(t, userToken("alice"), "POST", "/calls/"+id+"/negotiate", `{"description":{"type":"answer","sdp":"v=0 ok"}}`, http.StatusConflict)
	if !strings.Contains(string(body), `"no_offer"`) {
		t.Errorf("second answer over REST: %s", body)
	}
	if r := command(t, alice, "n2", `{"type":"negotiate","call_id":"`+id+`","description":{"type":"answer","sdp":"v=0"}}`); errorCode(r) != "no_offer" {
		t.Errorf("second answer over the WebSocket: %v", r)
	}

	// Glare: bob offers, alice (the caller) crosses it and wins, bob's next
	// offer is refused until he answers.
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+id+"/negotiate", `{"description":{"type":"offer","sdp":"v=0 b"}}`, http.StatusNoContent)
	if r := command(t, alice, "g1", `{"type":"negotiate","call_id":"`+id+`","description":{"type":"offer","sdp":"v=0 a"}}`); r["type"] != "reply" {
		t.Fatalf("the caller's crossing offer: %v", r)
	}
	body = e.mustDo(t, userToken("bob"), "POST", "/calls/"+id+"/negotiate", `{"description":{"type":"offer","sdp":"v=0 b2"}}`, http.StatusConflict)
	if !strings.Contains(string(body), `"negotiation_glare"`) {
		t.Errorf("the callee's crossing offer: %s", body)
	}
	if r := command(t, bob, "g2", `{"type":"negotiate","call_id":"`+id+`","description":{"type":"answer","sdp":"v=0 b answers"}}`); r["type"] != "reply" {
		t.Fatalf("the callee's answer: %v", r)
	}

	// metadata_changed both ways.
	muted := `{"as":{"purpose":"m.usermedia","audio_muted":true,"video_muted":true}}`
	e.mustDo(t, userToken("alice"), "POST", "/calls/"+id+"/metadata_changed", `{"sdp_stream_metadata":`+muted+`}`, http.StatusNoContent)
	if mc := readEvent(t, bob, "CallStreamMetadataChanged"); !reflect.DeepEqual(mc["sdp_stream_metadata"], asJSON(t, muted)) || mc["participant_id"] != "alice" {
		t.Errorf("CallStreamMetadataChanged = %v", mc)
	}
	if r := command(t, bob, "m1", `{"type":"metadata_changed","call_id":"`+id+`","sdp_stream_metadata":`+bmd+`}`); r["type"] != "reply" {
		t.Fatalf("metadata_changed command: %v", r)
	}
	readEvent(t, alice, "CallStreamMetadataChanged")

	// Candidates keep every field, the end of candidates too.
	cands := `[{"candidate":"candidate:1 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"uf2"},{"candidate":"","sdpMid":"0","usernameFragment":"uf2"}]`
	if r := command(t, alice, "c1", `{"type":"candidates","call_id":"`+id+`","candidates":`+cands+`}`); r["type"] != "reply" {
		t.Fatalf("candidates: %v", r)
	}
	if got := readEvent(t, bob, "CallCandidates"); !reflect.DeepEqual(got["candidates"], asJSON(t, cands)) {
		t.Errorf("CallCandidates candidates = %v", got["candidates"])
	}

	e.mustDo(t, userToken("alice"), "POST", "/calls/"+id+"/hangup", ``, http.StatusOK)
	body = e.mustDo(t, userToken("bob"), "POST", "/calls/"+id+"/negotiate", `{"description":{"type":"offer","sdp":"v=0"}}`, http.StatusConflict)
	if !strings.Contains(string(body), `"call_ended"`) {
		t.Errorf("negotiate on an ended call over REST: %s", body)
	}
	if r := command(t, bob, "e1", `{"type":"negotiate","call_id":"`+id+`","description":{"type":"offer","sdp":"v=0"}}`); errorCode(r) != "call_ended" {
		t.Errorf("negotiate on an ended call over the WebSocket: %v", r)
	}
}

// TestRenegotiationBadInput: every malformed negotiate, metadata and
// identifier is a 400 with a code, the same over REST and the WebSocket,
// and changes nothing (no event reaches the other side, no offer is left
// pending).
func TestRenegotiationBadInput(t *testing.T) {
	e := newAPIEnv(t)
	c := e.initiate(t)
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+c.ID+"/answer", `{"sdp_answer":"v=0 answer"}`, http.StatusOK)
	alice, _, err := e.dialWS(t, userToken("alice"))
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := e.dialWS(t, userToken("bob"))
	if err != nil {
		t.Fatal(err)
	}
	bigSDP := strings.Repeat("a", 64<<10+1)
	for _, tc := range []struct {
		name, op, body, code string
	}{
		{"description not an object", "negotiate", `"description":"v=0"`, "invalid_json"},
		{"description of type pranswer", "negotiate", `"description":{"type":"pranswer","sdp":"v=0"}`, "invalid_request"},
		{"description without sdp", "negotiate", `"description":{"type":"offer"}`, "invalid_request"},
		{"sdp over 64 KiB", "negotiate", `"description":{"type":"offer","sdp":"` + bigSDP + `"}`, "invalid_request"},
		{"unknown description field", "negotiate", `"description":{"type":"offer","sdp":"v=0","x":1}`, "unknown_field"},
		{"metadata an array", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"sdp_stream_metadata":["a"]`, "invalid_request"},
		{"metadata a string", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"sdp_stream_metadata":"a"`, "invalid_request"},
		{"a stream not an object", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"sdp_stream_metadata":{"s":true}`, "invalid_request"},
		{"unknown purpose", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"sdp_stream_metadata":{"s":{"purpose":"m.other"}}`, "invalid_request"},
		{"capabilities not an object", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"capabilities":true`, "invalid_request"},
		{"lifetime out of range", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"lifetime_ms":1`, "invalid_request"},
		{"party_id outside the grammar", "negotiate", `"description":{"type":"offer","sdp":"v=0"},"party_id":"a b"`, "invalid_request"},
		{"metadata_changed without metadata", "metadata_changed", `"party_id":"p"`, "invalid_request"},
		{"metadata_changed with null", "metadata_changed", `"sdp_stream_metadata":null`, "invalid_request"},
		{"metadata_changed, muted a string", "metadata_changed", `"sdp_stream_metadata":{"s":{"purpose":"m.usermedia","audio_muted":"yes"}}`, "invalid_request"},
		{"metadata_changed, unknown field", "metadata_changed", `"sdp_stream_metadata":{},"muted":true`, "unknown_field"},
		{"control character in the sdp", "negotiate", `"description":{"type":"offer","sdp":"v=0\r\na=x\u0001y\r\n"}`, "invalid_request"},
		{"control character in a candidate", "candidates", `"candidates":[{"candidate":"candidate:1 1 udp 1 198.51.100.1 9 typ host\u001b"}]`, "invalid_request"},
		{"control character in a usernameFragment", "candidates", `"candidates":[{"candidate":"c","usernameFragment":"a\u0000"}]`, "invalid_request"},
		{"usernameFragment a number", "candidates", `"candidates":[{"candidate":"c","usernameFragment":5}]`, "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(t, userToken("alice"), "POST", "/calls/"+c.ID+"/"+tc.op, []byte("{"+tc.body+"}"))
			var got struct {
				Error Error `json:"error"`
			}
			_ = json.Unmarshal(body, &got)
			if code != http.StatusBadRequest || got.Error.Code != tc.code {
				t.Errorf("REST: %d %s, want 400 %s", code, body, tc.code)
			}
			r := command(t, alice, "x", `{"type":"`+tc.op+`","call_id":"`+c.ID+`",`+tc.body+`}`)
			if errorCode(r) != tc.code {
				t.Errorf("WebSocket: %v, want %s", r, tc.code)
			}
		})
	}
	// A call ID outside the grammar is a 400 too, on every call route.
	for path, req := range map[string]string{
		"/calls/a%20b/negotiate":                                   `{"description":{"type":"offer","sdp":"v=0"}}`,
		"/calls/" + strings.Repeat("a", 256) + "/metadata_changed": `{"sdp_stream_metadata":{}}`,
	} {
		code, body := e.do(t, userToken("alice"), "POST", path, []byte(req))
		if code != http.StatusBadRequest || !strings.Contains(string(body), "invalid_request") {
			t.Errorf("POST %s: %d %s, want 400 invalid_request", path[:min(len(path), 40)], code, body)
		}
	}
	expectNothing(t, "bob after refused requests", bob, 300*time.Millisecond)
	stored, err := e.store.Call(context.Background(), c.ID)
	if err != nil || stored.OfferParty != "" {
		t.Fatalf("after refused negotiates the call has a pending offer of %q (%v)", stored.OfferParty, err)
	}
}
