package httpapi

import (
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/signaling"
)

// conversationRequest is PUT /admin/conversations/{id}.
type conversationRequest struct {
	Participants []string `json:"participants"`
	RoomID       string   `json:"room_id,omitempty"`
	// CallProtocol is the conversation's call protocol: legacy, matrixrtc
	// or auto; "" follows matrix.call_protocol; absent keeps the stored one.
	CallProtocol *string `json:"call_protocol,omitempty"`
}

// conversationView is a conversation as the admin API shows it: the
// stored fields and the protocol its next call would use.
type conversationView struct {
	signaling.Conversation
	CallProtocolResolved signaling.ResolvedProtocol `json:"call_protocol_resolved"`
}

func (s *Server) conversationView(c echo.Context, conv signaling.Conversation) conversationView {
	return conversationView{Conversation: conv, CallProtocolResolved: s.cfg.Calls.CallProtocol(c.Request().Context(), conv)}
}

func (s *Server) routeAdmin(g *echo.Group) {
	g.PUT("/admin/conversations/:id", s.putConversation)
	g.GET("/admin/conversations/:id", s.getConversation)
	g.DELETE("/admin/conversations/:id", s.deleteConversation)
	g.GET("/admin/calls", s.adminActiveCalls)
	g.GET("/admin/calls/:id", s.adminGetCall)
	g.POST("/admin/calls/:id/revoke", s.revokeCall)
	s.routeSessions(g)
	g.GET("/admin/keyring", s.getKeyring)
	g.POST("/admin/keyring/rotate", s.rotateKeyring)
	// Go's profiles, for operators and `make bench`: CPU (?seconds=N),
	// execution trace, and the named ones (heap, allocs, goroutine, …).
	// Admin only: a profile shows what the process does, and a CPU profile
	// costs while it runs.
	g.GET("/admin/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
	g.GET("/admin/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(pprof.Trace)))
	g.GET("/admin/debug/pprof/:name", func(c echo.Context) error {
		pprof.Handler(c.Param("name")).ServeHTTP(c.Response(), c.Request())
		return nil
	})
}

func (s *Server) putConversation(c echo.Context) error {
	var req conversationRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	conv, err := s.cfg.Calls.PutConversationSpec(c.Request().Context(), c.Param("id"),
		signaling.ConversationSpec{Participants: req.Participants, RoomID: req.RoomID, CallProtocol: req.CallProtocol})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.conversationView(c, conv))
}

func (s *Server) getConversation(c echo.Context) error {
	if !signaling.ValidID(c.Param("id")) {
		return apiError(http.StatusNotFound, "not_found", "no such conversation")
	}
	conv, err := s.cfg.Calls.Conversation(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.conversationView(c, conv))
}

func (s *Server) deleteConversation(c echo.Context) error {
	if !signaling.ValidID(c.Param("id")) {
		return apiError(http.StatusNotFound, "not_found", "no such conversation")
	}
	if err := s.cfg.Calls.DeleteConversation(c.Request().Context(), c.Param("id")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) adminGetCall(c echo.Context) error {
	if !signaling.ValidCallID(c.Param("id")) {
		return apiError(http.StatusNotFound, "not_found", "no such call")
	}
	call, err := s.cfg.Calls.GetAny(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewOf(call))
}

// revokeCall ends a call and kills its TURN credentials at once.
func (s *Server) revokeCall(c echo.Context) error {
	if !signaling.ValidCallID(c.Param("id")) {
		return apiError(http.StatusNotFound, "not_found", "no such call")
	}
	call, err := s.cfg.Calls.Revoke(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewOf(call))
}

// activeCall is one live call in GET /admin/calls: who and since when,
// never an SDP body.
type activeCall struct {
	ID             string           `json:"id"`
	ConversationID string           `json:"conversation_id"`
	Status         signaling.Status `json:"status"`
	Initiator      string           `json:"initiator"`
	Invitee        string           `json:"invitee,omitempty"`
	Answerer       string           `json:"answerer,omitempty"`
	Protocol       string           `json:"protocol"` // legacy or matrixrtc
	CreatedAt      time.Time        `json:"created_at"`
	AnsweredAt     *time.Time       `json:"answered_at,omitempty"`
}

// activeCallsResponse is GET /admin/calls: the live calls and their count
// by state (ringing, answered; both always present).
type activeCallsResponse struct {
	ByStatus map[signaling.Status]int `json:"by_status"`
	Calls    []activeCall             `json:"calls"`
}

// adminActiveCalls lists the ringing and answered calls of every
// conversation (for the status page). Ended calls are not indexed across
// conversations, so they are not counted here; icebox's metrics count them.
func (s *Server) adminActiveCalls(c echo.Context) error {
	resp := activeCallsResponse{
		ByStatus: map[signaling.Status]int{signaling.StatusRinging: 0, signaling.StatusAnswered: 0},
		Calls:    []activeCall{},
	}
	if s.cfg.ActiveCalls != nil {
		calls, err := s.cfg.ActiveCalls(c.Request().Context())
		if err != nil {
			return err
		}
		for _, call := range calls {
			resp.ByStatus[call.Status]++
			resp.Calls = append(resp.Calls, activeCall{
				ID: call.ID, ConversationID: call.ConversationID, Status: call.Status,
				Initiator: call.Initiator, Invitee: call.Invitee, Answerer: call.Answerer,
				Protocol: call.ProtocolName(), CreatedAt: call.CreatedAt, AnsweredAt: call.AnsweredAt,
			})
		}
	}
	return c.JSON(http.StatusOK, resp)
}
