package httpapi

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"
)

// Error is the body of every error response: {"error":{"code","message"}}.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func apiError(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// handleError turns any handler error into the JSON error shape; echo's own
// errors (404, 405) keep their status.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var ae *Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &he):
		ae = apiError(he.Code, codeForStatus(he.Code), http.StatusText(he.Code))
	default:
		s.log.Error().Err(err).Str("path", c.Path()).Msg("request failed")
		ae = apiError(http.StatusInternalServerError, "internal", "internal error")
	}
	if err := c.JSON(ae.Status, map[string]*Error{"error": ae}); err != nil {
		s.log.Debug().Err(err).Msg("writing error response")
	}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	default:
		return "error"
	}
}
