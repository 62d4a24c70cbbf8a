package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"

	"github.com/icebox-voip/icebox/signaling"
)

// The inbound half of the bridge: m.call.* events from Matrix users, as the
// sync loop (sync.go) delivers them, become call transitions through the
// calls service. Every event is judged in the same order: our own echo
// (sent by the service user, or carrying a party icebox uses in that
// call), content (parsed leniently, our own structs), age, duplicate (the
// event ID, persisted), then the transition. Each event gets one counter
// increment and one log line, never its SDP or candidates.

// InboundCalls is what the bridge needs from the calls service
// (*signaling.Service) to apply m.call.* events from Matrix users.
type InboundCalls interface {
	InviteFromMatrix(ctx context.Context, in signaling.MatrixInvite) (signaling.Call, error)
	AnswerFromMatrix(ctx context.Context, ev signaling.MatrixEvent, sdp string) (signaling.Call, error)
	CandidatesFromMatrix(ctx context.Context, ev signaling.MatrixEvent, cs []signaling.Candidate) error
	HangupFromMatrix(ctx context.Context, ev signaling.MatrixEvent, reason string, reject bool) (signaling.Call, error)
	SelectAnswerFromMatrix(ctx context.Context, ev signaling.MatrixEvent, selected string) (signaling.Call, error)
	NegotiateFromMatrix(ctx context.Context, ev signaling.MatrixEvent, desc signaling.SessionDescription, lifetimeMS int64) (signaling.Call, error)
	StreamMetadataFromMatrix(ctx context.Context, ev signaling.MatrixEvent, metadata json.RawMessage) error
	MemberLeft(ctx context.Context, roomID, user string) ([]signaling.Call, error)
	RoomJoined(ctx context.Context, roomID string, members []string) (signaling.Conversation, error)
}

var _ InboundCalls = (*signaling.Service)(nil)

// Results of an inbound event: the result label of
// icebox_matrix_inbound_total.
const (
	resultOK        = "ok"        // the transition was applied
	resultDuplicate = "duplicate" // seen before (event ID), or the call exists already
	resultEcho      = "echo"      // icebox's own event coming back
	resultStale     = "stale"     // too old: an invite past its lifetime, anything older than maxEventAge
	resultIgnored   = "ignored"   // not for icebox (unmapped room, unknown call, not allowed in the call's state) or not supported
	resultInvalid   = "invalid"   // malformed content
	resultError     = "error"     // the store failed, or the handler panicked
)

var (
	inboundTypes = []string{TypeInvite, TypeCandidates, TypeAnswer, TypeSelectAnswer, TypeNegotiate, TypeReject, TypeHangup,
		TypeStreamMetadataChanged}
	inboundResults = []string{resultOK, resultDuplicate, resultEcho, resultStale, resultIgnored, resultInvalid, resultError}
)

const (
	// handlerTimeout bounds the store and service work for one event.
	handlerTimeout = 10 * time.Second
	// maxEventAge: a call event older than this is about a call long over
	// (the outbox gives up on events after the same day). It must stay
	// below seenRetention, so that every event acted on is still
	// remembered if the sync delivers it again.
	maxEventAge = 24 * time.Hour
	// seenRetention: events seen longer ago than this are forgotten. It is
	// twice maxEventAge, so every event old enough to be acted on is still
	// remembered when the sync delivers it again.
	seenRetention = 48 * time.Hour
	pruneInterval = time.Hour
)

// inbound handles the m.call.* events of the sync.
type inbound struct {
	user    string // the service user
	store   Store
	log     zerolog.Logger
	metrics *inboundMetrics
	now     func() time.Time
	// requireEncrypted ignores call events that were not encrypted
	// (Encryption.Require): icebox would not answer into their room.
	requireEncrypted bool

	mu sync.Mutex
	// suppressed are the invites of the current sync batch that a later
	// event of the same batch answered or ended: they must not ring.
	suppressed map[string]bool
}

// newInbound makes the handlers; New sets their metrics.
func newInbound(cfg Config, log zerolog.Logger) *inbound {
	return &inbound{user: cfg.UserID, store: cfg.Store, log: log, now: cfg.Now,
		requireEncrypted: cfg.Encryption != nil && cfg.Encryption.Require}
}

// eventOutcome is what became of one inbound event.
type eventOutcome struct {
	callID string
	result string
	reason string // why it is not ok, for the log
	err    error
}

func (o *eventOutcome) set(result, reason string) { o.result, o.reason = result, reason }

