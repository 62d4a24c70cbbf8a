package signaling

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
)

// ServiceConfig configures the calls Service.
type ServiceConfig struct {
	Store     Store
	Relay     Relay     // nil: no relay to revoke on (tests)
	Publisher Publisher // nil: events go nowhere

	// Matrix bridge parts; nil when Matrix is off. Outbound's entries are
	// written with each transition; Rooms gives conversations a room;
	// Invites lets Initiate report the invite's event ID, waiting at most
	// InviteWait (0 = do not wait).
	Outbound   Outbound
	Rooms      RoomCreator
	RoomIndex  RoomIndex // finds the conversation of an inbound Matrix event's room
	Invites    InviteWaiter
	InviteWait time.Duration

	// InviteLifetime is the default invite lifetime; a client may ask for
	// any lifetime_ms in [5 s, MaxInviteLifetime]. Defaults: 60 s, 5 min.
	InviteLifetime    time.Duration
	MaxInviteLifetime time.Duration
	// CredentialTTL is how long a call's TURN credentials live, so how
	// long a revocation must be kept after the call ends. Default: 24 h.
	CredentialTTL time.Duration
	// InitiateRate and InitiateBurst limit call initiations per user.
	// Defaults: 0.5/s, burst 5.
	InitiateRate  float64
	InitiateBurst int
	// MaxCallDuration ends an answered call this long after its answer
	// (its clients may have vanished without hanging up), which revokes
	// its TURN credentials. Default: 12 h.
	MaxCallDuration time.Duration
	// SweepInterval is how often Run looks for answered calls past
	// MaxCallDuration and for ended calls past CallRetention. Default:
	// sweepInterval (5 min).
	SweepInterval time.Duration
	// CallRetention is how long an ended call stays readable (GET
	// /calls/{id}, listings) before the sweep deletes it. Its revocation
	// is kept apart, until its credentials would have expired. Default:
	// 72 h.
	CallRetention time.Duration

	Logger zerolog.Logger
	Now    func() time.Time // Default: time.Now
	NewID  func() string    // Default: a random UUID
}

const minInviteLifetime = 5 * time.Second

// ReasonCallTimeout is the end_reason of an answered call ended because it
// outlived ServiceConfig.MaxCallDuration.
const ReasonCallTimeout = "call_timeout"

// sweepInterval is the default ServiceConfig.SweepInterval.
var sweepInterval = 5 * time.Minute

// pruneBatch is how many ended calls one prune transaction deletes: a
// backlog is worked off in many short transactions, so bbolt's single
// writer is never held long away from live calls.
const pruneBatch = 200

// errNotDue aborts a sweep transition that no longer applies (the call is
// no longer answered, or not past its maximum duration): nothing is written.
var errNotDue = errors.New("signaling: call not due for the sweep")

// Service runs calls: it validates requests, applies transitions through
// the store (one transaction each), revokes the relay credentials of calls
// that end, expires unanswered invites and publishes domain events.
type Service struct {
	cfg ServiceConfig
	log zerolog.Logger

	limitMu        sync.Mutex
	limiters       map[string]*rate.Limiter // call initiations
	signalLimiters map[string]*rate.Limiter // candidates and renegotiations

	timerMu sync.Mutex
	timers  map[string]*time.Timer
	closed  bool
	wg      sync.WaitGroup // expiry callbacks in flight

	convLocks keyLocks // by conversation ID: PutConversation and RoomJoined
}

