package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/membership"
)

// The Matrix events of a MatrixRTC call besides the memberships, for the
// gateway (issue 17): ringing (MSC4075 notification), declining (MSC4310),
// icebox's LiveKit token from a focus's authorization service, and the
// inbound side of all of it (Config.RTCCalls). What is sent is what
// matrix-js-sdk 43 sends (MatrixRTCSession.sendCallNotify,
// MatrixClient.sendRtcDecline); what is read is what it accepts
// (parseCallNotificationContent), plus the older call.notify form.
//
// Both are sent as ordinary room events, encrypted in encrypted rooms: the
// SDK sends them as MSC4354 sticky events only where the homeserver offers
// that, and falls back to ordinary ones (Dendrite has no MSC4354).

// MatrixRTC event types.
const (
	// TypeRTCNotification is MSC4075's notification (ring).
	TypeRTCNotification = "org.matrix.msc4075.rtc.notification"
	// TypeCallNotify is its older form, still read.
	TypeCallNotify = "org.matrix.msc4075.call.notify"
	// TypeRTCDecline is MSC4310's decline of a notification.
	TypeRTCDecline = "org.matrix.msc4310.rtc.decline"

	// The stable names, read too: ruma (Element X's SDK) knows the
	// notification by its stable name and the decline by both.
	typeRTCNotificationStable = "m.rtc.notification"
	typeRTCDeclineStable      = "m.rtc.decline"
)

// Notification types (RTCRing.Type, RTCRingEvent.Type).
const (
	RTCRingTypeRing         = "ring"
	RTCRingTypeNotification = "notification"
)

const (
	// rtcSlotID is the slot of the room's call as matrix-js-sdk names it
	// for org.matrix.msc3401.call.member memberships (application m.call,
	// call_id "" read as "ROOM"): the notification's slot_id and sticky key.
	rtcSlotID = "m.call#ROOM"
	// DefaultRingLifetime is a notification's lifetime when none is given
	// (matrix-js-sdk's notificationLifetimeMs default), and that of an
	// older call.notify, which carries none.
	DefaultRingLifetime = 90 * time.Second
	// MaxRingLifetime caps a notification's lifetime (MSC4075; receivers
	// cap larger values to it).
	MaxRingLifetime = 2 * time.Minute
	// maxSenderTSOffset: a notification's lifetime counts from sender_ts
	// unless that lies further than this from origin_server_ts, then from
	// origin_server_ts (MSC4075). matrix-js-sdk checks only a sender_ts
	// ahead; Element X (ruma's expiration_ts) either way, which also keeps
	// the ring of a sender whose clock is late from looking expired.
	maxSenderTSOffset = 20 * time.Second
	// rtcSendTimeout bounds one ring or decline send.
	rtcSendTimeout = 15 * time.Second
	// focusTokenTimeout bounds RTCFocusToken (OpenID token and /sfu/get).
	focusTokenTimeout = 15 * time.Second
	// maxFocusAnswer bounds the authorization service's answer ({url, jwt}
	// is well under a kilobyte).
	maxFocusAnswer = 64 << 10
)

// rtcTimelineTypes are the timeline event types the sync asks for besides
// the m.call.* ones (syncFilter).
var rtcTimelineTypes = []event.Type{
	{Type: TypeRTCNotification, Class: event.MessageEventType},
	{Type: typeRTCNotificationStable, Class: event.MessageEventType},
	{Type: TypeCallNotify, Class: event.MessageEventType},
	{Type: TypeRTCDecline, Class: event.MessageEventType},
	{Type: typeRTCDeclineStable, Class: event.MessageEventType},
}

// rtcKinds maps the inbound types to their kind.
var rtcKinds = map[string]string{
	TypeRTCNotification: rtcKindNotification, typeRTCNotificationStable: rtcKindNotification,
	TypeCallNotify: rtcKindCallNotify,
	TypeRTCDecline: rtcKindDecline, typeRTCDeclineStable: rtcKindDecline,
}

// RTCRing is the notification RingRTC sends.
type RTCRing struct {
	// MembershipEventID is icebox's membership event in the call (JoinRTC's
	// event ID), which the notification relates to. Required.
	MembershipEventID string
	// Lifetime is how long the others' devices ring. Default
	// DefaultRingLifetime; capped at MaxRingLifetime.
	Lifetime time.Duration
	// Type is "ring" or "notification". Default "ring".
	Type string
	// Mentions are the users to notify; nil: the whole room (what
	// matrix-js-sdk sends). Non-nil must name at least one.
	Mentions []string
	// Intent is m.call.intent ("audio", "video"); "" leaves it out.
	Intent string
}

