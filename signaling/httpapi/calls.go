package httpapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/signaling"
)

func (s *Server) routeCalls(g *echo.Group) {
	g.POST("/calls/initiate", s.initiate, s.refuseWhileDraining)
	g.GET("/calls", s.listCalls)
	g.GET("/calls/:id", s.getCall)
	g.POST("/calls/:id/answer", s.answer)
	g.POST("/calls/:id/candidates", s.candidates)
	g.POST("/calls/:id/select_answer", s.selectAnswer)
	g.POST("/calls/:id/negotiate", s.negotiate)
	g.POST("/calls/:id/reject", s.reject)
	g.POST("/calls/:id/hangup", s.hangup)
}

func (s *Server) user(c echo.Context) string {
	id, _ := IdentityFrom(c) // the auth middleware guarantees one
	return id.User
}

func (s *Server) initiate(c echo.Context) error {
	var req signaling.InitiateRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	call, err := s.cfg.Calls.Initiate(c.Request().Context(), s.user(c), req)
	if err != nil {
		return err
	}
	return s.respondCall(c, http.StatusCreated, call, true)
}

func (s *Server) answer(c echo.Context) error {
	var req signaling.AnswerRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	call, err := s.cfg.Calls.Answer(c.Request().Context(), s.user(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return s.respondCall(c, http.StatusOK, call, true)
}

func (s *Server) candidates(c echo.Context) error {
	var req signaling.CandidatesRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	if err := s.cfg.Calls.Candidates(c.Request().Context(), s.user(c), c.Param("id"), req); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) selectAnswer(c echo.Context) error {
	var req signaling.SelectAnswerRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	call, err := s.cfg.Calls.SelectAnswer(c.Request().Context(), s.user(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return s.respondCall(c, http.StatusOK, call, false)
}

func (s *Server) negotiate(c echo.Context) error {
	var req signaling.NegotiateRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	if err := s.cfg.Calls.Negotiate(c.Request().Context(), s.user(c), c.Param("id"), req); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) reject(c echo.Context) error {
	var req signaling.EndRequest
	if err := decodeOptionalBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	call, err := s.cfg.Calls.Reject(c.Request().Context(), s.user(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return s.respondCall(c, http.StatusOK, call, false)
}

func (s *Server) hangup(c echo.Context) error {
	var req signaling.EndRequest
	if err := decodeOptionalBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	call, err := s.cfg.Calls.Hangup(c.Request().Context(), s.user(c), c.Param("id"), req)
	if err != nil {
		return err
	}
	return s.respondCall(c, http.StatusOK, call, false)
}

func (s *Server) getCall(c echo.Context) error {
	call, err := s.cfg.Calls.Get(c.Request().Context(), s.user(c), c.Param("id"))
	if err != nil {
		return err
	}
	return s.respondCall(c, http.StatusOK, call, false)
}

// respondCall writes a call, with per-call ICE servers for the caller when
// the call is live and withICE is set.
func (s *Server) respondCall(c echo.Context, status int, call signaling.Call, withICE bool) error {
	resp := callResponse{callView: viewOf(call), Matrix: matrixOf(call)}
	if withICE && !call.Status.Terminal() {
		servers, _, err := s.iceServers(s.user(c), call.ID)
		if err != nil {
			return err
		}
		resp.ICEServers = servers
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(status, resp)
}

// wsCommand is the envelope of a command sent over the WebSocket.
type wsCommand struct {
	Type   string `json:"type"`
	Ref    string `json:"ref,omitempty"`
	CallID string `json:"call_id,omitempty"`
}

// command runs a WebSocket command: the same operations as the REST
// routes, with the call ID in "call_id".
func (s *Server) command(ctx context.Context, user string, msg json.RawMessage) (any, error) {
	var env wsCommand
	if err := json.Unmarshal(msg, &env); err != nil {
		return nil, apiError(http.StatusBadRequest, "invalid_json", "invalid JSON")
	}
	calls := s.cfg.Calls
	withICE := func(call signaling.Call, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		servers, _, err := s.iceServers(user, call.ID)
		if err != nil {
			return nil, err
		}
		return callResponse{callView: viewOf(call), ICEServers: servers, Matrix: matrixOf(call)}, nil
	}
	view := func(call signaling.Call, err error) (any, error) {
		if err != nil {
			return nil, err
		}
		return viewOf(call), nil
	}
	switch env.Type {
	case "initiate":
		if s.cfg.Draining() {
			return nil, apiError(http.StatusServiceUnavailable, "draining", "this server is shutting down; retry on another")
		}
		var req struct {
			wsCommand
			signaling.InitiateRequest
		}
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		return withICE(calls.Initiate(ctx, user, req.InitiateRequest))
	case "answer":
		var req struct {
			wsCommand
			signaling.AnswerRequest
		}
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		return withICE(calls.Answer(ctx, user, env.CallID, req.AnswerRequest))
	case "candidates":
		var req struct {
			wsCommand
			signaling.CandidatesRequest
		}
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		if err := calls.Candidates(ctx, user, env.CallID, req.CandidatesRequest); err != nil {
			return nil, err
		}
		return map[string]string{"status": "sent"}, nil
	case "select_answer":
		var req struct {
			wsCommand
			signaling.SelectAnswerRequest
		}
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		return view(calls.SelectAnswer(ctx, user, env.CallID, req.SelectAnswerRequest))
	case "negotiate":
		var req struct {
			wsCommand
			signaling.NegotiateRequest
		}
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		if err := calls.Negotiate(ctx, user, env.CallID, req.NegotiateRequest); err != nil {
			return nil, err
		}
		return map[string]string{"status": "sent"}, nil
	case "reject", "hangup":
		var req struct {
			wsCommand
			signaling.EndRequest
		}
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		if env.Type == "reject" {
			return view(calls.Reject(ctx, user, env.CallID, req.EndRequest))
		}
		return view(calls.Hangup(ctx, user, env.CallID, req.EndRequest))
	case "get":
		var req wsCommand
		if err := decodeJSON(msg, &req); err != nil {
			return nil, err
		}
		return view(calls.Get(ctx, user, env.CallID))
	default:
		return nil, apiError(http.StatusBadRequest, "unknown_command",
			"type must be one of initiate, answer, candidates, select_answer, negotiate, reject, hangup, get")
	}
}