// NewService checks the configuration and applies defaults.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("signaling: Store is required")
	}
	if cfg.InviteLifetime == 0 {
		cfg.InviteLifetime = 60 * time.Second
	}
	if cfg.MaxInviteLifetime == 0 {
		cfg.MaxInviteLifetime = 5 * time.Minute
	}
	if cfg.CredentialTTL == 0 {
		cfg.CredentialTTL = 24 * time.Hour
	}
	if cfg.InitiateRate == 0 {
		cfg.InitiateRate = 0.5
	}
	if cfg.InitiateBurst == 0 {
		cfg.InitiateBurst = 5
	}
	if cfg.MaxCallDuration == 0 {
		cfg.MaxCallDuration = 12 * time.Hour
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = sweepInterval
	}
	if cfg.CallRetention == 0 {
		cfg.CallRetention = 72 * time.Hour
	}
	if cfg.MaxCallDuration < 0 || cfg.SweepInterval < 0 || cfg.CallRetention < 0 {
		return nil, errors.New("signaling: MaxCallDuration, SweepInterval and CallRetention must not be negative")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.NewID == nil {
		cfg.NewID = func() string { return uuid.NewString() }
	}
	if cfg.InviteLifetime < minInviteLifetime || cfg.InviteLifetime > cfg.MaxInviteLifetime {
		return nil, fmt.Errorf("signaling: invite lifetime %v outside [%v, %v]", cfg.InviteLifetime, minInviteLifetime, cfg.MaxInviteLifetime)
	}
	return &Service{
		cfg:            cfg,
		log:            cfg.Logger.With().Str("component", "calls").Logger(),
		limiters:       make(map[string]*rate.Limiter),
		signalLimiters: make(map[string]*rate.Limiter),
		timers:         make(map[string]*time.Timer),
	}, nil
}

// Run re-arms the expiry of invites that were ringing when icebox stopped
// (expiring at once those whose lifetime passed meanwhile), sweeps answered
// calls past MaxCallDuration at once and then every SweepInterval, then
// waits for ctx and stops the timers and the sweeper.
func (s *Service) Run(ctx context.Context) error {
	ringing, err := s.cfg.Store.RingingCalls(ctx)
	if err != nil {
		return fmt.Errorf("signaling: load ringing calls: %w", err)
	}
	for _, c := range ringing {
		s.armExpiry(c)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.sweepLoop(ctx)
	}()
	<-ctx.Done()
	s.timerMu.Lock()
	s.closed = true
	for id, t := range s.timers {
		t.Stop()
		delete(s.timers, id)
	}
	s.timerMu.Unlock()
	s.wg.Wait()
	return nil
}

// ActiveTimers returns how many invites are waiting to expire (tests, metrics).
func (s *Service) ActiveTimers() int {
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	return len(s.timers)
}

// --- conversations ---

// PutConversation creates or replaces a conversation (admin).
func (s *Service) PutConversation(ctx context.Context, id string, participants []string, roomID string) (Conversation, error) {
	if !ValidID(id) {
		return Conversation{}, invalidf("conversation id must be 1-64 characters of [A-Za-z0-9_-]")
	}
	if len(participants) == 0 || len(participants) > 1000 {
		return Conversation{}, invalidf("participants must hold 1-1000 user IDs")
	}
	seen := make(map[string]bool, len(participants))
	for i, p := range participants {
		if !validUser(p) {
			return Conversation{}, invalidf("participants[%d] is not a valid user ID", i)
		}
		if seen[p] {
			return Conversation{}, invalidf("participants[%d] is listed twice", i)
		}
		seen[p] = true
	}
	defer s.convLocks.lock(id)()
	now := s.cfg.Now().UTC()
	conv := Conversation{ID: id, Participants: slices.Clone(participants), RoomID: roomID, CreatedAt: now, UpdatedAt: now}
	if old, err := s.cfg.Store.Conversation(ctx, id); err == nil {
		conv.CreatedAt = old.CreatedAt
		if roomID == "" {
			conv.RoomID = old.RoomID
		}
	} else if !errors.Is(err, ErrNotFound) {
		return Conversation{}, err
	}
	if s.cfg.Rooms != nil {
		// The room is created before the conversation is stored: a
		// conversation without its room would carry calls Matrix never sees.
		room, err := s.cfg.Rooms.EnsureRoom(ctx, conv)
		if err != nil {
			return Conversation{}, fmt.Errorf("%w: creating the Matrix room: %w", ErrUnavailable, err)
		}
		conv.RoomID = room
	}
	if err := s.cfg.Store.PutConversation(ctx, conv); err != nil {
		return Conversation{}, err
	}
	return conv, nil
}

