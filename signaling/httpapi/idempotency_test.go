package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// doKey is do with an Idempotency-Key header (none if key is nil); it
// returns the status, the body and the Idempotent-Replayed header.
func (e *apiEnv) doKey(t *testing.T, user, method, path, body string, key *string) (int, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+userToken(user))
	req.Header.Set("Content-Type", "application/json")
	if key != nil {
		req.Header.Set(headerIdempotencyKey, *key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, buf.Bytes(), resp.Header.Get(headerIdempotentReplayed)
}

func keyOf(s string) *string { return &s }

func callOf(t *testing.T, body []byte) callResponse {
	t.Helper()
	var c callResponse
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return c
}

func wantErrorCode(t *testing.T, what string, code int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var e struct {
		Error Error `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	if code != wantStatus || e.Error.Code != wantCode {
		t.Errorf("%s: %d %s, want %d %s", what, code, body, wantStatus, wantCode)
	}
}

// callsIn lists the conversation's calls as user.
func (e *apiEnv) callsIn(t *testing.T, user, conv string) []callView {
	t.Helper()
	var list struct {
		Calls []callView `json:"calls"`
	}
	if err := json.Unmarshal(e.mustDo(t, userToken(user), "GET", "/calls?conversation_id="+conv, "", http.StatusOK), &list); err != nil {
		t.Fatal(err)
	}
	return list.Calls
}

// TestIdempotentRetries: a retry with the key of a request that committed
// is answered from the committed call, with the first answer's status and
// Idempotent-Replayed: true, and changes nothing (one call, not two; an
// answer's retry is not a 409); the same key with another request is 422;
// a key belongs to its user.
func TestIdempotentRetries(t *testing.T) {
	e := newAPIEnv(t)
	const initiate = `{"conversation_id":"c1","sdp_offer":"v=0 offer"}`
	code, body, rp := e.doKey(t, "alice", "POST", "/calls/initiate", initiate, keyOf("k-initiate"))
	if code != http.StatusCreated || rp != "" {
		t.Fatalf("initiate: %d %s (replayed %q)", code, body, rp)
	}
	first := callOf(t, body)
	// The same request, spaced and ordered otherwise: the same request.
	code, body, rp = e.doKey(t, "alice", "POST", "/calls/initiate", `{ "sdp_offer":"v=0 offer", "conversation_id":"c1" }`, keyOf("k-initiate"))
	if code != http.StatusCreated || rp != "true" {
		t.Fatalf("initiate retried: %d %s (replayed %q), want 201 replayed", code, body, rp)
	}
	if again := callOf(t, body); again.ID != first.ID || len(again.ICEServers) == 0 {
		t.Errorf("initiate retried: call %s with %d ICE servers, want %s with its servers", again.ID, len(again.ICEServers), first.ID)
	}
	if calls := e.callsIn(t, "alice", "c1"); len(calls) != 1 {
		t.Fatalf("after a retried initiate: %d calls, want 1", len(calls))
	}

	code, body, _ = e.doKey(t, "alice", "POST", "/calls/initiate", `{"conversation_id":"c1","sdp_offer":"v=0 other"}`, keyOf("k-initiate"))
	wantErrorCode(t, "the key with another body", code, body, http.StatusUnprocessableEntity, "idempotency_key_reused")
	code, body, _ = e.doKey(t, "alice", "POST", "/calls/"+first.ID+"/hangup", ``, keyOf("k-initiate"))
	wantErrorCode(t, "the key with another operation", code, body, http.StatusUnprocessableEntity, "idempotency_key_reused")

	// bob's key of the same name is his own: a new call.
	code, body, rp = e.doKey(t, "bob", "POST", "/calls/initiate", initiate, keyOf("k-initiate"))
	if code != http.StatusCreated || rp != "" || callOf(t, body).ID == first.ID {
		t.Fatalf("bob's initiate with alice's key name: %d %s (replayed %q), want a new call", code, body, rp)
	}
	bobsCall := callOf(t, body).ID
	e.mustDo(t, userToken("bob"), "POST", "/calls/"+bobsCall+"/hangup", ``, http.StatusOK)

	const answer = `{"sdp_answer":"v=0 answer"}`
	for i, want := range []string{"", "true"} {
		code, body, rp = e.doKey(t, "bob", "POST", "/calls/"+first.ID+"/answer", answer, keyOf("k-answer"))
		if c := callOf(t, body); code != http.StatusOK || rp != want || c.Status != signaling.StatusAnswered || len(c.ICEServers) == 0 {
			t.Fatalf("answer #%d: %d %s (replayed %q)", i+1, code, body, rp)
		}
	}
	code, body = e.do(t, userToken("bob"), "POST", "/calls/"+first.ID+"/answer", []byte(answer))
	wantErrorCode(t, "a second answer without the key", code, body, http.StatusConflict, "already_answered")

	for i, want := range []string{"", "true"} {
		code, body, rp = e.doKey(t, "alice", "POST", "/calls/"+first.ID+"/candidates", `{"candidates":[{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0"}]}`, keyOf("k-cand"))
		if code != http.StatusNoContent || rp != want {
			t.Fatalf("candidates #%d: %d %s (replayed %q)", i+1, code, body, rp)
		}
	}
	for i, want := range []string{"", "true"} {
		code, body, rp = e.doKey(t, "alice", "POST", "/calls/"+first.ID+"/hangup", ``, keyOf("k-hangup"))
		if c := callOf(t, body); code != http.StatusOK || rp != want || c.Status != signaling.StatusEnded {
			t.Fatalf("hangup #%d: %d %s (replayed %q)", i+1, code, body, rp)
		}
	}
	code, body = e.do(t, userToken("alice"), "POST", "/calls/"+first.ID+"/hangup", nil)
	wantErrorCode(t, "a second hangup without the key", code, body, http.StatusConflict, "call_ended")
}

// TestIdempotencyKeyBounds: a key is 1-255 printable ASCII characters;
// anything else is 400 invalid_idempotency_key and starts no call.
func TestIdempotencyKeyBounds(t *testing.T) {
	e := newAPIEnv(t)
	const initiate = `{"conversation_id":"c1","sdp_offer":"v=0 offer"}`
	for name, key := range map[string]string{
		"empty": "", "256 characters": strings.Repeat("k", 256), "control character": "a\tb", "not ASCII": "clé",
	} {
		code, body, _ := e.doKey(t, "alice", "POST", "/calls/initiate", initiate, keyOf(key))
		wantErrorCode(t, name, code, body, http.StatusBadRequest, "invalid_idempotency_key")
	}
	req, _ := http.NewRequest("POST", e.srv.URL+"/calls/initiate", strings.NewReader(initiate))
	req.Header.Set("Authorization", "Bearer "+userToken("alice"))
	req.Header.Add(headerIdempotencyKey, "a")
	req.Header.Add(headerIdempotencyKey, "b")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("two Idempotency-Key headers: %d, want 400", resp.StatusCode)
	}
	if calls := e.callsIn(t, "alice", "c1"); len(calls) != 0 {
		t.Errorf("refused keys started %d calls", len(calls))
	}
	code, body, _ := e.doKey(t, "alice", "POST", "/calls/initiate", initiate, keyOf(" ~"+strings.Repeat("x", 253)))
	if code != http.StatusCreated {
		t.Errorf("a 255-character key of printable ASCII: %d %s", code, body)
	}
}

// TestIdempotentConcurrentRetries: eight copies of one keyed initiate sent
// at once make one call, and all eight answer with it.
func TestIdempotentConcurrentRetries(t *testing.T) {
	e := newAPIEnv(t)
	const n = 8
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			code, body, _ := e.doKey(t, "alice", "POST", "/calls/initiate", `{"conversation_id":"c1","sdp_offer":"v=0 offer"}`, keyOf("same"))
			if code != http.StatusCreated {
				t.Errorf("copy %d: %d %s", i, code, body)
				return
			}
			ids[i] = callOf(t, body).ID
		})
	}
	wg.Wait()
	for i := range ids {
		if ids[i] != ids[0] {
			t.Errorf("copy %d answered call %q, copy 0 %q", i, ids[i], ids[0])
		}
	}
	if calls := e.callsIn(t, "alice", "c1"); len(calls) != 1 {
		t.Errorf("%d concurrent copies of one keyed initiate made %d calls, want 1", n, len(calls))
	}
}