// handle is the handler registered for every m.call.* type: it applies
// evt through calls (the Run's calls service). It never panics: a panic in
// the work is recovered, counted and logged.
func (in *inbound) handle(ctx context.Context, evt *event.Event, calls InboundCalls) {
	ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
	defer cancel()
	var o eventOutcome
	func() {
		defer func() {
			if r := recover(); r != nil {
				o.set(resultError, "panic")
				o.err = fmt.Errorf("handler panicked: %v", r)
				in.log.Error().Str("type", evt.Type.Type).Str("event_id", string(evt.ID)).
					Str("panic", fmt.Sprint(r)).Str("stack", string(debug.Stack())).Msg("matrix event handler panicked")
			}
		}()
		in.process(ctx, evt, calls, &o)
	}()
	in.metrics.inbound.WithLabelValues(evt.Type.Type, o.result).Inc()

	var line *zerolog.Event
	switch o.result {
	case resultOK, resultStale, resultIgnored, resultInvalid:
		line = in.log.Info()
	case resultError:
		line = in.log.Error()
	default: // echo, duplicate: every event icebox sends comes back once
		line = in.log.Debug()
	}
	line = line.Str("type", evt.Type.Type).Str("call_id", o.callID).Str("room_id", string(evt.RoomID)).
		Str("sender", string(evt.Sender)).Str("event_id", string(evt.ID)).Str("result", o.result)
	if o.reason != "" {
		line = line.Str("reason", o.reason)
	}
	if o.err != nil {
		line = line.Err(o.err)
	}
	line.Msg("matrix event received")
}

// process judges one event and applies it; o says what became of it.
func (in *inbound) process(ctx context.Context, evt *event.Event, calls InboundCalls, o *eventOutcome) {
	c, age, ok := in.admit(ctx, evt, o)
	if !ok {
		return
	}
	err := in.apply(ctx, evt, calls, c, age, o)
	if o.result != "" {
		return // decided without the calls service
	}
	o.result = resultOf(err)
	switch {
	case o.result == resultError:
		o.reason, o.err = "calls service", err
	case err != nil:
		o.reason = err.Error()
	}
}

// admit parses the event and decides whether it is for the calls service:
// not an echo, well formed, recent, and seen for the first time (recorded
// now). Otherwise it sets o and returns false.
func (in *inbound) admit(ctx context.Context, evt *event.Event, o *eventOutcome) (callContent, time.Duration, bool) {
	c, err := parseCallContent(evt.Type.Type, evt.Content.VeryRaw)
	o.callID = c.CallID
	switch {
	case string(evt.Sender) == in.user:
		o.set(resultEcho, "sent by the service user")
		return c, 0, false
	case err != nil:
		o.set(resultInvalid, err.Error())
		return c, 0, false
	case in.requireEncrypted && !evt.Mautrix.WasEncrypted:
		o.set(resultIgnored, "not encrypted, and matrix.require_encryption is on")
		return c, 0, false
	case c.PartyID == "" && c.V0:
		// VoIP v0 has no parties; icebox's calls need one to tell the
		// caller's and the answerer's devices apart.
		o.set(resultIgnored, "v0")
		return c, 0, false
	case c.PartyID == "":
		o.set(resultInvalid, "party_id missing")
		return c, 0, false
	}
	ours, err := in.ourParty(ctx, c.CallID, c.PartyID)
	switch {
	case err != nil:
		o.set(resultError, "loading the call")
		o.err = err
		return c, 0, false
	case ours:
		o.set(resultEcho, "party_id is icebox's")
		return c, 0, false
	}
	age := in.age(evt)
	if age > maxEventAge {
		o.set(resultStale, fmt.Sprintf("event is %v old", age.Round(time.Second)))
		return c, 0, false
	}
	first, err := in.store.MarkEventSeen(ctx, string(evt.ID), in.now().UTC())
	switch {
	case err != nil:
		o.set(resultError, "marking the event seen")
		o.err = err
		return c, 0, false
	case !first:
		o.set(resultDuplicate, "event seen before")
		return c, 0, false
	}
	return c, age, true
}