// Conversation returns a conversation (admin).
func (s *Service) Conversation(ctx context.Context, id string) (Conversation, error) {
	return s.cfg.Store.Conversation(ctx, id)
}

// DeleteConversation removes a conversation (admin). Its calls stay
// readable by ID; no new call can start in it.
func (s *Service) DeleteConversation(ctx context.Context, id string) error {
	return s.cfg.Store.DeleteConversation(ctx, id)
}

// participantOf loads a conversation and checks user is in it.
func (s *Service) participantOf(ctx context.Context, user, convID string) (Conversation, error) {
	conv, err := s.cfg.Store.Conversation(ctx, convID)
	if errors.Is(err, ErrNotFound) {
		return Conversation{}, fmt.Errorf("conversation %q: %w", convID, ErrNotFound)
	}
	if err != nil {
		return Conversation{}, err
	}
	if !conv.HasParticipant(user) {
		return Conversation{}, forbiddenf("not a participant of conversation %q", convID)
	}
	return conv, nil
}

// CheckParticipant reports whether user may use a call's credentials (the
// HTTP API mints per-call ICE servers only for participants).
func (s *Service) CheckParticipant(ctx context.Context, user, callID string) (Call, error) {
	return s.Get(ctx, user, callID)
}

// --- calls ---

// InitiateRequest is POST /calls/initiate.
type InitiateRequest struct {
	ConversationID string `json:"conversation_id"`
	SDPOffer       string `json:"sdp_offer"`
	Invitee        string `json:"invitee,omitempty"`
	LifetimeMS     int64  `json:"lifetime_ms,omitempty"`
	PartyID        string `json:"party_id,omitempty"`
}

// Initiate starts a call: it rings every other participant (or only the
// invitee) until answered, rejected or the invite's lifetime passes.
func (s *Service) Initiate(ctx context.Context, user string, req InitiateRequest) (Call, error) {
	conv, err := s.participantOf(ctx, user, req.ConversationID)
	if err != nil {
		return Call{}, err
	}
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("sdp_offer", req.SDPOffer); err != nil {
		return Call{}, err
	}
	if req.Invitee != "" && (req.Invitee == user || !conv.HasParticipant(req.Invitee)) {
		return Call{}, invalidf("invitee must be another participant of the conversation")
	}
	lifetime := s.cfg.InviteLifetime
	if req.LifetimeMS != 0 {
		lifetime = time.Duration(req.LifetimeMS) * time.Millisecond
		if lifetime < minInviteLifetime || lifetime > s.cfg.MaxInviteLifetime {
			return Call{}, invalidf("lifetime_ms must be between %d and %d", minInviteLifetime.Milliseconds(), s.cfg.MaxInviteLifetime.Milliseconds())
		}
	}
	if !s.allowInitiate(user) {
		return Call{}, fmt.Errorf("%w: too many calls started; try again shortly", ErrRateLimited)
	}
	c := Call{
		ID:             s.cfg.NewID(),
		ConversationID: conv.ID,
		RoomID:         conv.RoomID,
		Initiator:      user,
		Invitee:        req.Invitee,
		PartyID:        party,
		Status:         StatusRinging,
		SDPOffer:       req.SDPOffer,
		LifetimeMS:     lifetime.Milliseconds(),
		Version:        VoIPVersion,
		CreatedAt:      s.cfg.Now().UTC(),
	}
	ev := newEvent(conv, c, EventCallInvite, InvitePayload{
		Type: EventCallInvite, CallID: c.ID, ConversationID: c.ConversationID, InitiatorID: user,
		Invitee: c.Invitee, PartyID: party, SDPOffer: c.SDPOffer, LifetimeMS: c.LifetimeMS, Status: c.Status,
	})
	out, err := s.encode(ev, c)
	if err != nil {
		return Call{}, err
	}
	if err := s.cfg.Store.CreateCallOutbox(ctx, c, out); err != nil {
		return Call{}, err
	}
	s.wake(out)
	s.logTransition(c, "initiated")
	s.armExpiry(c)
	s.emit(ev)
	if len(out) > 0 && s.cfg.Invites != nil && s.cfg.InviteWait > 0 {
		wctx, cancel := context.WithTimeout(ctx, s.cfg.InviteWait)
		if id, ok := s.cfg.Invites.WaitInviteSent(wctx, c.ID); ok {
			c.MatrixInviteEventID = id
		}
		cancel()
	}
	return c, nil
}

