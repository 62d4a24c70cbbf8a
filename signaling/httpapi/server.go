// Package httpapi is icebox's HTTP face (echo v4): ICE server credentials for
// clients and for Matrix homeservers, health and readiness probes, and
// Prometheus metrics. Errors are JSON bodies {"error":{"code","message"}}.
package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/signaling"
)

// Config configures the HTTP API.
type Config struct {
	// Keyring returns the current keyring (it may be swapped on reload).
	Keyring func() *credentials.Keyring
	ICE     ICEConfig

	// Calls is the calls service; nil serves only ICE servers and probes.
	Calls *signaling.Service
	// Auth authenticates API clients (required).
	Auth *Authenticator
	// Hub carries WebSocket events and commands; nil disables /ws.
	Hub *Hub
	// KeyringAdmin serves /admin/keyring; nil disables it.
	KeyringAdmin KeyringAdmin
	// Allocations lists the relay's live allocations for /admin/allocations.
	Allocations func() any
	// Sessions serves /admin/allocations (listing with filters, kill) and
	// /admin/users/{user}/bandwidth; it replaces Allocations. nil: listing
	// through Allocations only.
	Sessions Sessions
	// ActiveCalls lists every ringing or answered call for /admin/calls;
	// nil serves an empty list.
	ActiveCalls func(ctx context.Context) ([]signaling.Call, error)
	// UI serves the embedded web pages under /ui/ (package web), without a
	// token: they are static and ask the user for one. nil = no UI (404).
	UI http.Handler
	// Mounts serves other handlers under path prefixes (key: "/prefix",
	// no trailing slash), outside the API's authentication: a mounted
	// service authenticates its callers itself (the MatrixRTC authorization
	// service checks OpenID tokens). The handler sees the full path.
	Mounts map[string]http.Handler
	// CORSOrigins are the browser origins besides the API's own that may
	// call it (CORS) and open /ws: exact "scheme://host[:port]" origins,
	// or "*" alone for any. Default: none (same-origin only). SetCORS
	// replaces them while serving.
	CORSOrigins []string
	// MaxBodyBytes bounds request bodies. Default: 1 MiB.
	MaxBodyBytes int64

	// Draining reports that the process is shutting down: no new
	// credentials or calls (503), while live calls go on. Default: never.
	Draining func() bool

	// Ready reports why the service is not ready, or nil. Default: ready.
	Ready func() error
	// ReadyDetails, when set, adds a "details" object to /readyz, ready or
	// not. /readyz needs no token: only what anyone could learn anyway
	// (a certificate's names and expiry) belongs there, never error texts.
	ReadyDetails func() map[string]any

	Gatherer   prometheus.Gatherer
	Registerer prometheus.Registerer // HTTP request metrics; nil = not recorded
	Logger     zerolog.Logger
}

// Server serves the HTTP API on listeners handed to Serve.
type Server struct {
	cfg  Config
	log  zerolog.Logger
	echo *echo.Echo
	http *http.Server

	// Swapped whole on a configuration reload (SetICE, SetCORS).
	ice  atomic.Pointer[ICEConfig]
	cors atomic.Pointer[corsOrigins]
}