// RTCRingEvent is a notification another user sent (either form).
type RTCRingEvent struct {
	EventID, Sender string
	// Type is "ring" when the notification asks to ring, else
	// "notification" (also for one without notification_type: MSC4075
	// leaves the presentation to the receiver).
	Type string
	// Lifetime counts from SenderTS, capped at MaxRingLifetime; SenderTS
	// is the event's origin_server_ts when sender_ts lies more than 20 s
	// from it or is absent (call.notify). Expired notifications are not
	// delivered.
	Lifetime time.Duration
	SenderTS time.Time
	// MembershipEventID is the sender's membership the notification
	// relates to; "" for call.notify and for a notification naming only
	// its slot_id.
	MembershipEventID string
	Mentions          []string // m.mentions.user_ids
	RoomMention       bool     // m.mentions.room
}

// Expiry is when the notification stops ringing.
func (r RTCRingEvent) Expiry() time.Time { return r.SenderTS.Add(r.Lifetime) }

// RTCDeclineEvent is another user's decline of a notification.
type RTCDeclineEvent struct {
	EventID, Sender, NotificationEventID string
}

// RTCObserver receives the MatrixRTC events of the rooms icebox is in
// (Config.RTCCalls). It is called from the sync goroutine: its methods must
// not block. Encrypted events are decrypted before.
type RTCObserver interface {
	// RTCMember: another device joined or changed its membership
	// (left=false), or left (left=true; m then holds what is known of the
	// member: sender, device, state key, and the rest of its last
	// membership when the homeserver sent it along). Never icebox's own
	// device; expired memberships are not reported as joined.
	RTCMember(roomID string, m membership.Member, left bool)
	// RTCRing: a notification (either form) from another user, unexpired.
	RTCRing(roomID string, r RTCRingEvent)
	// RTCDecline: a decline from another user.
	RTCDecline(roomID string, d RTCDeclineEvent)
}

// RTCIdentity is icebox's user and device (known once Run has logged in).
func (b *Bridge) RTCIdentity() membership.Device {
	return membership.Device{UserID: string(b.cli.UserID), DeviceID: string(b.cli.DeviceID)}
}

// RingRTC sends the MSC4075 notification of icebox's membership to the
// room, encrypted in an encrypted room, and returns its event ID.
func (b *Bridge) RingRTC(ctx context.Context, roomID string, r RTCRing) (string, error) {
	if r.MembershipEventID == "" {
		return "", errors.New("matrix: ring the MatrixRTC call: the membership event ID is required")
	}
	switch r.Type {
	case "":
		r.Type = RTCRingTypeRing
	case RTCRingTypeRing, RTCRingTypeNotification:
	default:
		return "", fmt.Errorf("matrix: ring the MatrixRTC call: type %q is neither ring nor notification", r.Type)
	}
	switch {
	case r.Lifetime < 0:
		return "", fmt.Errorf("matrix: ring the MatrixRTC call: negative lifetime %v", r.Lifetime)
	case r.Lifetime == 0:
		r.Lifetime = DefaultRingLifetime
	case r.Lifetime > MaxRingLifetime:
		r.Lifetime = MaxRingLifetime
	}
	mentions := map[string]any{"user_ids": []string{}, "room": true}
	if r.Mentions != nil {
		if len(r.Mentions) == 0 {
			return "", errors.New("matrix: ring the MatrixRTC call: Mentions is empty (nil notifies the room)")
		}
		mentions = map[string]any{"user_ids": r.Mentions}
	}
	content := map[string]any{
		"slot_id":           rtcSlotID,
		"m.mentions":        mentions,
		"notification_type": r.Type,
		"m.relates_to":      map[string]any{"event_id": r.MembershipEventID, "rel_type": "m.reference"},
		"sender_ts":         b.cfg.Now().UnixMilli(),
		"lifetime":          r.Lifetime.Milliseconds(),
		// MSC4354's key, sent by matrix-js-sdk even when the event is not
		// sticky; receivers check it equals slot_id.
		"msc4354_sticky_key": rtcSlotID,
	}
	if r.Intent != "" {
		content["m.call.intent"] = r.Intent
	}
	eventID, err := b.sendRTCEvent(ctx, roomID, TypeRTCNotification, content)
	if err != nil {
		return "", fmt.Errorf("matrix: ring the MatrixRTC call of %s: %w", roomID, err)
	}
	b.log.Info().Str("room_id", roomID).Str("event_id", eventID).Str("type", r.Type).Dur("lifetime", r.Lifetime).
		Msg("rang the room's MatrixRTC call")
	return eventID, nil
}