// AnswerRequest is POST /calls/{id}/answer.
type AnswerRequest struct {
	SDPAnswer string `json:"sdp_answer"`
	PartyID   string `json:"party_id,omitempty"`
}

// Answer accepts a ringing call; the first answer wins.
func (s *Service) Answer(ctx context.Context, user, callID string, req AnswerRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSDP("sdp_answer", req.SDPAnswer); err != nil {
		return Call{}, err
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		return applyAnswer(c, user, party, req.SDPAnswer, s.cfg.Now().UTC())
	}, func(conv Conversation, c Call) Event {
		return newEvent(conv, c, EventCallAnswer, AnswerPayload{
			Type: EventCallAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
			PartyID: party, SDPAnswer: c.SDPAnswer, Status: c.Status,
		})
	})
	if err != nil {
		return Call{}, err
	}
	s.stopExpiry(c.ID)
	s.logTransition(c, "answered")
	s.emit(ev)
	return c, nil
}

// CandidatesRequest is POST /calls/{id}/candidates.
type CandidatesRequest struct {
	Candidates []Candidate `json:"candidates"`
	PartyID    string      `json:"party_id,omitempty"`
}

// Candidates relays ICE candidates to the other participants.
func (s *Service) Candidates(ctx context.Context, user, callID string, req CandidatesRequest) error {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return err
	}
	if err := checkCandidates(req.Candidates); err != nil {
		return err
	}
	if !s.allowSignal(user) {
		return fmt.Errorf("%w: too many candidate messages; batch them", ErrRateLimited)
	}
	conv, c, err := s.read(ctx, user, callID)
	if err != nil {
		return err
	}
	if err := checkInCall(&c, user, party); err != nil {
		return err
	}
	return s.signal(ctx, c, newEvent(conv, c, EventCallCandidates, CandidatesPayload{
		Type: EventCallCandidates, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, Candidates: req.Candidates,
	}))
}

// SelectAnswerRequest is POST /calls/{id}/select_answer.
type SelectAnswerRequest struct {
	SelectedPartyID string `json:"selected_party_id"`
	PartyID         string `json:"party_id,omitempty"`
}

// SelectAnswer is the caller's confirmation of the chosen answer; other
// answering devices stop ringing when they hear it.
func (s *Service) SelectAnswer(ctx context.Context, user, callID string, req SelectAnswerRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	if !partyRE.MatchString(req.SelectedPartyID) {
		return Call{}, invalidf("selected_party_id is required")
	}
	conv, c, err := s.read(ctx, user, callID)
	if err != nil {
		return Call{}, err
	}
	if err := checkSelectAnswer(&c, user, party, req.SelectedPartyID); err != nil {
		return Call{}, err
	}
	return c, s.signal(ctx, c, newEvent(conv, c, EventCallSelectAnswer, SelectAnswerPayload{
		Type: EventCallSelectAnswer, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, SelectedPartyID: req.SelectedPartyID,
	}))
}

// NegotiateRequest is POST /calls/{id}/negotiate.
type NegotiateRequest struct {
	Description SessionDescription `json:"description"`
	LifetimeMS  int64              `json:"lifetime_ms,omitempty"`
	PartyID     string             `json:"party_id,omitempty"`
}