// TestIdempotentCommands: the WebSocket command's idempotency_key is the
// same key as the REST header's: a command retried, or retried over REST,
// is answered from the first; an empty key is refused.
func TestIdempotentCommands(t *testing.T) {
	e := newAPIEnv(t)
	ctx := context.Background()
	cmd := `{"type":"initiate","ref":"r1","idempotency_key":"ws-1","conversation_id":"c1","sdp_offer":"v=0 offer"}`
	first, err := e.api.command(ctx, "alice", json.RawMessage(cmd))
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.api.command(ctx, "alice", json.RawMessage(strings.Replace(cmd, `"r1"`, `"r2"`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	id := first.(callResponse).ID
	if again.(callResponse).ID != id {
		t.Errorf("command retried: call %s, want %s", again.(callResponse).ID, id)
	}
	code, body, rp := e.doKey(t, "alice", "POST", "/calls/initiate", `{"conversation_id":"c1","sdp_offer":"v=0 offer"}`, keyOf("ws-1"))
	if code != http.StatusCreated || rp != "true" || callOf(t, body).ID != id {
		t.Errorf("the command's key over REST: %d %s (replayed %q), want call %s replayed", code, body, rp, id)
	}
	_, err = e.api.command(ctx, "alice", json.RawMessage(`{"type":"hangup","call_id":"`+id+`","idempotency_key":""}`))
	if ae := asAPIError(err); ae.Code != "invalid_idempotency_key" {
		t.Errorf("empty idempotency_key: %v, want invalid_idempotency_key", err)
	}
	if calls := e.callsIn(t, "alice", "c1"); len(calls) != 1 || calls[0].Status != signaling.StatusRinging {
		t.Errorf("after the retries: %+v, want one ringing call", calls)
	}
}

// TestIdempotencyKeyCORS: a page of an allowed origin may send the header
// (the preflight allows it) and read Idempotent-Replayed.
func TestIdempotencyKeyCORS(t *testing.T) {
	e := newAPIEnvWith(t, func(c *Config, _ *store.Store) { c.CORSOrigins = []string{allowedOrigin} })
	resp := corsDo(t, e, http.MethodOptions, "/calls/initiate", allowedOrigin, "", map[string]string{
		"Access-Control-Request-Method":  "POST",
		"Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
	})
	if got := resp.Header.Get("Access-Control-Allow-Headers"); resp.StatusCode != http.StatusNoContent || !strings.Contains(got, headerIdempotencyKey) {
		t.Errorf("preflight with Idempotency-Key: %d, Access-Control-Allow-Headers %q", resp.StatusCode, got)
	}
	resp = corsDo(t, e, http.MethodPost, "/calls/initiate", allowedOrigin, userToken("alice"), map[string]string{
		headerIdempotencyKey: "cors-1", "Content-Type": "application/json",
	})
	if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, headerIdempotentReplayed) {
		t.Errorf("Access-Control-Expose-Headers %q, want %s", got, headerIdempotentReplayed)
	}
}

// TestIdempotencyKeyStructuredString: the draft's form of the header, a
// quoted string, is the key inside the quotes (the same key as a command's
// or a bare header's); a malformed one is refused.
func TestIdempotencyKeyStructuredString(t *testing.T) {
	for in, want := range map[string]string{
		`abc`: "abc", `"abc"`: "abc", `"a\"b\\c"`: `a"b\c`, `"8e03978e-40d5-43e8-bc93-6894a57f9324"`: "8e03978e-40d5-43e8-bc93-6894a57f9324",
	} {
		got, err := restIdempotencyKey(http.Header{headerIdempotencyKey: {in}})
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{`"`, `""`, `"abc`, `"a"b"`, `"a\b"`, `"a\"`, "\"a\tb\""} {
		if got, err := restIdempotencyKey(http.Header{headerIdempotencyKey: {in}}); err == nil {
			t.Errorf("%s: %q accepted, want invalid_idempotency_key", in, got)
		}
	}
	e := newAPIEnv(t)
	const initiate = `{"conversation_id":"c1","sdp_offer":"v=0 offer"}`
	_, body, _ := e.doKey(t, "alice", "POST", "/calls/initiate", initiate, keyOf(`"q-1"`))
	code, again, rp := e.doKey(t, "alice", "POST", "/calls/initiate", initiate, keyOf(`q-1`))
	if code != http.StatusCreated || rp != "true" || callOf(t, again).ID != callOf(t, body).ID {
		t.Errorf(`"q-1" then q-1: %d %s (replayed %q), want the same call`, code, again, rp)
	}
}
