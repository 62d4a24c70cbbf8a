package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/signaling"
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
	ae := asAPIError(err)
	if ae.Status == http.StatusInternalServerError {
		s.log.Error().Err(err).Str("path", c.Path()).Msg("request failed")
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

// asAPIError maps any error to the API's error body: our own *Error as is,
// echo's HTTP errors by status, the signaling sentinels and transition
// errors to 4xx, anything else to 500 "internal" (whose details stay in the
// log, not in the response).
func asAPIError(err error) *Error {
	var ae *Error
	var he *echo.HTTPError
	var te *signaling.TransitionError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &he):
		return apiError(he.Code, codeForStatus(he.Code), http.StatusText(he.Code))
	case errors.As(err, &te):
		return apiError(http.StatusConflict, te.Code, te.Error())
	case errors.Is(err, signaling.ErrNotFound):
		// A fixed text: the error's own carries storage details.
		return apiError(http.StatusNotFound, "not_found", "no such call or conversation")
	case errors.Is(err, signaling.ErrConflict):
		return apiError(http.StatusConflict, "conflict", "it already exists")
	case errors.Is(err, signaling.ErrForbidden):
		return apiError(http.StatusForbidden, "forbidden", err.Error())
	case errors.Is(err, signaling.ErrInvalid):
		return apiError(http.StatusBadRequest, "invalid_request", err.Error())
	case errors.Is(err, signaling.ErrMatrixRTCUnsupported):
		// 409, not 5xx: the conversation's setting conflicts with the
		// request; an administrator's call_protocol: legacy resolves it.
		return apiError(http.StatusConflict, "matrixrtc_unsupported", err.Error())
	case errors.Is(err, signaling.ErrStoreUnavailable):
		return apiError(http.StatusServiceUnavailable, "store_unavailable", "the database is unavailable; retry")
	case errors.Is(err, signaling.ErrUnavailable):
		return apiError(http.StatusBadGateway, "upstream_unavailable", err.Error())
	case errors.Is(err, signaling.ErrRateLimited):
		return apiError(http.StatusTooManyRequests, "rate_limited", err.Error())
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return apiError(http.StatusServiceUnavailable, "unavailable", "the request was cancelled or timed out")
	default:
		return apiError(http.StatusInternalServerError, "internal", "internal error")
	}
}
