package matrix

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/icebox-voip/icebox/signaling"
)

// Encoder turns domain events into outbox entries (m.call.* events). It
// implements signaling.Outbound. The zero Encoder works: it stamps entries
// with time.Now and its Wake does nothing; Bridge.Encoder returns one wired
// to the bridge's clock and sender.
type Encoder struct {
	now  func() time.Time
	wake chan struct{} // buffered, capacity 1; nil: Wake does nothing
}

var _ signaling.Outbound = (*Encoder)(nil)

// defaultNegotiateLifetime is the lifetime of a negotiate whose payload and
// call have none; matrix-js-sdk uses the same 60 s for its negotiations.
const defaultNegotiateLifetime = 60_000

// Encode returns the Matrix events for ev, to be written in the same store
// transaction as the call transition. It does no I/O. It returns nothing
// when the call has no room, for events that came from Matrix (types
// ending in "ViaMatrix": they are already in the room) and for event types
// Matrix has no counterpart of (CallMatrixSent). A payload whose type does
// not fit the event type is a programming error and is returned as one.
//
// The Matrix call_id is the icebox call ID. The party_id is the payload's;
// an end of call with no party (invite expiry, revocation by an
// administrator) is sent as the caller's party, c.PartyID.
func (e *Encoder) Encode(ev signaling.Event, c signaling.Call) ([]signaling.OutboxEntry, error) {
	if c.RoomID == "" || signaling.FromMatrix(ev.Type) {
		return nil, nil
	}
	if c.ID == "" {
		return nil, fmt.Errorf("matrix: encode %s: call has no ID", ev.Type)
	}
	party := func(p string) string {
		if p != "" {
			return p
		}
		return c.PartyID
	}
	if end, ok := derefPayload(ev.Payload).(signaling.EndPayload); ok && end.PartyID == "" && c.MatrixPartyID != "" {
		// A system end (expiry, revocation) of a call a Matrix user placed:
		// their client times out its own invite, and a hangup sent as
		// their party would be dropped as their own echo anyway.
		return nil, nil
	}
	typ, contents, err := wireContents(ev, c, party)
	if err != nil || typ == "" {
		return nil, err
	}
	created := e.clock()().UTC()
	out := make([]signaling.OutboxEntry, 0, len(contents))
	for _, content := range contents {
		raw, err := json.Marshal(content)
		if err != nil {
			return nil, fmt.Errorf("matrix: encode %s: %w", typ, err)
		}
		out = append(out, signaling.OutboxEntry{
			CallID:    c.ID,
			RoomID:    c.RoomID,
			EventType: typ,
			Content:   raw,
			TxnID:     newTxnID(),
			CreatedAt: created,
		})
	}
	return out, nil
}

// wireContents returns the Matrix event type and contents (more than one
// for many candidates) of ev; typ "" when ev has no Matrix counterpart.
// party fills in an absent party_id.
func wireContents(ev signaling.Event, c signaling.Call, party func(string) string) (typ string, contents []any, err error) {
	switch p := derefPayload(ev.Payload).(type) {
	case signaling.InvitePayload:
		lifetime := p.LifetimeMS
		if lifetime == 0 {
			lifetime = c.LifetimeMS
		}
		// invitee is carried as given. A local (non-Matrix) invitee makes
		// Matrix clients ignore the invite, which is right: the call is not
		// for anyone in the room.
		typ, contents = TypeInvite, []any{inviteContent{
			callBase: base(c.ID, party(p.PartyID)),
			Lifetime: lifetime,
			Offer:    sdp{Type: "offer", SDP: p.SDPOffer},
			Invitee:  p.Invitee,
			media:    withDefaults(p.Media, p.SDPOffer, true),
		}}
	case signaling.AnswerPayload:
		typ, contents = TypeAnswer, []any{answerContent{
			callBase: base(c.ID, party(p.PartyID)),
			Answer:   sdp{Type: "answer", SDP: p.SDPAnswer},
			media:    withDefaults(p.Media, p.SDPAnswer, true),
		}}
	case signaling.CandidatesPayload:
		// At most maxCandidatesPerEvent per entry; the sender merges
		// entries up to the same bound. An empty list (the service refuses
		// one) would still give one, harmless, event.
		typ, contents = TypeCandidates, candidateContents(base(c.ID, party(p.PartyID)), p.Candidates)
	case signaling.SelectAnswerPayload:
		typ, contents = TypeSelectAnswer, []any{selectAnswerContent{
			callBase:        base(c.ID, party(p.PartyID)),
			SelectedPartyID: p.SelectedPartyID,
		}}
	case signaling.NegotiatePayload:
		lifetime := p.LifetimeMS
		if lifetime == 0 {
			lifetime = c.LifetimeMS
		}
		if lifetime == 0 {
			lifetime = defaultNegotiateLifetime
		}
		typ, contents = TypeNegotiate, []any{negotiateContent{
			callBase:    base(c.ID, party(p.PartyID)),
			Description: sdp{Type: p.Description.Type, SDP: p.Description.SDP},
			Lifetime:    lifetime,
			media:       withDefaults(p.Media, p.Description.SDP, false),
		}}
	case signaling.StreamMetadataPayload:
		typ, contents = TypeStreamMetadataChanged, []any{streamMetadataContent{
			callBase:       base(c.ID, party(p.PartyID)),
			StreamMetadata: p.SDPStreamMetadata,
		}}
	case signaling.EndPayload:
		switch ev.Type {
		case signaling.EventCallRejected:
			typ, contents = TypeReject, []any{rejectContent{callBase: base(c.ID, party(p.PartyID))}}
		case signaling.EventCallHangup:
			typ, contents = TypeHangup, []any{hangupContent{
				callBase: base(c.ID, party(p.PartyID)),
				Reason:   hangupReason(p.Reason),
			}}
		default:
			return "", nil, fmt.Errorf("matrix: encode %s: unexpected EndPayload", ev.Type)
		}
	default:
		switch ev.Type {
		case signaling.EventCallInvite, signaling.EventCallAnswer, signaling.EventCallCandidates,
			signaling.EventCallSelectAnswer, signaling.EventCallNegotiate, signaling.EventCallRejected,
			signaling.EventCallHangup, signaling.EventCallStreamMetadataChanged:
			return "", nil, fmt.Errorf("matrix: encode %s: unexpected payload %T", ev.Type, ev.Payload)
		}
		return "", nil, nil // CallMatrixSent and anything else without a Matrix event
	}
	return typ, contents, nil
}