// Negotiate relays a renegotiation offer or answer within an answered call.
func (s *Service) Negotiate(ctx context.Context, user, callID string, req NegotiateRequest) error {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return err
	}
	if req.Description.Type != "offer" && req.Description.Type != "answer" {
		return invalidf(`description.type must be "offer" or "answer"`)
	}
	if err := checkSDP("description.sdp", req.Description.SDP); err != nil {
		return err
	}
	if !s.allowSignal(user) {
		return fmt.Errorf("%w: too many renegotiations", ErrRateLimited)
	}
	conv, c, err := s.read(ctx, user, callID)
	if err != nil {
		return err
	}
	if err := checkNegotiate(&c, user, party); err != nil {
		return err
	}
	return s.signal(ctx, c, newEvent(conv, c, EventCallNegotiate, NegotiatePayload{
		Type: EventCallNegotiate, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, Description: req.Description, LifetimeMS: req.LifetimeMS,
	}))
}

// EndRequest is POST /calls/{id}/reject and /hangup.
type EndRequest struct {
	Reason  string `json:"reason,omitempty"` // hangup only; default user_hangup
	PartyID string `json:"party_id,omitempty"`
}

// Reject declines a ringing call.
func (s *Service) Reject(ctx context.Context, user, callID string, req EndRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		return applyReject(c, user, party, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
	}, func(conv Conversation, c Call) Event { return endEvent(conv, c, EventCallRejected, user, party) })
	if err != nil {
		return Call{}, err
	}
	s.ended(c, ev)
	return c, nil
}

// Hangup ends a call.
func (s *Service) Hangup(ctx context.Context, user, callID string, req EndRequest) (Call, error) {
	party, err := partyOf(user, req.PartyID)
	if err != nil {
		return Call{}, err
	}
	reason := req.Reason
	if reason == "" {
		reason = ReasonUserHangup
	}
	if !reasonRE.MatchString(reason) {
		return Call{}, invalidf("reason must be 1-%d characters of [a-z_]", maxReason)
	}
	_, c, ev, err := s.update(ctx, user, callID, func(c *Call) error {
		return applyHangup(c, user, party, reason, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
	}, func(conv Conversation, c Call) Event { return endEvent(conv, c, EventCallHangup, user, party) })
	if err != nil {
		return Call{}, err
	}
	s.ended(c, ev)
	return c, nil
}

// Revoke ends a call by an administrator's decision and kills its TURN
// credentials. Revoking an ended call re-applies the relay revocation.
func (s *Service) Revoke(ctx context.Context, callID string) (Call, error) {
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		return Call{}, err
	}
	var wasLive bool
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		wasLive = !c.Status.Terminal()
		applyRevoke(c, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		return endEvent(conv, c, EventCallHangup, "", ""), wasLive
	})
	if err != nil {
		return Call{}, err
	}
	if !wasLive {
		s.revokeRelay(c)
		return c, nil
	}
	s.ended(c, ev)
	return c, nil
}

// conversationOfCall loads the conversation of a call for system-driven
// transitions (expiry, revocation). A deleted conversation yields one made
// of the call's parties.
func (s *Service) conversationOfCall(ctx context.Context, callID string) (Conversation, error) {
	c, err := s.cfg.Store.Call(ctx, callID)
	if err != nil {
		return Conversation{}, err
	}
	conv, err := s.cfg.Store.Conversation(ctx, c.ConversationID)
	if errors.Is(err, ErrNotFound) {
		return Conversation{ID: c.ConversationID, Participants: callParties(c)}, nil
	}
	return conv, err
}

// Get returns a call to a participant of its conversation.
func (s *Service) Get(ctx context.Context, user, callID string) (Call, error) {
	_, c, err := s.read(ctx, user, callID)
	return c, err
}

// GetAny returns a call whoever asks (admin).
func (s *Service) GetAny(ctx context.Context, callID string) (Call, error) {
	return s.cfg.Store.Call(ctx, callID)
}

