package livekitproc

import (
	"errors"
	"net/http"
	"slices"
	"sync"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/livekit/protocol/webhook"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"
)

// WebhookPath is where icebox's HTTP listener receives the managed
// LiveKit's webhooks: outside matrixrtc.base_path (which the authorization
// service owns) and outside the API's bearer-token authentication — each
// request carries LiveKit's own signature instead. config refuses a
// matrixrtc.base_path under /_icebox/.
const WebhookPath = "/_icebox/livekit/webhook"

// maxWebhookBody bounds a webhook's body (LiveKit's events are a few KiB).
const maxWebhookBody = 1 << 20

// maxRooms bounds the rooms tracked for the gauges: webhooks are signed,
// but a bound costs nothing.
const maxRooms = 100_000

// webhookEvents are the event labels counted; any other is "other".
var webhookEvents = []string{
	webhook.EventRoomStarted, webhook.EventRoomFinished,
	webhook.EventParticipantJoined, webhook.EventParticipantLeft, webhook.EventParticipantConnectionAborted,
	webhook.EventTrackPublished, webhook.EventTrackUnpublished,
	"other",
}

// Reasons a webhook is refused (the refused counter's labels).
const (
	refusedUnsigned  = "unsigned"      // no Authorization header
	refusedSignature = "bad_signature" // token, key, signature or body checksum wrong
	refusedBody      = "bad_body"      // signed, but not a webhook event
	refusedTooLarge  = "too_large"
	refusedMethod    = "method"
)

// WebhookConfig is the key and secret the webhooks are signed with.
type WebhookConfig struct {
	APIKey, APISecret string
	Registerer        prometheus.Registerer // nil = metrics not registered
	Logger            zerolog.Logger
}

// Webhook receives the managed LiveKit's webhooks and keeps the room and
// participant gauges (icebox_livekit_rooms, icebox_livekit_participants).
type Webhook struct {
	keys    auth.KeyProvider
	log     zerolog.Logger
	events  *prometheus.CounterVec
	refused *prometheus.CounterVec

	mu    sync.Mutex
	rooms map[string]map[string]struct{} // room name → participant SIDs
}

var _ http.Handler = (*Webhook)(nil)

// NewWebhook returns the receiver for webhooks signed with cfg's key.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.APIKey == "" || cfg.APISecret == "" {
		return nil, errors.New("livekitproc: webhook: APIKey and APISecret are required")
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	f := promauto.With(reg)
	w := &Webhook{
		keys:  auth.NewSimpleKeyProvider(cfg.APIKey, cfg.APISecret),
		log:   cfg.Logger.With().Str("component", "livekit").Logger(),
		rooms: map[string]map[string]struct{}{},
		events: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_livekit_webhook_events_total",
			Help: "Signed webhook events from the managed livekit-server, by event (room_started, room_finished, participant_joined, participant_left, participant_connection_aborted, track_published, track_unpublished, other).",
		}, []string{"event"}),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "icebox_livekit_webhooks_refused_total",
			Help: "Webhook requests refused, by reason (unsigned, bad_signature, bad_body, too_large, method).",
		}, []string{"reason"}),
	}
	for _, e := range webhookEvents {
		w.events.WithLabelValues(e)
	}
	for _, r := range []string{refusedUnsigned, refusedSignature, refusedBody, refusedTooLarge, refusedMethod} {
		w.refused.WithLabelValues(r)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_livekit_rooms",
		Help: "Rooms open on the managed livekit-server, from its webhooks.",
	}, func() float64 { r, _ := w.Counts(); return float64(r) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "icebox_livekit_participants",
		Help: "Participants in rooms of the managed livekit-server, from its webhooks.",
	}, func() float64 { _, p := w.Counts(); return float64(p) })
	return w, nil
}

// ServeHTTP answers 200 to a signed event, 401 to an unsigned or forged
// one, 400 to a signed body that is no event, 405 to anything but POST.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.refuse(rw, http.StatusMethodNotAllowed, refusedMethod, nil)
		return
	}
	r.Body = http.MaxBytesReader(rw, r.Body, maxWebhookBody)
	// Receive checks the signature (a JWT of the API key, signed with its
	// secret, carrying the body's SHA-256) before anything is parsed.
	body, err := webhook.Receive(r, w.keys)
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			w.refuse(rw, http.StatusRequestEntityTooLarge, refusedTooLarge, err)
		case errors.Is(err, webhook.ErrNoAuthHeader):
			w.refuse(rw, http.StatusUnauthorized, refusedUnsigned, err)
		default:
			w.refuse(rw, http.StatusUnauthorized, refusedSignature, err)
		}
		return
	}
	var ev livekit.WebhookEvent
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &ev); err != nil || ev.Event == "" {
		w.refuse(rw, http.StatusBadRequest, refusedBody, err)
		return
	}
	w.apply(&ev)
	rw.WriteHeader(http.StatusOK)
}

func (w *Webhook) refuse(rw http.ResponseWriter, status int, reason string, err error) {
	w.refused.WithLabelValues(reason).Inc()
	// The error names what failed, never the token or a secret.
	w.log.Debug().Err(err).Str("reason", reason).Msg("webhook refused")
	http.Error(rw, http.StatusText(status), status)
}

// apply counts ev and updates the rooms. Events of one room may arrive
// out of order (LiveKit retries), so joins and leaves are set operations
// and a join opens its room.
func (w *Webhook) apply(ev *livekit.WebhookEvent) {
	label := ev.Event
	if !slices.Contains(webhookEvents, label) {
		label = "other"
	}
	w.events.WithLabelValues(label).Inc()
	room := ev.GetRoom().GetName()
	part := ev.GetParticipant().GetSid()
	w.mu.Lock()
	defer w.mu.Unlock()
	switch ev.Event {
	case webhook.EventRoomStarted:
		w.openRoom(room)
	case webhook.EventRoomFinished:
		delete(w.rooms, room)
	case webhook.EventParticipantJoined:
		if ps := w.openRoom(room); ps != nil && part != "" {
			ps[part] = struct{}{}
		}
	case webhook.EventParticipantLeft, webhook.EventParticipantConnectionAborted:
		delete(w.rooms[room], part)
	}
}

// openRoom returns room's participants, tracking the room if it is new
// (nil past maxRooms or for a nameless room). Call with mu held.
func (w *Webhook) openRoom(room string) map[string]struct{} {
	if room == "" {
		return nil
	}
	ps, ok := w.rooms[room]
	if !ok {
		if len(w.rooms) >= maxRooms {
			return nil
		}
		ps = map[string]struct{}{}
		w.rooms[room] = ps
	}
	return ps
}

// Counts returns the rooms and participants the webhooks reported.
func (w *Webhook) Counts() (rooms, participants int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ps := range w.rooms {
		participants += len(ps)
	}
	return len(w.rooms), participants
}

// Reset forgets every room: livekit-server (re)starts with none, and a
// killed one sends no room_finished.
func (w *Webhook) Reset() {
	w.mu.Lock()
	clear(w.rooms)
	w.mu.Unlock()
}
