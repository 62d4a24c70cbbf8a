package httpapi

import (
	"net/http"
	"strconv"

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

// summaryOf is a call as GET /calls lists it: its view without the SDP
// bodies and the media of each side (omitted when empty), which only GET
// /calls/{id} returns: up to 200 calls are listed at once.
func summaryOf(c signaling.Call) callView {
	v := viewOf(c)
	v.SDPOffer, v.SDPAnswer = "", ""
	v.CallerMedia, v.AnswererMedia = nil, nil
	return v
}

// callsResponse is GET /calls. More says that the conversation has more
// (older) calls than were listed.
type callsResponse struct {
	Calls []callView `json:"calls"` // without SDPs (summaryOf)
	More  bool       `json:"more"`
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
	resp := callsResponse{Calls: make([]callView, 0, min(len(calls), limit))}
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