// DeclineRTC sends the MSC4310 decline of a notification.
func (b *Bridge) DeclineRTC(ctx context.Context, roomID, notificationEventID string) error {
	if notificationEventID == "" {
		return errors.New("matrix: decline the MatrixRTC call: the notification's event ID is required")
	}
	content := map[string]any{
		"m.relates_to":       map[string]any{"event_id": notificationEventID, "rel_type": "m.reference"},
		"msc4354_sticky_key": notificationEventID,
	}
	eventID, err := b.sendRTCEvent(ctx, roomID, TypeRTCDecline, content)
	if err != nil {
		return fmt.Errorf("matrix: decline the MatrixRTC call of %s: %w", roomID, err)
	}
	b.log.Info().Str("room_id", roomID).Str("event_id", eventID).Str("notification_event_id", notificationEventID).
		Msg("declined a MatrixRTC call")
	return nil
}

// sendRTCEvent sends a room event the way the outbox does: with
// encryption, only once it is up (mautrix would send in plaintext before),
// after the room's state is known (whether it is encrypted, whom to share
// the room key with), refused in a plain room under Require.
func (b *Bridge) sendRTCEvent(ctx context.Context, roomID, typ string, content any) (string, error) {
	if b.crypto != nil && !b.crypto.ready() {
		return "", errors.New("end-to-end encryption is not up yet (Run starts it)")
	}
	ctx, cancel := context.WithTimeout(quiet(ctx), rtcSendTimeout)
	defer cancel()
	if err := b.crypto.checkRoom(ctx, id.RoomID(roomID)); err != nil {
		return "", err
	}
	resp, err := b.cli.SendMessageEvent(ctx, id.RoomID(roomID), event.Type{Type: typ, Class: event.MessageEventType}, content)
	if err != nil {
		return "", err
	}
	return string(resp.EventID), nil
}

