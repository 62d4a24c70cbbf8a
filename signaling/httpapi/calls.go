package httpapi

import (
	"errors"
	"net/http"
	"strings"

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
// key sent twice, empty or malformed is invalid_idempotency_key. The IETF
// draft makes the value a structured-field string ("…", RFC 8941 §3.3.3),
// which is unquoted here, so that "k" over REST and "idempotency_key":"k"
// in a command are one key; a bare value (what many clients send) is the
// key as it is.
func restIdempotencyKey(h http.Header) (string, error) {
	vals := h.Values(headerIdempotencyKey)
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", invalidIdempotencyKey()
	}
	key := vals[0]
	if strings.HasPrefix(key, `"`) {
		var ok bool
		if key, ok = sfString(key); !ok {
			return "", invalidIdempotencyKey()
		}
	}
	return key, checkIdempotencyKey(key)
}

// sfString unquotes an RFC 8941 string: printable ASCII between double
// quotes, where \\ and \" are the only escapes.
func sfString(v string) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v)-1 || (v[i] != '"' && v[i] != '\\') {
				return "", false
			}
			b.WriteByte(v[i])
		case c == '"' || c < 0x20 || c > 0x7e:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
