package livekitproc_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

const (
	hookKey    = "APIhooktest12"
	hookSecret = "webhook-test-secret-0123456789abcdefghijkl"
)

// signed is a webhook request as LiveKit's notifier sends it: the event
// as protojson, and an access token of key signed with secret that
// carries the body's SHA-256.
func signed(t testing.TB, ev *livekit.WebhookEvent, key, secret string) *http.Request {
	t.Helper()
	body, err := protojson.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return signedBody(t, body, key, secret)
}

func signedBody(t testing.TB, body []byte, key, secret string) *http.Request {
	t.Helper()
	tok, err := signToken(body, key, secret)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, livekitproc.WebhookPath, bytes.NewReader(body))
	r.Header.Set("Authorization", tok)
	r.Header.Set("Content-Type", "application/webhook+json")
	return r
}

// signToken signs body as LiveKit's notifier does.
func signToken(body []byte, key, secret string) (string, error) {
	sum := sha256.Sum256(body)
	return auth.NewAccessToken(key, secret).SetValidFor(5 * time.Minute).SetSha256(base64.StdEncoding.EncodeToString(sum[:])).ToJWT()
}

func event(name, room, participant string) *livekit.WebhookEvent {
	ev := &livekit.WebhookEvent{Event: name, Room: &livekit.Room{Name: room, Sid: "RM_" + room}, Id: "EV_" + name + room + participant, CreatedAt: time.Now().Unix()}
	if participant != "" {
		ev.Participant = &livekit.ParticipantInfo{Sid: "PA_" + participant, Identity: "@" + participant + ":example.org:DEV"}
	}
	return ev
}

// TestWebhook: only events signed with the managed LiveKit's key are taken
// (unsigned, forged, another key's, a tampered body: 401), and signed ones
// keep the room and participant gauges, idempotently.
func TestWebhook(t *testing.T) {
	reg := prometheus.NewRegistry()
	log := &logBuffer{}
	h, err := livekitproc.NewWebhook(livekitproc.WebhookConfig{APIKey: hookKey, APISecret: hookSecret, Registerer: reg, Logger: zerolog.New(log).Level(zerolog.DebugLevel)})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(r *http.Request) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	counts := func() [2]int { r, p := h.Counts(); return [2]int{r, p} }
	started := event("room_started", "r1", "")

	unsigned := signed(t, started, hookKey, hookSecret)
	unsigned.Header.Del("Authorization")
	tampered := signed(t, started, hookKey, hookSecret)
	tampered.Body = httpBody(strings.Replace(mustJSON(t, started), "r1", "r2", 1))
	for _, tc := range []struct {
		name   string
		req    *http.Request
		status int
		reason string
	}{
		{"unsigned", unsigned, 401, "unsigned"},
		{"wrong secret", signed(t, started, hookKey, strings.Repeat("x", 40)), 401, "bad_signature"},
		{"other key", signed(t, started, "APIother", hookSecret), 401, "bad_signature"},
		{"tampered body", tampered, 401, "bad_signature"},
		{"signed garbage", signedBody(t, []byte("{not json"), hookKey, hookSecret), 400, "bad_body"},
		{"GET", httptest.NewRequest(http.MethodGet, livekitproc.WebhookPath, nil), 405, "method"},
	} {
		if got := serve(tc.req); got != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.status)
		}
		if got := metricValue(t, reg, "icebox_livekit_webhooks_refused_total", "reason", tc.reason); got < 1 {
			t.Errorf("%s: refused{reason=%s} = %v", tc.name, tc.reason, got)
		}
		if c := counts(); c != [2]int{} {
			t.Fatalf("%s changed the gauges: %v", tc.name, c)
		}
	}

	for _, step := range []struct {
		ev   *livekit.WebhookEvent
		want [2]int
	}{
		{started, [2]int{1, 0}},
		{event("participant_joined", "r1", "alice"), [2]int{1, 1}},
		{event("participant_joined", "r1", "alice"), [2]int{1, 1}}, // a retried delivery
		{event("participant_joined", "r2", "bob"), [2]int{2, 2}},   // before its room_started
		{event("room_started", "r2", ""), [2]int{2, 2}},
		{event("track_published", "r2", "bob"), [2]int{2, 2}},
		{event("egress_started", "r2", ""), [2]int{2, 2}},
		{event("participant_left", "r1", "alice"), [2]int{2, 1}},
		{event("room_finished", "r2", ""), [2]int{1, 0}},
	} {
		if got := serve(signed(t, step.ev, hookKey, hookSecret)); got != 200 {
			t.Fatalf("%s: status %d", step.ev.Event, got)
		}
		if got := counts(); got != step.want {
			t.Errorf("after %s of %s: rooms, participants = %v, want %v", step.ev.Event, step.ev.Room.Name, got, step.want)
		}
	}
	if got := metricValue(t, reg, "icebox_livekit_rooms"); got != 1 {
		t.Errorf("icebox_livekit_rooms = %v, want 1", got)
	}
	for ev, want := range map[string]float64{"room_started": 2, "participant_joined": 3, "participant_left": 1, "room_finished": 1, "track_published": 1, "other": 1} {
		if got := metricValue(t, reg, "icebox_livekit_webhook_events_total", "event", ev); got != want {
			t.Errorf("webhook_events_total{event=%s} = %v, want %v", ev, got, want)
		}
	}
	h.Reset()
	if c := counts(); c != [2]int{} {
		t.Errorf("after Reset: %v", c)
	}
	if strings.Contains(log.String(), hookSecret) {
		t.Error("the secret is in the log")
	}
}

func mustJSON(t *testing.T, ev *livekit.WebhookEvent) string {
	t.Helper()
	b, err := protojson.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func httpBody(s string) *readCloser { return &readCloser{strings.NewReader(s)} }

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }
