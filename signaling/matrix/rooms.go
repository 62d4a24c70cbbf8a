package matrix

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/singleflight"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/signaling"
)

// The rooms part: the rooms icebox creates for conversations, the rooms
// the service user is invited to (joined automatically), and joined rooms
// as conversations of their members.

// roomTimeout bounds room creation.
const roomTimeout = 30 * time.Second

const (
	// joinAttempts: a failed auto-join is retried after later syncs, up to
	// this many attempts in all.
	joinAttempts = 5
	joinTimeout  = 30 * time.Second
)

// Results of an auto-join: the result label of icebox_matrix_autojoin_total.
const (
	joinOK      = "ok"      // joined
	joinFailed  = "failed"  // an attempt failed; retried after the next sync
	joinDropped = "dropped" // refused by the homeserver, or out of attempts
)

var joinResults = []string{joinOK, joinFailed, joinDropped}

// rooms creates the conversations' rooms and follows the service user's
// memberships.
type rooms struct {
	cli        *mautrix.Client
	log        zerolog.Logger
	user       string
	homeserver string
	encrypted  bool // rooms are created encrypted
	now        func() time.Time
	autojoin   *prometheus.CounterVec // set by New with the inbound metrics
	// timing is the auto-join's backoff: the sync's (a join is retried
	// after a later sync).
	timing syncTiming

	creating singleflight.Group        // by conversation ID
	pending  map[id.RoomID]pendingJoin // failed joins retried; the sync goroutine only
}

// newRooms makes the rooms part; New sets its autojoin counter.
func newRooms(cfg Config, cli *mautrix.Client, log zerolog.Logger) *rooms {
	return &rooms{cli: cli, log: log, user: cfg.UserID, homeserver: cfg.HomeserverURL, encrypted: cfg.Encryption != nil,
		now: cfg.Now, timing: syncTiming{minBackoff: defaultSyncMinBackoff, maxBackoff: defaultSyncMaxBackoff},
		pending: make(map[id.RoomID]pendingJoin)}
}

// EnsureRoom returns conv's room, creating it when conv has none: a private
// room (preset private_chat: invite only, shared history) named
// "icebox: <conversation id>", with the participants that are Matrix users
// invited. Local participants (IDs that are not @name:server) have no
// Matrix presence: the service user stands for them in the room, so it
// counts as the call peer and is not listed in io.element.functional_members
// (Element offers 1:1 calls only with exactly two non-functional members).
//
// The caller stores the returned room ID on the conversation. Concurrent
// calls for one conversation share one creation.
func (b *Bridge) EnsureRoom(ctx context.Context, conv signaling.Conversation) (string, error) {
	return b.rooms.ensure(ctx, conv)
}

func (r *rooms) ensure(ctx context.Context, conv signaling.Conversation) (string, error) {
	if conv.RoomID != "" {
		return conv.RoomID, nil
	}
	v, err, _ := r.creating.Do(conv.ID, func() (any, error) { return r.create(ctx, conv) })
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

func (r *rooms) create(ctx context.Context, conv signaling.Conversation) (string, error) {
	var invite []id.UserID
	for _, p := range conv.Participants {
		if isMatrixUserID(p) && p != r.user && !slices.Contains(invite, id.UserID(p)) {
			invite = append(invite, id.UserID(p))
		}
	}
	req := &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Name:   "icebox: " + conv.ID,
		Invite: invite,
		// Members may join the room's MatrixRTC calls (Element Call,
		// Element X): a call membership is a state event, which
		// private_chat reserves to power 50. The override replaces the
		// default "events" map, so it restates the defaults (as Element
		// Web does when it creates a room).
		PowerLevelOverride: &event.PowerLevelsEventContent{Events: map[string]int{
			"m.room.name": 50, "m.room.avatar": 50, "m.room.canonical_alias": 50, "m.room.topic": 50,
			"m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.encryption": 100,
			"m.room.tombstone": 100, "m.room.server_acl": 100,
			rtcMemberType.Type: 0,
		}},
	}
	// With encryption, the room is encrypted from its creation: no call
	// event can ever be sent into it in the clear.
	if r.encrypted {
		req.InitialState = []*event.Event{encryptionState()}
	}
	ctx, cancel := context.WithTimeout(quiet(ctx), roomTimeout)
	defer cancel()
	resp, err := r.cli.CreateRoom(ctx, req)
	if err != nil {
		return "", fmt.Errorf("matrix: create the room of conversation %q on %s: %w", conv.ID, r.homeserver, err)
	}
	r.log.Info().Str("conversation_id", conv.ID).Str("room_id", string(resp.RoomID)).
		Int("invited", len(invite)).Msg("matrix room created")
	return string(resp.RoomID), nil
}

// --- memberships ---

// pendingJoin is an invitation whose join failed and is retried.
type pendingJoin struct {
	attempts int
	next     time.Time
}

// onMember joins the rooms the service user is invited to, keeps the
// participants of a joined room's conversation in step with its members,
// and ends the calls of a member who left or was kicked or banned.
func (r *rooms) onMember(ctx context.Context, evt *event.Event, calls InboundCalls) {
	if evt.Mautrix.EventSource&event.SourceInvite == 0 {
		if evt.Mautrix.EventSource&event.SourceJoin != 0 && evt.GetStateKey() != r.user {
			joined := r.mapRoom(ctx, evt.RoomID, calls) // someone joined or left a room we are in
			r.memberGone(ctx, evt, joined, calls)
		}
		return
	}
	if evt.GetStateKey() != r.user {
		return
	}
	var m struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(evt.Content.VeryRaw, &m) != nil || m.Membership != string(event.MembershipInvite) {
		return
	}
	r.log.Info().Str("room_id", string(evt.RoomID)).Str("inviter", string(evt.Sender)).Msg("matrix invitation received")
	r.join(ctx, evt.RoomID, 1, calls)
}