// apply hands an admitted event to the calls service and returns its
// error; for an event it does not hand over, it sets o instead.
func (in *inbound) apply(ctx context.Context, evt *event.Event, calls InboundCalls, c callContent, age time.Duration, o *eventOutcome) error {
	ev := signaling.MatrixEvent{
		RoomID: string(evt.RoomID), Sender: string(evt.Sender), EventID: string(evt.ID),
		CallID: c.CallID, PartyID: c.PartyID, Media: c.Media,
	}
	var err error
	switch evt.Type.Type {
	case TypeInvite:
		if in.isSuppressed(string(evt.ID)) {
			o.set(resultIgnored, "answered or ended later in the same sync batch")
			return nil
		}
		invitee := c.Invitee
		if invitee == in.user {
			// Element names the other member of a two-member room: the
			// service user, who stands for the conversation's icebox users.
			invitee = ""
		}
		_, err = calls.InviteFromMatrix(ctx, signaling.MatrixInvite{
			MatrixEvent: ev, SDPOffer: c.SDP, Invitee: invitee, LifetimeMS: c.Lifetime, AgeMS: age.Milliseconds(),
		})
	case TypeAnswer:
		if _, err = calls.AnswerFromMatrix(ctx, ev, c.SDP); err == nil {
			in.metrics.answerReceived.Inc()
		}
	case TypeCandidates:
		err = calls.CandidatesFromMatrix(ctx, ev, c.Candidates)
	case TypeHangup:
		var ended signaling.Call
		if ended, err = calls.HangupFromMatrix(ctx, ev, c.Reason, false); err == nil && in.metrics.observeCall != nil {
			in.metrics.observeCall(ended)
		}
	case TypeReject:
		_, err = calls.HangupFromMatrix(ctx, ev, "", true)
	case TypeSelectAnswer:
		_, err = calls.SelectAnswerFromMatrix(ctx, ev, c.Selected)
	case TypeNegotiate:
		_, err = calls.NegotiateFromMatrix(ctx, ev, c.Description, c.Lifetime)
	case TypeStreamMetadataChanged:
		err = calls.StreamMetadataFromMatrix(ctx, ev, c.Media.StreamMetadata)
	default:
		o.set(resultIgnored, "not a call event type")
	}
	return err
}

// resultOf maps what the calls service returned to a result.
func resultOf(err error) string {
	var te *signaling.TransitionError
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, signaling.ErrConflict):
		return resultDuplicate // a call with this ID exists: the invite was applied before
	case errors.Is(err, signaling.ErrStale):
		return resultStale
	case errors.Is(err, signaling.ErrInvalid):
		return resultInvalid
	case errors.Is(err, signaling.ErrForbidden), errors.Is(err, signaling.ErrNotFound), errors.As(err, &te),
		errors.Is(err, signaling.ErrGlare): // a crossing invite that lost to ours
		// Rooms and calls that are not icebox's, parties not in the call,
		// transitions the call's state does not allow.
		return resultIgnored
	}
	return resultError
}

// ourParty reports whether partyID is one icebox uses in the call: the
// caller's when an icebox user placed it, the answerer's when an icebox
// user answered. Matrix clients ignore their own party's remote echo; an
// event from someone else with icebox's party is not theirs to send.
// Local users are the participants whose IDs are not Matrix user IDs.
func (in *inbound) ourParty(ctx context.Context, callID, partyID string) (bool, error) {
	if !signaling.ValidCallID(callID) {
		return false, nil // not a call ID: no call to look up
	}
	c, err := in.store.Call(ctx, callID)
	if errors.Is(err, signaling.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return (!isMatrixUserID(c.Initiator) && partyID == c.PartyID) ||
		(c.Answerer != "" && !isMatrixUserID(c.Answerer) && partyID == c.AnswerPartyID), nil
}

// age is how old the event is: the homeserver's unsigned.age when it
// served it, plus the time since the sync response arrived. The sender's
// origin_server_ts is not compared with the local clock: clocks differ.
func (in *inbound) age(evt *event.Event) time.Duration {
	age := time.Duration(evt.Unsigned.Age) * time.Millisecond
	if !evt.Mautrix.ReceivedAt.IsZero() {
		age += in.now().Sub(evt.Mautrix.ReceivedAt)
	}
	return max(age, 0)
}

// setSuppressed sets the invites of the batch being handled that must not
// ring (nil after the batch).
func (in *inbound) setSuppressed(m map[string]bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.suppressed = m
}

func (in *inbound) isSuppressed(eventID string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.suppressed[eventID]
}

// pruneSeen forgets seen events older than seenRetention, at start and
// then every pruneInterval, until ctx ends.
func (in *inbound) pruneSeen(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	for {
		n, err := in.store.PruneSeenEvents(ctx, in.now().Add(-seenRetention))
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			in.log.Error().Err(err).Msg("pruning seen matrix events")
		case n > 0:
			in.log.Info().Int("removed", n).Msg("pruned seen matrix events")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