// List returns a conversation's calls, newest first, to a participant.
func (s *Service) List(ctx context.Context, user, convID string, activeOnly bool, limit int) ([]Call, error) {
	if _, err := s.participantOf(ctx, user, convID); err != nil {
		return nil, err
	}
	return s.cfg.Store.Calls(ctx, CallFilter{ConversationID: convID, ActiveOnly: activeOnly, Limit: limit})
}

// read loads a call and its conversation and checks user takes part. A call
// whose conversation was deleted stays visible to its caller and answerer.
func (s *Service) read(ctx context.Context, user, callID string) (Conversation, Call, error) {
	if !ValidID(callID) {
		return Conversation{}, Call{}, fmt.Errorf("call %q: %w", callID, ErrNotFound)
	}
	c, err := s.cfg.Store.Call(ctx, callID)
	if err != nil {
		return Conversation{}, Call{}, err
	}
	conv, err := s.cfg.Store.Conversation(ctx, c.ConversationID)
	switch {
	case errors.Is(err, ErrNotFound):
		if user != c.Initiator && user != c.Answerer {
			return Conversation{}, Call{}, forbiddenf("not a participant of the call")
		}
		return Conversation{ID: c.ConversationID, Participants: callParties(c)}, c, nil
	case err != nil:
		return Conversation{}, Call{}, err
	case !conv.HasParticipant(user):
		return Conversation{}, Call{}, forbiddenf("not a participant of the call's conversation")
	}
	return conv, c, nil
}

// update checks user takes part, then applies fn in one store transaction
// together with the outbox entries of the event it produces.
func (s *Service) update(ctx context.Context, user, callID string, fn func(*Call) error,
	event func(Conversation, Call) Event,
) (Conversation, Call, Event, error) {
	conv, _, err := s.read(ctx, user, callID)
	if err != nil {
		return Conversation{}, Call{}, Event{}, err
	}
	c, ev, err := s.commit(ctx, callID, fn, func(c Call) (Event, bool) { return event(conv, c), true })
	if err != nil {
		return Conversation{}, Call{}, Event{}, err
	}
	return conv, c, ev, nil
}

// commit applies fn and writes the outbox entries of the event it yields
// (if ok) in the same transaction.
func (s *Service) commit(ctx context.Context, callID string, fn func(*Call) error,
	event func(Call) (Event, bool),
) (Call, Event, error) {
	var ev Event
	var out []OutboxEntry
	c, err := s.cfg.Store.UpdateCallOutbox(ctx, callID, func(c *Call) ([]OutboxEntry, error) {
		if err := fn(c); err != nil {
			return nil, err
		}
		e, ok := event(*c)
		if !ok {
			ev, out = Event{}, nil
			return nil, nil
		}
		var err error
		ev = e
		out, err = s.encode(e, *c)
		return out, err
	})
	if err != nil {
		return Call{}, Event{}, err
	}
	s.wake(out)
	return c, ev, nil
}

// signal writes the outbox entries of an event that changes no call state
// (candidates, select_answer, negotiate) and publishes it.
func (s *Service) signal(ctx context.Context, c Call, ev Event) error {
	out, err := s.encode(ev, c)
	if err != nil {
		return err
	}
	if err := s.cfg.Store.AppendOutbox(ctx, out); err != nil {
		return err
	}
	s.wake(out)
	s.emit(ev)
	return nil
}

func (s *Service) encode(ev Event, c Call) ([]OutboxEntry, error) {
	if s.cfg.Outbound == nil || ev.Type == "" {
		return nil, nil
	}
	out, err := s.cfg.Outbound.Encode(ev, c)
	if err != nil {
		return nil, fmt.Errorf("signaling: encoding %s for Matrix: %w", ev.Type, err)
	}
	return out, nil
}

func (s *Service) wake(out []OutboxEntry) {
	if len(out) > 0 && s.cfg.Outbound != nil {
		s.cfg.Outbound.Wake()
	}
}

