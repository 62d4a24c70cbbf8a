package httpapi

import (
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"
)

// Sessions is the relay's admin face: its live allocations, and the
// per-user bandwidth overrides (held in memory by the relay).
type Sessions interface {
	// ListAllocations lists the live allocations of user and of callID
	// (empty: any).
	ListAllocations(user, callID string) any
	// KillAllocation closes the allocation named id; false: no such one.
	KillAllocation(id string) bool
	// KillAllocations closes every allocation of user and of callID (at
	// least one given) and returns how many.
	KillAllocations(user, callID string) int
	// UserBandwidth describes user's per-user bandwidth limit.
	UserBandwidth(user string) any
	// SetUserBandwidth overrides the per-user limit of user (bits per
	// second, 0 = unlimited); ClearUserBandwidth forgets the override.
	SetUserBandwidth(user string, bps int64) error
	ClearUserBandwidth(user string)
}

// maxUserParam bounds a user ID in an admin path (Matrix IDs are at most
// 255 bytes).
const maxUserParam = 255

func (s *Server) routeSessions(g *echo.Group) {
	g.GET("/admin/allocations", s.allocations)
	g.DELETE("/admin/allocations", s.killAllocations)
	g.DELETE("/admin/allocations/:id", s.killAllocation)
	g.GET("/admin/users/:user/bandwidth", s.getUserBandwidth)
	g.PUT("/admin/users/:user/bandwidth", s.putUserBandwidth)
	g.DELETE("/admin/users/:user/bandwidth", s.deleteUserBandwidth)
}

// allocations is GET /admin/allocations[?user=U][&call=C].
func (s *Server) allocations(c echo.Context) error {
	if s.cfg.Sessions != nil {
		return c.JSON(http.StatusOK, map[string]any{
			"allocations": s.cfg.Sessions.ListAllocations(c.QueryParam("user"), c.QueryParam("call")),
		})
	}
	if s.cfg.Allocations == nil {
		return c.JSON(http.StatusOK, map[string]any{"allocations": []any{}})
	}
	return c.JSON(http.StatusOK, map[string]any{"allocations": s.cfg.Allocations()})
}

// killAllocation is DELETE /admin/allocations/{id}: 204, or 404 for an ID
// that names no live allocation.
func (s *Server) killAllocation(c echo.Context) error {
	if s.cfg.Sessions == nil || !s.cfg.Sessions.KillAllocation(c.Param("id")) {
		return apiError(http.StatusNotFound, "not_found", "no such allocation")
	}
	return c.NoContent(http.StatusNoContent)
}

// killAllocations is DELETE /admin/allocations?user=U and/or ?call=C: it
// closes every allocation of the user, of the call (or of the user in
// the call) and says how many. Without either it refuses: a kill of every
// allocation is a restart, not a forgotten parameter.
func (s *Server) killAllocations(c echo.Context) error {
	user, call := c.QueryParam("user"), c.QueryParam("call")
	if user == "" && call == "" {
		return apiError(http.StatusBadRequest, "bad_request", "name the allocations to kill: ?user= or ?call=")
	}
	n := 0
	if s.cfg.Sessions != nil {
		n = s.cfg.Sessions.KillAllocations(user, call)
	}
	return c.JSON(http.StatusOK, map[string]int{"killed": n})
}

// userParam is the :user path parameter, unescaped ("@alice:example.org"
// may come as %40alice%3Aexample.org).
func userParam(c echo.Context) (string, error) {
	u, err := url.PathUnescape(c.Param("user"))
	if err != nil || u == "" || len(u) > maxUserParam {
		return "", apiError(http.StatusBadRequest, "bad_request", "invalid user in the path")
	}
	return u, nil
}

func (s *Server) sessionsOr404() error {
	if s.cfg.Sessions == nil {
		return apiError(http.StatusNotFound, "not_found", "this icebox runs no relay")
	}
	return nil
}

// getUserBandwidth is GET /admin/users/{user}/bandwidth.
func (s *Server) getUserBandwidth(c echo.Context) error {
	if err := s.sessionsOr404(); err != nil {
		return err
	}
	user, err := userParam(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.cfg.Sessions.UserBandwidth(user))
}

// bandwidthRequest is PUT /admin/users/{user}/bandwidth.
type bandwidthRequest struct {
	MaxBPS *int64 `json:"max_bps"` // bits per second; 0 = unlimited
}

// putUserBandwidth overrides a user's per-user bandwidth limit, at once
// for their live allocations, until DELETE or a restart.
func (s *Server) putUserBandwidth(c echo.Context) error {
	if err := s.sessionsOr404(); err != nil {
		return err
	}
	user, err := userParam(c)
	if err != nil {
		return err
	}
	var req bandwidthRequest
	if err := decodeBody(c, s.cfg.MaxBodyBytes, &req); err != nil {
		return err
	}
	if req.MaxBPS == nil || *req.MaxBPS < 0 || (*req.MaxBPS > 0 && *req.MaxBPS < 8) {
		return apiError(http.StatusBadRequest, "bad_request", "max_bps: bits per second, at least 8, or 0 for unlimited")
	}
	if err := s.cfg.Sessions.SetUserBandwidth(user, *req.MaxBPS); err != nil {
		return apiError(http.StatusBadRequest, "bad_request", err.Error())
	}
	return c.JSON(http.StatusOK, s.cfg.Sessions.UserBandwidth(user))
}

// deleteUserBandwidth forgets a user's override: the configured
// turn.quotas.max_bps_per_user applies again.
func (s *Server) deleteUserBandwidth(c echo.Context) error {
	if err := s.sessionsOr404(); err != nil {
		return err
	}
	user, err := userParam(c)
	if err != nil {
		return err
	}
	s.cfg.Sessions.ClearUserBandwidth(user)
	return c.JSON(http.StatusOK, s.cfg.Sessions.UserBandwidth(user))
}
