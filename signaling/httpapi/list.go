package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/signaling"
)

// Limits of GET /calls. A listing carries no SDP (each is up to 64 KiB, two
// per call), so an item is well under 1 KiB and a response under
// listLimitMax KiB; the server reads at most listLimitMax+1 calls for it.
const (
	listLimitDefault = 50
	listLimitMax     = 200
)

// callSummary is a call as GET /calls lists it: everything but the SDP
// bodies, which only GET /calls/{id} returns. Field names are those of the
// full call.
type callSummary struct {
	ID             string           `json:"id"`
	ConversationID string           `json:"conversation_id"`
	RoomID         string           `json:"room_id,omitempty"`
	Initiator      string           `json:"initiator"`
	Invitee        string           `json:"invitee,omitempty"`
	PartyID        string           `json:"party_id"`
	Status         signaling.Status `json:"status"`
	Answerer       string           `json:"answerer,omitempty"`
	AnswerPartyID  string           `json:"answer_party_id,omitempty"`
	LifetimeMS     int64            `json:"lifetime_ms"`
	Version        string           `json:"version"`

	CreatedAt  time.Time  `json:"created_at"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	EndReason  string     `json:"end_reason,omitempty"`
	EndedBy    string     `json:"ended_by,omitempty"`

	MatrixInviteEventID string `json:"matrix_invite_event_id,omitempty"`
	MatrixPartyID       string `json:"matrix_party_id,omitempty"`
}

func summaryOf(c signaling.Call) callSummary {
	return callSummary{
		ID: c.ID, ConversationID: c.ConversationID, RoomID: c.RoomID,
		Initiator: c.Initiator, Invitee: c.Invitee, PartyID: c.PartyID, Status: c.Status,
		Answerer: c.Answerer, AnswerPartyID: c.AnswerPartyID, LifetimeMS: c.LifetimeMS, Version: c.Version,
		CreatedAt: c.CreatedAt, AnsweredAt: c.AnsweredAt, EndedAt: c.EndedAt,
		EndReason: c.EndReason, EndedBy: c.EndedBy,
		MatrixInviteEventID: c.MatrixInviteEventID, MatrixPartyID: c.MatrixPartyID,
	}
}

// callsResponse is GET /calls. More says that the conversation has more
// (older) calls than were listed.
type callsResponse struct {
	Calls []callSummary `json:"calls"`
	More  bool          `json:"more"`
}

// listCalls serves GET /calls?conversation_id=C[&active=true][&limit=N]: the
// conversation's newest calls first, without SDPs, N (default 50, 1-200) at
// most.
func (s *Server) listCalls(c echo.Context) error {
	conv := c.QueryParam("conversation_id")
	if conv == "" {
		return apiError(http.StatusBadRequest, "invalid_request", "query parameter conversation_id is required")
	}
	active := false
	if v := c.QueryParam("active"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return apiError(http.StatusBadRequest, "invalid_request", "active must be true or false")
		}
		active = b
	}
	limit := listLimitDefault
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > listLimitMax {
			return apiError(http.StatusBadRequest, "invalid_request", "limit must be 1-"+strconv.Itoa(listLimitMax))
		}
		limit = n
	}
	// One more than asked tells whether there are more. The store decodes
	// whole calls (SDPs too), so this bound is also what a listing costs
	// in memory.
	calls, err := s.cfg.Calls.List(c.Request().Context(), s.user(c), conv, active, limit+1)
	if err != nil {
		return err
	}
	resp := callsResponse{Calls: make([]callSummary, 0, min(len(calls), limit))}
	for i, call := range calls {
		if i == limit {
			resp.More = true
			break
		}
		resp.Calls = append(resp.Calls, summaryOf(call))
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, resp)
}