// join tries to join a room once; a transient failure is retried after a
// later sync (retryJoins).
func (r *rooms) join(ctx context.Context, roomID id.RoomID, attempt int, calls InboundCalls) {
	jctx, cancel := context.WithTimeout(quiet(ctx), joinTimeout)
	_, err := r.cli.JoinRoomByID(jctx, roomID)
	cancel()
	if err == nil {
		delete(r.pending, roomID)
		r.autojoin.WithLabelValues(joinOK).Inc()
		r.log.Info().Str("room_id", string(roomID)).Int("attempts", attempt).Msg("matrix room joined")
		r.mapRoom(ctx, roomID, calls)
		return
	}
	f := classify(err)
	// A 403 is retried too (within joinAttempts): an invitation over
	// federation can reach us before the inviting homeserver has the
	// invite in the room's state, and until then it refuses the join
	// (Dendrite: "not allowed to change their membership from leave to
	// join"); seen in the federated browser bed (jssdk_federation_test.go).
	if (f.permanent && f.kind != kindForbidden) || attempt >= joinAttempts {
		delete(r.pending, roomID)
		r.autojoin.WithLabelValues(joinDropped).Inc()
		r.log.Error().Err(err).Str("room_id", string(roomID)).Str("kind", f.kind).Int("attempts", attempt).
			Msg("matrix room not joined; giving up")
		return
	}
	next := r.now().Add(max(backoff(attempt, r.timing.minBackoff, r.timing.maxBackoff), f.retryAfter))
	r.pending[roomID] = pendingJoin{attempts: attempt, next: next}
	r.autojoin.WithLabelValues(joinFailed).Inc()
	r.log.Warn().Err(err).Str("room_id", string(roomID)).Str("kind", f.kind).Int("attempts", attempt).
		Time("next_attempt", next).Msg("matrix room not joined; will retry")
}

// retryJoins retries the failed joins that are due. The invitation is not
// delivered again by later syncs, so the bridge keeps it (in memory: an
// initial sync after a restart lists pending invitations anew).
func (r *rooms) retryJoins(ctx context.Context, calls InboundCalls) {
	now := r.now()
	for roomID, p := range r.pending {
		if !now.Before(p.next) {
			r.join(ctx, roomID, p.attempts+1, calls)
		}
	}
}

// memberGone ends the live calls of the member a leave or ban event is
// about — leaving the room counts as a hangup (the spec) — unless joined,
// the room's joined members now, still lists them (an old event replayed
// by a sync without a token, after they came back). joined nil: the
// members could not be listed, and nothing is ended on a guess.
func (r *rooms) memberGone(ctx context.Context, evt *event.Event, joined map[id.UserID]bool, calls InboundCalls) {
	var m struct {
		Membership string `json:"membership"`
	}
	if calls == nil || joined == nil || json.Unmarshal(evt.Content.VeryRaw, &m) != nil ||
		(m.Membership != string(event.MembershipLeave) && m.Membership != string(event.MembershipBan)) {
		return
	}
	user := evt.GetStateKey()
	if joined[id.UserID(user)] {
		return
	}
	ended, err := calls.MemberLeft(ctx, string(evt.RoomID), user)
	line := r.log.Info()
	if err != nil {
		line = r.log.Warn().Err(err)
	}
	if err != nil || len(ended) > 0 {
		line.Str("room_id", string(evt.RoomID)).Str("user", user).Str("membership", m.Membership).
			Str("by", string(evt.Sender)).Int("calls_ended", len(ended)).Msg("matrix member left; their calls ended")
	}
}

// mapRoom makes a joined room a conversation of its joined members (or
// refreshes them) and returns who is joined (nil if that could not be
// read). Failures are logged: the next membership change or join tries
// again.
func (r *rooms) mapRoom(ctx context.Context, roomID id.RoomID, calls InboundCalls) map[id.UserID]bool {
	if calls == nil {
		return nil
	}
	mctx, cancel := context.WithTimeout(quiet(ctx), joinTimeout)
	resp, err := r.cli.JoinedMembers(mctx, roomID)
	cancel()
	if err != nil {
		r.log.Warn().Err(err).Str("room_id", string(roomID)).Msg("listing the members of a joined room")
		return nil
	}
	joined := make(map[id.UserID]bool, len(resp.Joined))
	for user := range resp.Joined {
		joined[user] = true
	}
	var members []string
	for user := range resp.Joined {
		if string(user) != r.user {
			members = append(members, string(user))
		}
	}
	slices.Sort(members)
	conv, err := calls.RoomJoined(ctx, string(roomID), members)
	if err != nil {
		r.log.Warn().Err(err).Str("room_id", string(roomID)).Msg("mapping a joined room to a conversation")
		return joined
	}
	r.log.Info().Str("room_id", string(roomID)).Str("conversation_id", conv.ID).Int("participants", len(conv.Participants)).
		Msg("matrix room mapped to a conversation")
	return joined
}

// isMatrixUserID reports whether s looks like a Matrix user ID,
// @localpart:server. Anything else is a local icebox user.
func isMatrixUserID(s string) bool {
	return len(s) <= 255 && strings.HasPrefix(s, "@") && strings.Index(s, ":") > 1
}