// RoomEncrypted reports whether the room has end-to-end encryption on
// (an m.room.encryption state event), read from the homeserver.
func (b *Bridge) RoomEncrypted(ctx context.Context, roomID string) (bool, error) {
	ctx, cancel := context.WithTimeout(quiet(ctx), rtcSendTimeout)
	defer cancel()
	var c struct {
		Algorithm string `json:"algorithm"`
	}
	err := b.cli.StateEvent(ctx, id.RoomID(roomID), event.StateEncryption, "", &c)
	switch {
	case errors.Is(err, mautrix.MNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("matrix: encryption state of %s: %w", roomID, err)
	}
	return c.Algorithm != "", nil
}

// RTCFocusError is an authorization service's refusal of RTCFocusToken.
type RTCFocusError struct {
	Status  int    // HTTP status
	ErrCode string // the Matrix-style errcode ("M_UNAUTHORIZED"…), "" when none
	Message string // its error text, bounded
}

func (e *RTCFocusError) Error() string {
	msg := fmt.Sprintf("HTTP %d", e.Status)
	if e.ErrCode != "" {
		msg += " " + e.ErrCode
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// RTCFocusToken gets icebox's LiveKit token for the room's call from a
// focus's authorization service, as Element Call does for
// org.matrix.msc3401.call.member memberships: an OpenID token of icebox's
// user from the homeserver, then POST {serviceURL}/sfu/get with {room,
// openid_token, device_id}, answered {url, jwt}. A refusal is an
// *RTCFocusError. Neither token is logged.
func (b *Bridge) RTCFocusToken(ctx context.Context, serviceURL, roomID string) (livekitURL, jwt string, err error) {
	fail := func(format string, args ...any) (string, string, error) {
		return "", "", fmt.Errorf("matrix: MatrixRTC focus token from %s for %s: "+format, append([]any{serviceURL, roomID}, args...)...)
	}
	u, perr := url.Parse(serviceURL)
	if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fail("not an http(s) URL")
	}
	if b.cli.DeviceID == "" {
		return fail("the device is not known yet (Run logs in)")
	}
	ctx, cancel := context.WithTimeout(quiet(ctx), focusTokenTimeout)
	defer cancel()
	tok, err := b.cli.RequestOpenIDToken(ctx)
	if err != nil {
		return fail("OpenID token from the homeserver: %w", err)
	}
	body, err := json.Marshal(map[string]any{
		"room":         roomID,
		"openid_token": tok,
		"device_id":    string(b.cli.DeviceID),
	})
	if err != nil {
		return fail("%w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(serviceURL, "/")+"/sfu/get", bytes.NewReader(body))
	if err != nil {
		return fail("%w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	client := b.cli.Client
	if b.cfg.RTCFocusAllowAddr != nil && !slices.Contains(b.cfg.RTCFocusTrusted, strings.TrimRight(serviceURL, "/")) {
		client = guardedClient(b.cfg.RTCFocusAllowAddr)
		defer client.CloseIdleConnections()
	}
	resp, err := client.Do(req)
	if err != nil {
		return fail("%w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxFocusAnswer+1))
	if err != nil {
		return fail("reading the answer: %w", err)
	}
	if len(raw) > maxFocusAnswer {
		return fail("answer larger than %d bytes", maxFocusAnswer)
	}
	if resp.StatusCode != http.StatusOK {
		fe := &RTCFocusError{Status: resp.StatusCode}
		var m struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(raw, &m) == nil {
			fe.ErrCode, fe.Message = truncate(m.ErrCode, 64), truncate(m.Error, 200)
		}
		return fail("%w", fe)
	}
	var out struct {
		URL string `json:"url"`
		JWT string `json:"jwt"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.URL == "" || out.JWT == "" {
		return fail("the answer is not {url, jwt}")
	}
	b.log.Info().Str("service_url", serviceURL).Str("room_id", roomID).Str("livekit_url", out.URL).
		Msg("got a LiveKit token for the room's MatrixRTC call")
	return out.URL, out.JWT, nil
}

// errFocusAddrDenied: RTCFocusAllowAddr refused the service's address.
var errFocusAddrDenied = errors.New("address refused by matrix's RTC focus policy")

// guardedClient is an HTTP client whose connections go only to addresses
// allow accepts (checked after name resolution, so a name that resolves
// or rebinds to a refused address is refused too). It is made per token
// request: they are one per call joined.
func guardedClient(allow func(netip.Addr) bool) *http.Client {
	dialer := &net.Dialer{Timeout: focusTokenTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		if !allow(ap.Addr().Unmap()) {
			return fmt.Errorf("%w: %s", errFocusAddrDenied, ap.Addr())
		}
		return nil
	}}
	return &http.Client{
		Transport: &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: focusTokenTimeout,
			ForceAttemptHTTP2: true},
		// A redirect would leave the service the member named.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// truncate bounds a string from outside before it goes into an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Results of an inbound ring or decline
// (icebox_matrix_rtc_events_total{result}).
const (
	rtcDelivered   = "delivered"   // handed to Config.RTCCalls
	rtcOwn         = "own"         // sent by icebox's user
	rtcMalformed   = "invalid"     // content not what matrix-js-sdk accepts
	rtcExpired     = "expired"     // a notification past its lifetime
	rtcDuplicate   = "duplicate"   // the event was seen before
	rtcUnencrypted = "unencrypted" // plaintext under Encryption.Require
	rtcFailed      = "error"       // the seen-events store failed, or the observer panicked
)

// Kinds of inbound event (icebox_matrix_rtc_events_total{kind}).
const (
	rtcKindNotification = "notification"
	rtcKindCallNotify   = "call_notify"
	rtcKindDecline      = "decline"
)

// newRTCEventMetrics registers icebox_matrix_rtc_events_total.
func newRTCEventMetrics(reg prometheus.Registerer) *prometheus.CounterVec {
	c := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "icebox_matrix_rtc_events_total",
		Help: "MatrixRTC ring and decline events from the sync (org.matrix.msc4075.rtc.notification, its older org.matrix.msc4075.call.notify, org.matrix.msc4310.rtc.decline; the stable m.rtc.* names too), by kind and result: delivered, own (icebox's user), invalid (ignored), expired, duplicate, unencrypted (plaintext under matrix.require_encryption), error.",
	}, []string{"kind", "result"})
	for _, k := range []string{rtcKindNotification, rtcKindCallNotify, rtcKindDecline} {
		for _, r := range []string{rtcDelivered, rtcOwn, rtcMalformed, rtcExpired, rtcDuplicate, rtcUnencrypted, rtcFailed} {
			c.WithLabelValues(k, r)
		}
	}
	return c
}

// errRTCContent marks a malformed ring or decline; its text names the
// field, never the content.
var errRTCContent = errors.New("malformed")

func rtcContentError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errRTCContent}, args...)...)
}

// onRTCEvent handles a ring or decline event of the sync.
func (s *syncer) onRTCEvent(ctx context.Context, evt *event.Event) {
	l := s.loop
	obs := l.rtcCalls
	if obs == nil {
		return
	}
	kind := rtcKinds[evt.Type.Type]
	result, reason := rtcDelivered, ""
	defer func() {
		if r := recover(); r != nil {
			result, reason = rtcFailed, "panic"
			l.log.Error().Str("type", evt.Type.Type).Str("event_id", string(evt.ID)).Str("panic", fmt.Sprint(r)).
				Bytes("stack", debug.Stack()).Msg("MatrixRTC event handler panicked")
		}
		if l.rtcEvents != nil {
			l.rtcEvents.WithLabelValues(kind, result).Inc()
		}
		line := l.log.Debug()
		if result == rtcMalformed || result == rtcFailed {
			line = l.log.Info()
		}
		line.Str("kind", kind).Str("result", result).Str("reason", reason).Str("room_id", string(evt.RoomID)).
			Str("sender", string(evt.Sender)).Str("event_id", string(evt.ID)).Msg("MatrixRTC event")
	}()
	if string(evt.Sender) == l.user {
		result = rtcOwn
		return
	}
	if s.loop.in.requireEncrypted && !evt.Mautrix.WasEncrypted {
		result = rtcUnencrypted
		return
	}
	now := l.now()
	var ring RTCRingEvent
	var decline RTCDeclineEvent
	var err error
	switch kind {
	case rtcKindNotification:
		ring, err = parseRTCNotification(evt.Content.VeryRaw, time.UnixMilli(evt.Timestamp))
	case rtcKindCallNotify:
		ring, err = parseCallNotify(evt.Content.VeryRaw, time.UnixMilli(evt.Timestamp))
	default:
		decline.NotificationEventID, err = parseRTCDecline(evt.Content.VeryRaw)
	}
	if err != nil {
		result, reason = rtcMalformed, err.Error()
		return
	}
	if kind != rtcKindDecline && !now.Before(ring.Expiry()) {
		result = rtcExpired
		return
	}
	// A batch replayed after a crash must not ring twice.
	sctx, cancel := context.WithTimeout(ctx, handlerTimeout)
	first, err := l.in.store.MarkEventSeen(sctx, string(evt.ID), now)
	cancel()
	switch {
	case err != nil:
		result, reason = rtcFailed, "seen-events store: "+err.Error()
		return
	case !first:
		result = rtcDuplicate
		return
	}
	roomID := string(evt.RoomID)
	if kind == rtcKindDecline {
		decline.EventID, decline.Sender = string(evt.ID), string(evt.Sender)
		obs.RTCDecline(roomID, decline)
		return
	}
	ring.EventID, ring.Sender = string(evt.ID), string(evt.Sender)
	obs.RTCRing(roomID, ring)
}

// rtcMentions is m.mentions as MSC4075 requires it: an object targeting
// the room or at least one user.
func parseRTCMentions(raw json.RawMessage) (users []string, room bool, err error) {
	var m struct {
		Room    *json.RawMessage `json:"room"`
		UserIDs *json.RawMessage `json:"user_ids"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &m) != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, false, rtcContentError("m.mentions missing or not an object")
	}
	if m.Room != nil && json.Unmarshal(*m.Room, &room) != nil {
		return nil, false, rtcContentError("m.mentions.room is not a boolean")
	}
	if m.UserIDs != nil && json.Unmarshal(*m.UserIDs, &users) != nil {
		return nil, false, rtcContentError("m.mentions.user_ids is not a list of strings")
	}
	if !room && len(users) == 0 {
		return nil, false, rtcContentError("m.mentions targets neither the room nor a user")
	}
	return users, room, nil
}

// nonNegativeInt reads a JSON number that is a non-negative integer (as
// matrix-js-sdk's Number.isInteger check: 5.0 passes, 5.5 does not).
func nonNegativeInt(raw json.RawMessage) (int64, bool) {
	var f float64
	if len(raw) == 0 || json.Unmarshal(raw, &f) != nil || f < 0 || f != float64(int64(f)) || f > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// reference reads an m.reference relation's event ID ("" when m.relates_to
// is absent); ok is false when it is present but not such a relation.
func reference(raw json.RawMessage) (eventID string, ok bool) {
	if len(raw) == 0 {
		return "", true
	}
	var rel struct {
		RelType string `json:"rel_type"`
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(raw, &rel) != nil || rel.RelType != "m.reference" || rel.EventID == "" {
		return "", false
	}
	return rel.EventID, true
}

// parseRTCNotification reads an org.matrix.msc4075.rtc.notification
// content as matrix-js-sdk's parseCallNotificationContent does (the
// receiving rules that need the room's state are the observer's).
func parseRTCNotification(raw []byte, originTS time.Time) (RTCRingEvent, error) {
	var c struct {
		SlotID    *json.RawMessage `json:"slot_id"`
		StickyKey *json.RawMessage `json:"msc4354_sticky_key"`
		Mentions  json.RawMessage  `json:"m.mentions"`
		Type      json.RawMessage  `json:"notification_type"`
		RelatesTo json.RawMessage  `json:"m.relates_to"`
		SenderTS  json.RawMessage  `json:"sender_ts"`
		Lifetime  json.RawMessage  `json:"lifetime"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return RTCRingEvent{}, rtcContentError("content is not an object")
	}
	var r RTCRingEvent
	var slot string
	if c.SlotID != nil && json.Unmarshal(*c.SlotID, &slot) != nil {
		return r, rtcContentError("slot_id is not a string")
	}
	if c.SlotID != nil && strings.Count(slot, "#") != 1 {
		return r, rtcContentError("slot_id is not application#id")
	}
	membershipID, relOK := reference(c.RelatesTo)
	if c.SlotID == nil && (!relOK || membershipID == "") {
		return r, rtcContentError("no slot_id and no m.reference relation to a membership")
	}
	r.MembershipEventID = membershipID
	if c.StickyKey != nil && c.SlotID != nil {
		var key string
		if json.Unmarshal(*c.StickyKey, &key) != nil || key != slot {
			return r, rtcContentError("msc4354_sticky_key is not slot_id")
		}
	}
	senderTS, ok := nonNegativeInt(c.SenderTS)
	if !ok {
		return r, rtcContentError("sender_ts missing or not a non-negative integer")
	}
	lifetime, ok := nonNegativeInt(c.Lifetime)
	if !ok {
		return r, rtcContentError("lifetime missing or not a non-negative integer")
	}
	var err error
	if r.Mentions, r.RoomMention, err = parseRTCMentions(c.Mentions); err != nil {
		return r, err
	}
	r.Type = RTCRingTypeNotification
	var typ string
	if json.Unmarshal(c.Type, &typ) == nil && typ == RTCRingTypeRing {
		r.Type = RTCRingTypeRing
	}
	r.Lifetime = min(time.Duration(lifetime)*time.Millisecond, MaxRingLifetime)
	r.SenderTS = time.UnixMilli(senderTS)
	if d := r.SenderTS.Sub(originTS); d > maxSenderTSOffset || d < -maxSenderTSOffset {
		r.SenderTS = originTS
	}
	return r, nil
}

// parseCallNotify reads the older org.matrix.msc4075.call.notify
// ({application, call_id, m.mentions, notify_type: ring|notify}), which
// has no lifetime (DefaultRingLifetime from origin_server_ts) and no
// relation.
func parseCallNotify(raw []byte, originTS time.Time) (RTCRingEvent, error) {
	var c struct {
		Application json.RawMessage `json:"application"`
		Mentions    json.RawMessage `json:"m.mentions"`
		NotifyType  json.RawMessage `json:"notify_type"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return RTCRingEvent{}, rtcContentError("content is not an object")
	}
	var r RTCRingEvent
	var app, typ string
	if json.Unmarshal(c.Application, &app) != nil || app != "m.call" {
		return r, rtcContentError("application is not m.call")
	}
	switch _ = json.Unmarshal(c.NotifyType, &typ); typ {
	case "ring":
		r.Type = RTCRingTypeRing
	case "notify":
		r.Type = RTCRingTypeNotification
	default:
		return r, rtcContentError("notify_type is neither ring nor notify")
	}
	var err error
	if r.Mentions, r.RoomMention, err = parseRTCMentions(c.Mentions); err != nil {
		return r, err
	}
	r.Lifetime, r.SenderTS = DefaultRingLifetime, originTS
	return r, nil
}

// parseRTCDecline reads an org.matrix.msc4310.rtc.decline: an m.reference
// to the notification.
func parseRTCDecline(raw []byte) (string, error) {
	var c struct {
		RelatesTo json.RawMessage `json:"m.relates_to"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", rtcContentError("content is not an object")
	}
	notification, ok := reference(c.RelatesTo)
	if !ok || notification == "" {
		return "", rtcContentError("no m.reference relation to a notification")
	}
	return notification, nil
}
