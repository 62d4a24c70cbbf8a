package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestConversationCallProtocol: the admin API stores, returns and
// validates a conversation's call_protocol, keeps it when a PUT leaves it
// out, clears it with "", and shows the protocol the next call would use.
func TestConversationCallProtocol(t *testing.T) {
	e := newAPIEnv(t)
	type view struct {
		CallProtocol string `json:"call_protocol"`
		Resolved     struct {
			Protocol, Setting, Source, Reason string
		} `json:"call_protocol_resolved"`
	}
	read := func(body []byte) view {
		t.Helper()
		var v view
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// The default (legacy) with no setting of its own.
	v := read(e.mustDo(t, adminToken, "GET", "/admin/conversations/c1", "", http.StatusOK))
	if v.CallProtocol != "" || v.Resolved.Protocol != "legacy" || v.Resolved.Source != "default" || v.Resolved.Setting != "legacy" {
		t.Fatalf("default view = %+v", v)
	}
	v = read(e.mustDo(t, adminToken, "PUT", "/admin/conversations/c1", `{"participants":["alice","bob"],"call_protocol":"matrixrtc"}`, http.StatusOK))
	if v.CallProtocol != "matrixrtc" || v.Resolved.Protocol != "matrixrtc" || v.Resolved.Source != "conversation" {
		t.Fatalf("PUT matrixrtc view = %+v", v)
	}
	// Left out: kept (stored, read back).
	e.mustDo(t, adminToken, "PUT", "/admin/conversations/c1", `{"participants":["alice","bob","carol"]}`, http.StatusOK)
	v = read(e.mustDo(t, adminToken, "GET", "/admin/conversations/c1", "", http.StatusOK))
	if v.CallProtocol != "matrixrtc" {
		t.Fatalf("after a PUT without call_protocol: %+v", v)
	}
	// auto without a Matrix room: legacy, saying why.
	v = read(e.mustDo(t, adminToken, "PUT", "/admin/conversations/c1", `{"participants":["alice","bob"],"call_protocol":"auto"}`, http.StatusOK))
	if v.CallProtocol != "auto" || v.Resolved.Protocol != "legacy" || v.Resolved.Reason != "no_room" {
		t.Fatalf("PUT auto view = %+v", v)
	}
	// "" clears it.
	v = read(e.mustDo(t, adminToken, "PUT", "/admin/conversations/c1", `{"participants":["alice","bob"],"call_protocol":""}`, http.StatusOK))
	if v.CallProtocol != "" || v.Resolved.Source != "default" {
		t.Fatalf("PUT \"\" view = %+v", v)
	}
	for bad, want := range map[string]string{`"MatrixRTC"`: "invalid_request", `"webrtc"`: "invalid_request",
		`7`: "field call_protocol: expected string", `["auto"]`: "field call_protocol: expected string"} {
		code, body := e.do(t, adminToken, "PUT", "/admin/conversations/c1", []byte(`{"participants":["alice"],"call_protocol":`+bad+`}`))
		if code != http.StatusBadRequest || !strings.Contains(string(body), want) {
			t.Errorf("call_protocol %s: %d %s, want 400 %s", bad, code, body, want)
		}
	}
	code, body := e.do(t, adminToken, "PUT", "/admin/conversations/c1", []byte(`{"participants":["alice"],"call_protocol":"webrtc"}`))
	if code != http.StatusBadRequest || !strings.Contains(string(body), "call_protocol must be one of legacy, matrixrtc, auto") {
		t.Errorf("bad value: %d %s, want a message naming the values", code, body)
	}
	// Nothing of the refused PUTs was stored.
	v = read(e.mustDo(t, adminToken, "GET", "/admin/conversations/c1", "", http.StatusOK))
	if v.CallProtocol != "" {
		t.Fatalf("after refused PUTs: %+v", v)
	}
}