func callParties(c Call) []string {
	out := []string{c.Initiator}
	if c.Answerer != "" && c.Answerer != c.Initiator {
		out = append(out, c.Answerer)
	}
	return out
}

// ended runs what follows a committed end of call: relay revocation, the
// expiry timer, the log line and the event.
func (s *Service) ended(c Call, ev Event) {
	s.stopExpiry(c.ID)
	s.revokeRelay(c)
	s.logTransition(c, string(c.Status))
	s.emit(ev)
}

// endEvent is the CallRejected or CallHangup event of an ended call.
func endEvent(conv Conversation, c Call, eventType, user, party string) Event {
	return newEvent(conv, c, eventType, EndPayload{
		Type: eventType, CallID: c.ID, ConversationID: c.ConversationID, ParticipantID: user,
		PartyID: party, Reason: c.EndReason, Status: c.Status,
	})
}

// newEvent addresses an event to the conversation's participants (or, for
// a conversation that is gone, to the call's parties).
func newEvent(conv Conversation, c Call, eventType string, payload any) Event {
	recipients := conv.Participants
	if len(recipients) == 0 {
		recipients = callParties(c)
	}
	return Event{
		Type: eventType, CallID: c.ID, ConversationID: c.ConversationID,
		Recipients: slices.Clone(recipients), Payload: payload,
	}
}

func (s *Service) revokeRelay(c Call) {
	if s.cfg.Relay == nil || c.RevokedUntil == nil {
		return
	}
	n := s.cfg.Relay.RevokeCall(c.ID, *c.RevokedUntil)
	if n > 0 {
		s.log.Info().Str("call_id", c.ID).Int("allocations", n).Msg("closed the relay allocations of an ended call")
	}
}

func (s *Service) emit(ev Event) {
	if s.cfg.Publisher != nil && ev.Type != "" {
		s.cfg.Publisher.Publish(ev)
	}
}

// logTransition writes one line per call transition — IDs and state only,
// never SDP.
func (s *Service) logTransition(c Call, what string) {
	ev := s.log.Info().Str("call_id", c.ID).Str("conversation_id", c.ConversationID).
		Str("status", string(c.Status)).Str("initiator", c.Initiator)
	if c.Answerer != "" {
		ev = ev.Str("answerer", c.Answerer)
	}
	if c.EndReason != "" {
		ev = ev.Str("reason", c.EndReason)
	}
	ev.Msg("call " + what)
}

// --- invite expiry ---

func (s *Service) armExpiry(c Call) {
	delay := c.InviteDeadline().Sub(s.cfg.Now())
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	if s.closed {
		return
	}
	if old, ok := s.timers[c.ID]; ok {
		old.Stop()
	}
	s.timers[c.ID] = time.AfterFunc(max(delay, 0), func() { s.expire(c.ID) })
}

func (s *Service) stopExpiry(callID string) {
	s.timerMu.Lock()
	defer s.timerMu.Unlock()
	if t, ok := s.timers[callID]; ok {
		t.Stop()
		delete(s.timers, callID)
	}
}

func (s *Service) expire(callID string) {
	s.timerMu.Lock()
	if s.closed {
		s.timerMu.Unlock()
		return
	}
	delete(s.timers, callID)
	s.wg.Add(1)
	s.timerMu.Unlock()
	defer s.wg.Done()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		s.log.Error().Err(err).Str("call_id", callID).Msg("expiring an invite")
		return
	}
	var expired bool
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		expired = applyExpire(c, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		return endEvent(conv, c, EventCallHangup, "", ""), expired
	})
	switch {
	case err != nil:
		s.log.Error().Err(err).Str("call_id", callID).Msg("expiring an invite")
		return
	case !expired:
		if c.Status == StatusRinging { // not due yet (clock skew): look again later
			s.armExpiry(c)
		}
		return
	}
	s.ended(c, ev)
}

// --- maximum call duration ---

