package httpapi

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
)

// corsOrigins is one configuration of the allowed browser origins.
type corsOrigins struct {
	any   bool            // "*": every origin
	exact map[string]bool // lower-case "scheme://host[:port]"
}

func (o *corsOrigins) allows(origin string) bool {
	return o.any || o.exact[strings.ToLower(origin)]
}

// corsMaxAge is how long (seconds) a browser may cache a preflight's answer;
// short, so that a reload that removes an origin takes effect soon.
const corsMaxAge = 600

// SetCORS replaces the browser origins allowed to call the API and to open
// /ws (Config.CORSOrigins), for the requests from now on.
func (s *Server) SetCORS(origins []string) {
	o := &corsOrigins{exact: make(map[string]bool, len(origins))}
	patterns := make([]string, 0, len(origins))
	for _, v := range origins {
		if v == "*" {
			o.any = true
			patterns = append(patterns, "*")
			continue
		}
		o.exact[strings.ToLower(v)] = true
		// The WebSocket library matches path.Match patterns; an origin is
		// matched literally ("[::1]" is not a character class).
		patterns = append(patterns, escapePattern(v))
	}
	s.cors.Store(o)
	if s.cfg.Hub != nil {
		s.cfg.Hub.SetOriginPatterns(patterns)
	}
}

// escapePattern quotes path.Match's special characters.
func escapePattern(v string) string {
	var b strings.Builder
	for _, r := range v {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// corsMiddleware answers CORS for the allowed origins, preflights
// (OPTIONS) included, before authentication: a preflight carries no token.
// Nothing is answered for other origins, and nothing at all with no
// origins configured (same-origin only). Mounted services answer their own
// CORS (the MatrixRTC service sends lk-jwt-service's "*"), so their paths
// are skipped. Credentials (cookies) are never allowed: the API takes
// bearer tokens.
func (s *Server) corsMiddleware() echo.MiddlewareFunc {
	return middleware.CORSWithConfig(middleware.CORSConfig{
		Skipper: func(c echo.Context) bool {
			o := s.cors.Load()
			if !o.any && len(o.exact) == 0 {
				return true
			}
			p := c.Request().URL.Path
			for prefix := range s.cfg.Mounts {
				if p == prefix || strings.HasPrefix(p, prefix+"/") {
					return true
				}
			}
			return false
		},
		AllowOriginFunc: func(origin string) (bool, error) { return s.cors.Load().allows(origin), nil },
		AllowMethods:    []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete},
		AllowHeaders:    []string{echo.HeaderAuthorization, echo.HeaderContentType, headerIdempotencyKey},
		// A browser page may read whether a retry was answered from its key.
		ExposeHeaders: []string{headerIdempotentReplayed},
		MaxAge:        corsMaxAge,
	})
}
