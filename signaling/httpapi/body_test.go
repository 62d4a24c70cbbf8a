package httpapi

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/icebox-voip/icebox/signaling"
)

// TestDecodeJSONStrict: what encoding/json accepts silently — keys that
// match a field only case-insensitively, invalid UTF-8 and lone surrogate
// escapes (both turned into U+FFFD) — is refused, naming the field.
func TestDecodeJSONStrict(t *testing.T) {
	type wsAnswer struct {
		wsCommand
		signaling.AnswerRequest
	}
	tests := []struct {
		name     string
		body     string
		into     func() any
		wantCode string // "" = accepted
		wantMsg  string
	}{
		{"exact keys", `{"sdp_answer":"v=0 é ✓ \ud83d\ude00","party_id":"p1"}`, func() any { return &signaling.AnswerRequest{} }, "", ""},
		{"key in another case", `{"SDP_answer":"v=0"}`, func() any { return &signaling.AnswerRequest{} },
			"unknown_field", `unknown field "SDP_answer" (names are case-sensitive)`},
		{"key in another case beside the exact one", `{"sdp_answer":"v=0","Sdp_Answer":"v=1"}`, func() any { return &signaling.AnswerRequest{} },
			"unknown_field", `unknown field "Sdp_Answer" (names are case-sensitive)`},
		{"unknown key", `{"sdp_anwser":"v=0"}`, func() any { return &signaling.AnswerRequest{} },
			"unknown_field", `unknown field "sdp_anwser"`},
		{"nested key in another case", `{"description":{"type":"offer","SDP":"v=0"}}`, func() any { return &signaling.NegotiateRequest{} },
			"unknown_field", `unknown field "description.SDP" (names are case-sensitive)`},
		{"key of a list item in another case", `{"candidates":[{"candidate":"a"},{"Candidate":"b"}]}`, func() any { return &signaling.CandidatesRequest{} },
			"unknown_field", `unknown field "candidates[1].Candidate" (names are case-sensitive)`},
		{"embedded field names", `{"type":"answer","ref":"1","call_id":"c","sdp_answer":"v=0"}`, func() any { return &wsAnswer{} }, "", ""},
		{"embedded field in another case", `{"type":"answer","Call_ID":"c","sdp_answer":"v=0"}`, func() any { return &wsAnswer{} },
			"unknown_field", `unknown field "Call_ID" (names are case-sensitive)`},
		{"invalid UTF-8 in an SDP", "{\"sdp_answer\":\"v=0 \xff\xfe\"}", func() any { return &signaling.AnswerRequest{} },
			"invalid_request", "sdp_answer is not valid UTF-8"},
		{"invalid UTF-8 in a nested SDP", "{\"description\":{\"type\":\"offer\",\"sdp\":\"v=0\xc3\"}}", func() any { return &signaling.NegotiateRequest{} },
			"invalid_request", "description.sdp is not valid UTF-8"},
		{"invalid UTF-8 in a candidate", "{\"candidates\":[{\"candidate\":\"ok\"},{\"candidate\":\"\xed\xa0\x80\"}]}", func() any { return &signaling.CandidatesRequest{} },
			"invalid_request", "candidates[1].candidate is not valid UTF-8"},
		{"lone high surrogate escape", `{"sdp_answer":"v=0 \ud800 x"}`, func() any { return &signaling.AnswerRequest{} },
			"invalid_request", "sdp_answer is not valid UTF-8"},
		{"lone high surrogate escape at the end", `{"sdp_answer":"\ud800"}`, func() any { return &signaling.AnswerRequest{} },
			"invalid_request", "sdp_answer is not valid UTF-8"},
		{"lone low surrogate escape", `{"sdp_answer":"\udc00v=0"}`, func() any { return &signaling.AnswerRequest{} },
			"invalid_request", "sdp_answer is not valid UTF-8"},
		{"high surrogate then a non-surrogate", `{"sdp_answer":"\ud83d\u0041"}`, func() any { return &signaling.AnswerRequest{} },
			"invalid_request", "sdp_answer is not valid UTF-8"},
		{"escaped backslash before u is no escape", `{"sdp_answer":"a\\udc00"}`, func() any { return &signaling.AnswerRequest{} }, "", ""},
		{"U+FFFD sent as such is kept", `{"sdp_answer":"v=0 ` + "\uFFFD" + `"}`, func() any { return &signaling.AnswerRequest{} }, "", ""},
		{"invalid UTF-8 in a key", "{\"sdp_answer\":\"v=0\",\"\xff\":1}", func() any { return &signaling.AnswerRequest{} },
			"unknown_field", `unknown field`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := decodeJSON([]byte(tt.body), tt.into())
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("decodeJSON: %v, want nil", err)
				}
				return
			}
			var ae *Error
			if !errors.As(err, &ae) {
				t.Fatalf("decodeJSON: %v, want an *Error", err)
			}
			if ae.Status != http.StatusBadRequest || ae.Code != tt.wantCode || !strings.Contains(ae.Message, tt.wantMsg) {
				t.Errorf("got %d %s %q, want 400 %s %q", ae.Status, ae.Code, ae.Message, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

// TestStrictBodiesOverHTTP: the same refusals through the API, and nothing
// stored for them.
func TestStrictBodiesOverHTTP(t *testing.T) {
	e := newAPIEnv(t)
	for _, tt := range []struct {
		name, body, want string
	}{
		{"invalid UTF-8 in the offer", "{\"conversation_id\":\"c1\",\"sdp_offer\":\"v=0 \xff\"}", `"sdp_offer is not valid UTF-8"`},
		{"lone surrogate in the offer", `{"conversation_id":"c1","sdp_offer":"v=0 \udfff"}`, `"sdp_offer is not valid UTF-8"`},
		{"field name in another case", `{"conversation_id":"c1","SDP_OFFER":"v=0"}`, `"unknown field \"SDP_OFFER\" (names are case-sensitive)"`},
	} {
		body := e.mustDo(t, userToken("alice"), "POST", "/calls/initiate", tt.body, http.StatusBadRequest)
		if !strings.Contains(string(body), tt.want) {
			t.Errorf("%s: %s, want %s", tt.name, body, tt.want)
		}
	}
	if body := e.mustDo(t, userToken("alice"), "GET", "/calls?conversation_id=c1", "", http.StatusOK); !strings.Contains(string(body), `"calls":[]`) {
		t.Errorf("calls after refused initiations: %s", body)
	}
}

// FuzzDecodeJSON: no input panics, and what is accepted holds only valid
// UTF-8 (nothing was replaced by U+FFFD on the way in).
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []string{
		`{"description":{"type":"offer","sdp":"v=0"},"party_id":"p"}`,
		`{"description":{"type":"offer","SDP":"v=0"}}`,
		`{"description":{"type":"offer","sdp":"\ud83d\ude00 \ud800"}}`,
		"{\"description\":{\"sdp\":\"\xff\"}}",
		`{"description":null,"lifetime_ms":1e3}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req signaling.NegotiateRequest
		if err := decodeJSON(data, &req); err != nil {
			return
		}
		for _, s := range []string{req.Description.Type, req.Description.SDP, req.PartyID} {
			if !utf8.ValidString(s) {
				t.Fatalf("accepted %q: invalid UTF-8 %q", data, s)
			}
			if strings.ContainsRune(s, utf8.RuneError) && !bytes.Contains(data, []byte("\uFFFD")) && !bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`)) {
				t.Fatalf("accepted %q: U+FFFD in %q that the body did not send", data, s)
			}
		}
	})
}
