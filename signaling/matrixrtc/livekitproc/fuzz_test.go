package livekitproc_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// FuzzWebhook feeds the webhook receiver arbitrary tokens and bodies: it
// never panics, answers only 200, 400, 401 or 413, and accepts nothing but
// the body a valid token was signed for.
func FuzzWebhook(f *testing.F) {
	var h *livekitproc.Webhook
	seedBody, err := protojson.Marshal(event("room_started", "r1", ""))
	if err != nil {
		f.Fatal(err)
	}
	tok, err := signToken(seedBody, hookKey, hookSecret)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok, seedBody)
	f.Add("", []byte(`{"event":"room_started","room":{"name":"x"}}`))
	f.Add("Bearer x.y.z", []byte("{"))
	f.Add(tok, []byte(`{"event":"room_finished","room":{"name":"r1"}}`))
	h, err = livekitproc.NewWebhook(livekitproc.WebhookConfig{APIKey: hookKey, APISecret: hookSecret, Logger: zerolog.Nop()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, authz string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, livekitproc.WebhookPath, bytes.NewReader(body))
		r.Header.Set("Authorization", authz)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		switch w.Code {
		case http.StatusOK:
			if !bytes.Equal(body, seedBody) {
				t.Fatalf("accepted a body no token was signed for: %q", body)
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}
