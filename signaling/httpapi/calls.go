package httpapi

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/internal/crashpoint"
)

// The REST face of the call operations (ops.go): one route per operation,
// the call ID from the path, the request from the body.

func (s *Server) routeCalls(g *echo.Group) {
	g.GET("/calls", s.listCalls)
	for _, op := range callOps {
		var mw []echo.MiddlewareFunc
		if op.starts {
			mw = append(mw, s.refuseWhileDraining)
		}
		g.Add(op.method, op.path, s.restOp(op), mw...)
	}
}

func (s *Server) user(c echo.Context) string {
	id, _ := IdentityFrom(c) // the auth middleware guarantees one
	return id.User
}

// restOp serves op as a REST route.
func (s *Server) restOp(op callOp) echo.HandlerFunc {
	return func(c echo.Context) error {
		decode := func(req any) error {
			switch op.body {
			case bodyNone:
				return nil
			case bodyOptional:
				return decodeOptionalBody(c, s.cfg.MaxBodyBytes, req)
			default:
				return decodeBody(c, s.cfg.MaxBodyBytes, req)
			}
		}
		key, err := restIdempotencyKey(c.Request().Header)
		if err != nil {
			return err
		}
		user := s.user(c)
		call, replay, err := s.runOp(c.Request().Context(), op, user, c.Param("id"), key, decode)
		if err != nil {
			return err
		}
		// Between the commit and the answer: where a test build kills
		// the process (internal/crashpoint), as a crash would.
		crashpoint.Hit("after-commit", op.name)
		if replay {
			c.Response().Header().Set(headerIdempotentReplayed, "true")
		}
		if op.reply == replySent {
			return c.NoContent(op.status)
		}
		if call == nil { // unreachable: every other kind returns its call
			return errors.New("httpapi: operation " + op.name + " returned no call")
		}
		resp, err := s.callReply(op, user, *call)
		if err != nil {
			return err
		}
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		return c.JSON(op.status, resp)
	}
}

// restIdempotencyKey is the request's Idempotency-Key, "" without one; a
// key sent twice, empty or malformed is invalid_idempotency_key.
func restIdempotencyKey(h http.Header) (string, error) {
	vals := h.Values(headerIdempotencyKey)
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
		return vals[0], checkIdempotencyKey(vals[0])
	default:
		return "", invalidIdempotencyKey()
	}
}
