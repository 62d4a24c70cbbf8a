package authservice

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// Membership says whether a Matrix user is joined to a room
// (matrixrtc.require_joined). It returns ErrNotInRoom when the asker
// itself may not see the room's members, and another error when the answer
// could not be had (homeserver down).
type Membership interface {
	Joined(ctx context.Context, roomID, userID string) (bool, error)
}

// ErrNotInRoom is Membership's error when the user it asks as is not in
// the room: room state is visible to the room's members only.
var ErrNotInRoom = errors.New("the asking user is not in the room")

var _ Membership = (*MatrixMembership)(nil)

// MatrixMembership asks a homeserver's client-server API, as one user
// (icebox's Matrix service user), for a user's m.room.member state in a
// room: one small GET per check, where joined_members would list the
// whole room.
type MatrixMembership struct {
	cli *mautrix.Client
}

// NewMatrixMembership asks homeserverURL (the client-server API's base URL)
// as the user whose access token is token; each question is bounded by
// timeout.
func NewMatrixMembership(homeserverURL, token string, timeout time.Duration) (*MatrixMembership, error) {
	cli, err := mautrix.NewClient(homeserverURL, "", token)
	if err != nil {
		return nil, fmt.Errorf("authservice: membership: %w", err)
	}
	// mautrix's own logging names URLs (room and user IDs) at debug
	// level; the service logs the outcome itself. Its retries would
	// hold a token request for seconds: a client retries by itself.
	cli.Log = zerolog.Nop()
	cli.DefaultHTTPRetries = 0
	cli.Client = &http.Client{Timeout: timeout}
	return &MatrixMembership{cli: cli}, nil
}

// Joined implements Membership.
func (m *MatrixMembership) Joined(ctx context.Context, roomID, userID string) (bool, error) {
	var member event.MemberEventContent
	err := m.cli.StateEvent(ctx, id.RoomID(roomID), event.StateMember, userID, &member)
	switch {
	case err == nil:
		return member.Membership == event.MembershipJoin, nil
	case errors.Is(err, mautrix.MNotFound):
		// The room has no member event of the user: never invited,
		// never joined.
		return false, nil
	case errors.Is(err, mautrix.MForbidden):
		return false, ErrNotInRoom
	}
	return false, fmt.Errorf("membership: %w", err)
}

// CloseIdleConnections drops idle connections to the homeserver
// (Service.Close).
func (m *MatrixMembership) CloseIdleConnections() { m.cli.Client.CloseIdleConnections() }

// checkJoined applies matrixrtc.require_joined: the verified user must be
// joined to the Matrix room the request names. The refusals are
// lk-jwt-service's 401 M_UNAUTHORIZED (the same status and code as any
// authorisation failure, so clients behave the same) with a message that
// says why; only a homeserver that cannot be asked gets a 503, which
// clients may retry.
func (s *Service) checkJoined(ctx context.Context, endpoint, roomID, userID string) error {
	if s.cfg.Membership == nil {
		return nil
	}
	joined, err := s.cfg.Membership.Joined(ctx, roomID, userID)
	switch {
	case err == nil && joined:
		return nil
	case err == nil:
		s.log.Warn().Str("endpoint", endpoint).Str("user", userID).Str("room_id", roomID).Msg("refused: the user is not joined to the room")
		return &matrixError{status: http.StatusUnauthorized, errcode: "M_UNAUTHORIZED",
			msg: "The request could not be authorised: " + userID + " is not joined to " + roomID + ".", reason: reasonNotJoined}
	case errors.Is(err, ErrNotInRoom):
		s.log.Warn().Str("endpoint", endpoint).Str("user", userID).Str("room_id", roomID).
			Msg("refused: room membership cannot be checked, icebox's Matrix user is not in the room (invite it)")
		return &matrixError{status: http.StatusUnauthorized, errcode: "M_UNAUTHORIZED",
			msg:    "The request could not be authorised: room membership cannot be checked, as this service's Matrix user is not in " + roomID + ".",
			reason: reasonMembershipUnknown}
	default:
		s.log.Error().Str("endpoint", endpoint).Str("room_id", roomID).Str("error", err.Error()).Msg("room membership could not be checked")
		return &matrixError{status: http.StatusServiceUnavailable, errcode: "M_UNKNOWN",
			msg: "Room membership could not be checked at the homeserver, retry later", reason: reasonMembershipFailed}
	}
}