// sweepLoop sweeps at once, then every SweepInterval until ctx is done.
func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		s.sweep(ctx)
		s.prune(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep ends every answered call whose answer is older than
// MaxCallDuration: its clients are presumably gone, and its TURN
// credentials must not live on.
func (s *Service) sweep(ctx context.Context) {
	active, err := s.cfg.Store.ActiveCalls(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Msg("sweeping answered calls")
		}
		return
	}
	for _, c := range active {
		if ctx.Err() != nil {
			return
		}
		if s.overdue(c, s.cfg.Now()) {
			s.timeout(c.ID)
		}
	}
}

// prune deletes the calls that ended more than CallRetention ago, one
// bounded batch per transaction, until none is left or ctx is done.
func (s *Service) prune(ctx context.Context) {
	before := s.cfg.Now().Add(-s.cfg.CallRetention)
	total := 0
	for ctx.Err() == nil {
		n, err := s.cfg.Store.PruneEndedCalls(ctx, before, pruneBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error().Err(err).Msg("pruning ended calls")
			}
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		s.log.Info().Int("pruned", total).Dur("retention", s.cfg.CallRetention).Msg("deleted calls that ended before the retention period")
	}
	// Revocations outlive their calls until the credentials would have
	// expired; Revocations deletes the expired ones. Without this they
	// were only pruned at start-up, one left behind per call ended.
	if _, err := s.cfg.Store.Revocations(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
		s.log.Error().Err(err).Msg("pruning expired revocations")
	}
}

// overdue reports whether c is answered and was answered more than
// MaxCallDuration before now (CreatedAt stands in for a missing AnsweredAt).
func (s *Service) overdue(c Call, now time.Time) bool {
	if c.Status != StatusAnswered {
		return false
	}
	since := c.CreatedAt
	if c.AnsweredAt != nil {
		since = *c.AnsweredAt
	}
	return now.Sub(since) > s.cfg.MaxCallDuration
}

// timeout ends one answered call past MaxCallDuration, as expire does for
// invites. Its own context lets a sweep in progress finish its call when
// Run stops.
func (s *Service) timeout(callID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		s.log.Error().Err(err).Str("call_id", callID).Msg("ending a call past its maximum duration")
		return
	}
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		now := s.cfg.Now().UTC()
		if !s.overdue(*c, now) {
			return errNotDue
		}
		end(c, StatusEnded, ReasonCallTimeout, "", now, s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		return endEvent(conv, c, EventCallHangup, "", ""), true
	})
	switch {
	case errors.Is(err, errNotDue):
		return
	case err != nil:
		s.log.Error().Err(err).Str("call_id", callID).Msg("ending a call past its maximum duration")
		return
	}
	s.log.Info().Str("call_id", c.ID).Dur("max_call_duration", s.cfg.MaxCallDuration).
		Msg("ending an answered call past its maximum duration")
	s.ended(c, ev)
}

// allowInitiate applies the per-user initiation rate limit.
func (s *Service) allowInitiate(user string) bool {
	return s.allow(s.limiters, user, rate.Limit(s.cfg.InitiateRate), s.cfg.InitiateBurst)
}

// Candidates and renegotiations fan out to every participant's WebSocket
// queue: without a bound, one client could get everyone else dropped as
// "too slow". A browser sends a few dozen candidates per call.
const (
	signalRate  = 20
	signalBurst = 200
)

func (s *Service) allowSignal(user string) bool {
	return s.allow(s.signalLimiters, user, signalRate, signalBurst)
}

func (s *Service) allow(limiters map[string]*rate.Limiter, user string, r rate.Limit, burst int) bool {
	s.limitMu.Lock()
	defer s.limitMu.Unlock()
	l, ok := limiters[user]
	if !ok {
		if len(limiters) >= 100_000 { // bound memory: forget everyone, briefly generous
			clear(limiters)
		}
		l = rate.NewLimiter(r, burst)
		limiters[user] = l
	}
	return l.AllowN(s.cfg.Now(), 1)
}