// candidateContents splits cands into m.call.candidates contents of at
// most maxCandidatesPerEvent each; at least one.
func candidateContents(b callBase, cands []signaling.Candidate) []any {
	var contents []any
	for len(contents) == 0 || len(cands) > 0 {
		n := min(len(cands), maxCandidatesPerEvent)
		cc := candidatesContent{callBase: b, Candidates: make([]candidate, n)}
		for i, cand := range cands[:n] {
			cc.Candidates[i] = wireCandidate(cand)
		}
		contents = append(contents, cc)
		cands = cands[n:]
	}
	return contents
}

// Wake tells the sender that entries were committed. It never blocks.
func (e *Encoder) Wake() {
	if e.wake == nil {
		return
	}
	select {
	case e.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

func (e *Encoder) clock() func() time.Time {
	if e.now == nil {
		return time.Now
	}
	return e.now
}

// newTxnID returns a transaction ID unique across restarts: the homeserver
// deduplicates a retried PUT by it, so it is chosen once, when the entry is
// written, and reused for every attempt.
func newTxnID() string { return "icebox." + uuid.NewString() }

// derefPayload accepts payloads given by pointer as well as by value.
func derefPayload(p any) any {
	switch v := p.(type) {
	case *signaling.InvitePayload:
		return deref(v)
	case *signaling.AnswerPayload:
		return deref(v)
	case *signaling.CandidatesPayload:
		return deref(v)
	case *signaling.SelectAnswerPayload:
		return deref(v)
	case *signaling.NegotiatePayload:
		return deref(v)
	case *signaling.EndPayload:
		return deref(v)
	case *signaling.StreamMetadataPayload:
		return deref(v)
	}
	return p
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// hangupReason maps an icebox end reason to an m.call.hangup reason.
// Reasons the spec lists, and the ones Element and matrix-js-sdk send
// besides, are passed through. Anything else — notably "revoked" (an
// administrator ended the call) — is sent as "user_hangup": the spec's list
// is closed, some clients show a generic error for a reason they do not
// know, and from a Matrix participant's point of view the other side hung
// up. The precise reason stays in icebox's own call record and WebSocket
// events.
func hangupReason(r string) string {
	switch r {
	case "":
		return signaling.ReasonUserHangup
	case signaling.ReasonUserHangup, signaling.ReasonInviteTimeout, signaling.ReasonICEFailed,
		signaling.ReasonICETimeout, signaling.ReasonUserBusy, signaling.ReasonMediaFailed,
		signaling.ReasonUnknownError,
		"answered_elsewhere", "replaced", "signalling_timeout", "transferred", "new_session", "unknown_devices":
		return r
	case signaling.ReasonGatewayFailed, signaling.ReasonE2EEUnavailable, signaling.ReasonGatewayRestarted:
		// A legacy caller's call bridged to MatrixRTC that the gateway
		// ended: the caller's client shows an error, not a hangup.
		return signaling.ReasonUnknownError
	}
	return signaling.ReasonUserHangup
}