// New builds the routes.
func New(cfg Config) (*Server, error) {
	if cfg.Keyring == nil || cfg.Auth == nil {
		return nil, errors.New("httpapi: Keyring and Auth are required")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if err := cfg.ICE.validate(); err != nil {
		return nil, err
	}
	if cfg.Draining == nil {
		cfg.Draining = func() bool { return false }
	}
	if cfg.Ready == nil {
		cfg.Ready = func() error { return nil }
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With().Str("component", "http").Logger()}
	s.ice.Store(&cfg.ICE)
	s.SetCORS(cfg.CORSOrigins)
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	var metrics *requestMetrics
	if cfg.Registerer != nil {
		metrics = newRequestMetrics(cfg.Registerer)
		e.Use(metrics.middleware)
	}
	e.Use(s.corsMiddleware())
	e.GET("/healthz", s.healthz)
	s.routeUI(e)
	e.GET("/readyz", s.readyz)
	if cfg.Gatherer != nil {
		e.GET("/metrics", echo.WrapHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	for prefix, h := range cfg.Mounts {
		e.Any(prefix+"/*", echo.WrapHandler(h))
	}
	api := e.Group("", cfg.Auth.Middleware())
	api.GET("/calls/ice_servers", s.getICEServers, s.refuseWhileDraining)
	api.GET("/_matrix/client/v3/voip/turnServer", s.matrixTURNServer, s.refuseWhileDraining)
	if cfg.Calls != nil {
		s.routeCalls(api)
		s.routeConversations(api)
		if cfg.Hub != nil {
			api.GET("/ws", s.websocket)
		}
		s.routeAdmin(api.Group("", RequireAdmin))
	}
	// A group with middleware registers a catch-all that runs it, so an
	// unknown path would answer 401 without a token and 403 with a user's.
	// Registered last, these replace the groups' catch-alls: a path icebox
	// does not serve is 404 for anyone; its routes keep their guards.
	notFound := func(echo.Context) error { return echo.ErrNotFound }
	e.RouteNotFound("", notFound)
	e.RouteNotFound("/*", notFound)
	if metrics != nil {
		metrics.setRoutes(e.Routes())
	}
	s.echo = e
	s.http = &http.Server{
		Handler:           e,
		ReadHeaderTimeout: 10 * time.Second, // slow-loris guard
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	return s, nil
}

// Handler returns the API as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.echo }

// Serve serves l until ctx is done, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(l) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(shutdownCtx)
	<-errc
	return err
}

func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(c echo.Context) error {
	var details map[string]any
	if s.cfg.ReadyDetails != nil {
		details = s.cfg.ReadyDetails()
	}
	if err := s.cfg.Ready(); err != nil {
		// Unauthenticated: say only that, and keep the reason for the log.
		s.log.Debug().Err(err).Msg("not ready")
		if len(details) == 0 {
			return apiError(http.StatusServiceUnavailable, "not_ready", "not ready")
		}
		return c.JSON(http.StatusServiceUnavailable, map[string]any{
			"error": apiError(http.StatusServiceUnavailable, "not_ready", "not ready"), "details": details,
		})
	}
	if len(details) == 0 {
		return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
	}
	return c.JSON(http.StatusOK, map[string]any{"status": "ready", "details": details})
}

// routeUI mounts the web UI, outside the authenticated group: the pages are
// public and hold no secret. With the UI off, /ui/ answers 404 with a
// reason.
func (s *Server) routeUI(e *echo.Echo) {
	methods := []string{http.MethodGet, http.MethodHead}
	if s.cfg.UI == nil {
		off := func(echo.Context) error {
			return apiError(http.StatusNotFound, "not_found", "the web UI is turned off (http.ui)")
		}
		e.Match(methods, "/ui", off)
		e.Match(methods, "/ui/*", off)
		return
	}
	e.Match(methods, "/ui", func(c echo.Context) error {
		// Relative, so that it also works behind a reverse proxy's path prefix.
		return c.Redirect(http.StatusMovedPermanently, "ui/")
	})
	e.Match(methods, "/ui/*", echo.WrapHandler(s.cfg.UI))
}

// websocket serves GET /ws for the authenticated user.
func (s *Server) websocket(c echo.Context) error {
	id, _ := IdentityFrom(c) // the auth middleware guarantees one
	user := id.User
	// Not the request's own context: net/http ends it when it sees the
	// client's connection close (a race with the hijack that the upgrade
	// does), and the hub takes its context's end for a server shutdown
	// (1001, "going_away"). The hub's reader sees a hang-up as it is; the
	// server's shutdown goes through Hub.Close.
	ctx := context.WithoutCancel(c.Request().Context())
	if !id.Expires.IsZero() {
		// The token was checked once, at the upgrade: the session must not
		// outlive it (commands mint TURN credentials).
		// errSessionExpired tells the hub to close with "token expired",
		// not as if the server were shutting down.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, id.Expires, errSessionExpired)
		defer cancel()
	}
	err := s.cfg.Hub.Serve(ctx, c.Response(), c.Request(), user, SubprotocolFrom(c), s.command)
	if err != nil {
		s.log.Debug().Err(err).Str("user", user).Msg("websocket closed")
	}
	return nil
}

// refuseWhileDraining is middleware for what starts something new (credentials, calls).
func (s *Server) refuseWhileDraining(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.Draining() {
			c.Response().Header().Set("Retry-After", "30")
			return apiError(http.StatusServiceUnavailable, "draining", "this server is shutting down; retry on another")
		}
		return next(c)
	}
}
