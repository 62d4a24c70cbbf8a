package httpapi

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// opOutcome is what one call operation answered, over either transport:
// an error's code and message, or the reply's keys and status.
type opOutcome struct {
	Code, Message string
	Keys          []string // the reply's top-level keys
	Status        string   // the reply's "status"
}

func outcomeOf(t *testing.T, body []byte) opOutcome {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("reply %s: %v", body, err)
	}
	if raw, ok := m["error"]; ok && len(m) == 1 {
		var e Error
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		return opOutcome{Code: e.Code, Message: e.Message}
	}
	var o opOutcome
	o.Keys = slices.Sorted(maps.Keys(m))
	_ = json.Unmarshal(m["status"], &o.Status) // absent: ""
	return o
}

// commandServer is a second Server over cfg (an apiEnv's), whose command
// method runs WebSocket commands without a socket.
func commandServer(t *testing.T, cfg *Config) *Server {
	t.Helper()
	c := *cfg
	c.Registerer = nil // the env's server registered the metrics
	s, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCallOpsSameOverRESTAndWebSocket runs the same calls over REST and as
// WebSocket commands, one operation at a time, and compares what they
// answer: the same errors, the same replies (REST's 204 is the command's
// {"status":"sent"}; select_answer, reject, hangup and get reply over the
// WebSocket without the "matrix" block, which is empty here anyway).
func TestCallOpsSameOverRESTAndWebSocket(t *testing.T) {
	var cfg *Config
	e := newAPIEnvWith(t, func(c *Config, _ *store.Store) { cfg = c })
	ws := commandServer(t, cfg)
	bobParty := signaling.PartyIDFor("bob")
	steps := []struct {
		op, user, body string // body: the request's fields, without call_id
		status         int    // REST status
	}{
		{"initiate", "alice", `"conversation_id":"c1","sdp_offer":"v=0 offer"`, 201},
		{"answer", "carol", `"sdp_answer":"v=0 answer"`, 403},
		{"answer", "bob", `"sdp_answer":"v=0 answer","sdp":"x"`, 400},
		{"answer", "bob", `"sdp_answer":5`, 400},
		{"negotiate", "alice", `"description":{"type":"offer","sdp":"v=0"}`, 409},
		{"candidates", "alice", `"candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}]`, 204},
		{"answer", "bob", `"sdp_answer":"v=0 answer"`, 200},
		{"answer", "bob", `"sdp_answer":"v=0 answer"`, 409},
		{"select_answer", "bob", `"selected_party_id":"` + bobParty + `"`, 403},
		{"select_answer", "alice", `"selected_party_id":"` + bobParty + `"`, 200},
		{"negotiate", "bob", `"description":{"type":"offer","sdp":"v=0 reoffer"}`, 204},
		{"negotiate", "alice", `"description":{"type":"answer","sdp":"v=0"}`, 204},
		{"negotiate", "alice", `"description":{"type":"answer","sdp":"v=0"}`, 409},
		{"metadata_changed", "bob", `"sdp_stream_metadata":{"s1":{"purpose":"m.usermedia","audio_muted":true}}`, 204},
		{"metadata_changed", "bob", `"sdp_stream_metadata":["s1"]`, 400},
		{"get", "alice", ``, 200},
		{"get", "carol", ``, 403},
		{"reject", "bob", ``, 409},
		{"hangup", "alice", `"reason":"NOT valid"`, 400},
		{"hangup", "alice", ``, 200},
		{"hangup", "bob", ``, 409},
	}
	var restID, wsID string
	for i, st := range steps {
		// REST
		path := "/calls/" + restID + "/" + st.op
		method := http.MethodPost
		switch st.op {
		case "initiate":
			path = "/calls/initiate"
		case "get":
			path, method = "/calls/"+restID, http.MethodGet
		}
		var body []byte
		if st.body != "" {
			body = []byte("{" + st.body + "}")
		}
		code, got := e.do(t, userToken(st.user), method, path, body)
		if code != st.status {
			t.Fatalf("step %d: %s %s as %s: %d %s, want %d", i, method, path, st.user, code, got, st.status)
		}
		rest := opOutcome{Keys: []string{"status"}, Status: "sent"}
		if code != http.StatusNoContent {
			rest = outcomeOf(t, got)
		}
		if st.op == "initiate" {
			var c struct{ ID string }
			_ = json.Unmarshal(got, &c)
			restID = c.ID
		}

		// WebSocket command
		msg := `{"type":"` + st.op + `","ref":"r","call_id":"` + wsID + `"`
		if st.body != "" {
			msg += "," + st.body
		}
		result, err := ws.command(t.Context(), st.user, json.RawMessage(msg+"}"))
		var cmd opOutcome
		if err != nil {
			ae := asAPIError(err)
			if ae.Status != st.status {
				t.Errorf("step %d: command %s: status %d, REST %d", i, msg, ae.Status, st.status)
			}
			cmd = opOutcome{Code: ae.Code, Message: ae.Message}
		} else {
			raw, err := encodeMessage(result)
			if err != nil {
				t.Fatal(err)
			}
			cmd = outcomeOf(t, raw)
			if st.op == "initiate" {
				wsID = result.(callResponse).ID
			}
		}
		// Messages that name a call name a different one.
		cmd.Message = strings.ReplaceAll(cmd.Message, wsID, restID)
		// Kept as it was: a command's type error names the field through
		// the embedded request type (decodeCommand), REST's does not.
		cmd.Message = strings.Replace(cmd.Message, "field AnswerRequest.", "field ", 1)
		if !slices.Equal(rest.Keys, cmd.Keys) || rest.Status != cmd.Status || rest.Code != cmd.Code || rest.Message != cmd.Message {
			t.Errorf("step %d (%s as %s):\nREST    %+v\ncommand %+v", i, st.op, st.user, rest, cmd)
		}
	}

	_, err := ws.command(t.Context(), "alice", json.RawMessage(`{"type":"dial"}`))
	if ae := asAPIError(err); ae.Code != "unknown_command" ||
		ae.Message != "type must be one of initiate, answer, candidates, select_answer, negotiate, metadata_changed, reject, hangup, get" {
		t.Errorf("unknown command: %+v", ae)
	}
}

// TestCallOpsRefusedWhileDraining: a draining server starts no call, over
// either transport, and goes on serving those that live.
func TestCallOpsRefusedWhileDraining(t *testing.T) {
	var cfg *Config
	var draining atomic.Bool
	e := newAPIEnvWith(t, func(c *Config, _ *store.Store) {
		c.Draining = draining.Load
		cfg = c
	})
	ws := commandServer(t, cfg)
	live := e.initiate(t)
	draining.Store(true)
	code, body := e.do(t, userToken("alice"), "POST", "/calls/initiate", []byte(`{"conversation_id":"c1","sdp_offer":"v=0"}`))
	if got := outcomeOf(t, body); code != http.StatusServiceUnavailable || got.Code != "draining" {
		t.Errorf("REST initiate while draining: %d %s", code, body)
	}
	_, err := ws.command(t.Context(), "alice", json.RawMessage(`{"type":"initiate","conversation_id":"c1","sdp_offer":"v=0"}`))
	if ae := asAPIError(err); ae.Status != http.StatusServiceUnavailable || ae.Code != "draining" {
		t.Errorf("command initiate while draining: %+v", ae)
	}
	if _, err := ws.command(t.Context(), "bob", json.RawMessage(`{"type":"answer","call_id":"`+live.ID+`","sdp_answer":"v=0"}`)); err != nil {
		t.Errorf("answering a live call while draining: %v", err)
	}
}
