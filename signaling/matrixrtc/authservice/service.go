package authservice

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Config is what the service needs; node fills it from config.MatrixRTC.
type Config struct {
	LiveKitURL string // ws:// or wss://, handed to clients as is
	APIKey     string
	APISecret  string
	// FullAccessHomeservers may create LiveKit rooms; ["*"] = all.
	FullAccessHomeservers []string
	// HomeserverURLs maps server names to federation base URLs, skipping
	// discovery.
	HomeserverURLs map[string]string
	JWTLifetime    time.Duration // Default: 1h (lk-jwt-service's fixed value)
	VerifyTimeout  time.Duration // Default: 10s
	// AllowAddr says whether a homeserver found by discovery (a server name
	// taken from a request) may be dialled at that address; nil = any.
	// node passes the relay's peer deny-list and the host's own addresses,
	// so a request cannot make the service reach loopback, metadata or
	// private services (lk-jwt-service has no such guard). Homeservers in
	// HomeserverURLs are the operator's choice and are not checked.
	AllowAddr func(netip.Addr) bool
	// RootCAs verifies homeservers' certificates; nil = the system's.
	// Tests hand in their CA.
	RootCAs *x509.CertPool
	// Rooms creates LiveKit rooms for full-access users. Default: LiveKit's
	// RoomService at RoomServiceURL.
	Rooms      RoomCreator
	Registerer prometheus.Registerer // nil = metrics not registered
	Logger     zerolog.Logger

	// VerifyCacheTTL keeps a successful OpenID verification this long,
	// keyed by a hash of the server name and token; 0 = no cache (as
	// lk-jwt-service). Bounded by the token's expires_in too.
	VerifyCacheTTL time.Duration
	// Membership, when set, refuses a token to a user who is not joined
	// to the request's Matrix room (matrixrtc.require_joined); nil = not
	// checked (as lk-jwt-service).
	Membership Membership
	Now        func() time.Time // Default: time.Now (tests move the cache's clock)

	// RoomServiceURL is where the service calls LiveKit's RoomService to
	// create rooms (http://, https://, ws:// or wss://): node sets it to
	// the managed livekit-server's own address, since LiveKitURL is then
	// often the public wss:// address of a reverse proxy that icebox
	// itself may not reach. Default: LiveKitURL.
	RoomServiceURL string
}

// Service serves the authorization API.
type Service struct {
	cfg      Config
	verifier *verifier
	cache    *verifyCache // nil = off
	metrics  *metrics
	log      zerolog.Logger
}

// New validates cfg.
func New(cfg Config) (*Service, error) {
	if cfg.LiveKitURL == "" || cfg.APIKey == "" || cfg.APISecret == "" {
		return nil, errors.New("authservice: LiveKitURL, APIKey and APISecret are required")
	}
	if cfg.JWTLifetime <= 0 {
		cfg.JWTLifetime = time.Hour
	}
	if cfg.VerifyTimeout <= 0 {
		cfg.VerifyTimeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rooms == nil {
		rsURL := cfg.RoomServiceURL
		if rsURL == "" {
			rsURL = cfg.LiveKitURL
		}
		rc, err := newTwirpRooms(rsURL, cfg.APIKey, cfg.APISecret)
		if err != nil {
			return nil, err
		}
		cfg.Rooms = rc
	}
	known := slices.Clone(cfg.FullAccessHomeservers)
	for name := range cfg.HomeserverURLs {
		known = append(known, name)
	}
	return &Service{
		cfg:      cfg,
		verifier: newVerifier(cfg.HomeserverURLs, cfg.RootCAs, cfg.VerifyTimeout, cfg.AllowAddr),
		cache:    newVerifyCache(cfg.VerifyCacheTTL, cfg.Now),
		metrics:  newMetrics(cfg.Registerer, known),
		log:      cfg.Logger.With().Str("component", "matrixrtc-auth").Logger(),
	}, nil
}

// Close drops the idle connections to homeservers and LiveKit. The service
// has no goroutines of its own; Close is idempotent, and requests after it
// still work (they open new connections).
func (s *Service) Close() error {
	s.verifier.client.CloseIdleConnections()
	for _, x := range []any{s.cfg.Rooms, s.cfg.Membership} {
		if c, ok := x.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
	return nil
}

// Handler serves /sfu/get, /get_token and /healthz below prefix (e.g.
// "/livekit/jwt"; "" = at the root).
func (s *Service) Handler(prefix string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(prefix+"/sfu/get", corsJSON(s.tokenEndpoint(endpointSFUGet, s.sfuGet)))
	mux.HandleFunc(prefix+"/get_token", corsJSON(s.tokenEndpoint(endpointGetToken, s.getToken)))
	mux.HandleFunc(prefix+"/healthz", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	// Element Call asks whether the service takes over its delayed leave
	// (MSC4140) right after joining. Not supported (no homeserver here
	// implements MSC4140), but answered as JSON with CORS headers: a bare
	// 404 without them is a "Failed to fetch" CORS error in the browser's
	// console, though Element Call carries on either way.
	mux.HandleFunc(prefix+"/delegate_delayed_leave", corsJSON(notFound("M_UNRECOGNIZED", "Delegation of delayed leave events is not supported")))
	mux.HandleFunc(prefix+"/", corsJSON(notFound("M_NOT_FOUND", "No such endpoint")))
	return mux
}

// notFound answers 404 with a Matrix error body.
func notFound(errcode, msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]string{"errcode": errcode, "error": msg})
	}
}

// corsJSON sets lk-jwt-service's CORS and JSON headers and answers a
// preflight with 200: Element Call runs in browsers on other origins.
func corsJSON(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "POST")
		h.Set("Access-Control-Allow-Headers", "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next(w, r)
	}
}

// maxRequestBytes bounds a request body: a real one is under 2 KiB.
const maxRequestBytes = 64 << 10

type process func(ctx context.Context, r *http.Request) (*sfuResponse, string, error)

func (s *Service) tokenEndpoint(endpoint string, p process) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			s.metrics.refused(endpoint, reasonMethod)
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
		resp, access, err := p(r.Context(), r)
		if err != nil {
			var me *matrixError
			if !errors.As(err, &me) {
				me = &matrixError{status: http.StatusInternalServerError, errcode: "M_UNKNOWN", msg: "Internal Server Error", reason: reasonInternal}
			}
			s.metrics.refused(endpoint, me.reason)
			w.WriteHeader(me.status)
			_ = json.NewEncoder(w).Encode(map[string]string{"errcode": me.errcode, "error": me.msg})
			return
		}
		s.metrics.issued(endpoint, access)
		_ = json.NewEncoder(w).Encode(resp)
	}
}

// decode reads a JSON body as lk-jwt-service does: one object, unknown
// fields refused.
func decode(r *http.Request, into any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return errNotJSON
	}
	return nil
}

// verify checks the OpenID token and, for /get_token, the claimed user.
func (s *Service) verify(ctx context.Context, endpoint string, tok openIDToken, claimedUser string) (string, error) {
	key := newCacheKey(tok.MatrixServerName, tok.AccessToken)
	if userID, ok := s.cache.get(key); ok {
		s.metrics.cacheHits.Inc()
		return s.checkClaim(endpoint, userID, claimedUser)
	}
	hs := s.metrics.homeserverLabel(tok.MatrixServerName)
	start := time.Now()
	userID, err := s.verifier.Verify(ctx, tok.MatrixServerName, tok.AccessToken)
	if errors.Is(err, errBusy) {
		// Not the homeserver's fault and not the token's: the client may
		// retry. (lk-jwt-service has no such bound.)
		return "", &matrixError{status: http.StatusServiceUnavailable, errcode: "M_UNKNOWN", msg: "Too many requests in flight, retry later", reason: reasonBusy}
	}
	s.metrics.verified(hs, start, err)
	if err != nil {
		reason := reasonInvalidToken
		switch {
		case errors.Is(err, errUnreachable):
			reason = reasonUnreachable
		case errors.Is(err, errBadResponse):
			reason = reasonBadHomeserver
		case errors.Is(err, errForeignUser):
			reason = reasonForeignUser
		}
		// err holds no token (Verify keeps URLs out of it); the server
		// name is the caller's claim, logged as the place we asked.
		s.log.Warn().Str("endpoint", endpoint).Str("homeserver", tok.MatrixServerName).Str("reason", reason).
			Str("error", err.Error()).Msg("openid token not verified")
		if reason == reasonUnreachable && validServerName(tok.MatrixServerName) {
			// Not the token's fault, and maybe not for long: 503 naming
			// the homeserver tells the user whom to wait for (lk-jwt-service
			// answers 401 here as for a bad token). A string that is not a
			// server name is no homeserver to name: 401 below.
			return "", &matrixError{status: http.StatusServiceUnavailable, errcode: "M_UNKNOWN",
				msg: "Homeserver " + tok.MatrixServerName + " cannot be reached to verify the OpenID token", reason: reason}
		}
		return "", unauthorized(reason)
	}
	s.cache.put(key, userID, tok.ExpiresIn)
	return s.checkClaim(endpoint, userID, claimedUser)
}

// checkClaim refuses a /get_token whose claimed user is not the one the
// token was verified for.
func (s *Service) checkClaim(endpoint, userID, claimedUser string) (string, error) {
	if claimedUser != "" && claimedUser != userID {
		s.log.Warn().Str("endpoint", endpoint).Str("user", userID).Str("claimed_user", claimedUser).
			Msg("claimed user does not match the openid token")
		return "", unauthorized(reasonUserMismatch)
	}
	return userID, nil
}

func (s *Service) fullAccess(serverName string) bool {
	fa := s.cfg.FullAccessHomeservers
	if len(fa) == 1 && fa[0] == "*" {
		return true
	}
	return slices.Contains(fa, serverName)
}

// grant mints the LiveKit JWT, with lk-jwt-service's grants: join the one
// room, publish, subscribe, update own metadata; never create (rooms are
// created by the service for full-access users, not by clients).
func (s *Service) grant(room, identity string) (string, error) {
	yes := func() *bool { b := true; return &b }
	at := auth.NewAccessToken(s.cfg.APIKey, s.cfg.APISecret)
	at.SetVideoGrant(&auth.VideoGrant{
		RoomJoin:             true,
		RoomCreate:           false,
		Room:                 room,
		CanPublish:           yes(),
		CanSubscribe:         yes(),
		CanUpdateOwnMetadata: yes(),
	}).SetIdentity(identity).SetValidFor(s.cfg.JWTLifetime)
	return at.ToJWT()
}

// issue is the common tail of both endpoints: token, then (full access)
// the room, as lk-jwt-service orders them.
func (s *Service) issue(ctx context.Context, endpoint, serverName, userID, room, identity string) (*sfuResponse, string, error) {
	jwt, err := s.grant(room, identity)
	if err != nil {
		s.log.Error().Str("endpoint", endpoint).Str("error", err.Error()).Msg("signing the livekit token")
		return nil, "", err
	}
	access := accessRestricted
	if s.fullAccess(serverName) {
		access = accessFull
		if err := s.cfg.Rooms.CreateRoom(ctx, room); err != nil {
			s.log.Error().Str("endpoint", endpoint).Str("room", room).Str("error", err.Error()).Msg("creating the livekit room")
			return nil, "", &matrixError{status: http.StatusInternalServerError, errcode: "M_UNKNOWN", msg: "Unable to create room on SFU", reason: reasonRoomCreate}
		}
	}
	s.log.Info().Str("endpoint", endpoint).Str("user", userID).Str("access", access).Str("room", room).
		Str("identity", identity).Msg("livekit token issued")
	return &sfuResponse{URL: s.cfg.LiveKitURL, JWT: jwt}, access, nil
}

func (s *Service) sfuGet(ctx context.Context, r *http.Request) (*sfuResponse, string, error) {
	var req legacySFURequest
	if err := decode(r, &req); err != nil {
		return nil, "", err
	}
	if err := req.validate(); err != nil {
		return nil, "", err
	}
	userID, err := s.verify(ctx, endpointSFUGet, req.OpenIDToken, "")
	if err != nil {
		return nil, "", err
	}
	if err := s.checkJoined(ctx, endpointSFUGet, req.Room, userID); err != nil {
		return nil, "", err
	}
	return s.issue(ctx, endpointSFUGet, req.OpenIDToken.MatrixServerName, userID,
		RoomAlias(req.Room, LegacySlot), LegacyIdentity(userID, req.DeviceID))
}

func (s *Service) getToken(ctx context.Context, r *http.Request) (*sfuResponse, string, error) {
	var req sfuRequest
	if err := decode(r, &req); err != nil {
		return nil, "", err
	}
	if err := req.validate(); err != nil {
		return nil, "", err
	}
	userID, err := s.verify(ctx, endpointGetToken, req.OpenIDToken, req.Member.ClaimedUserID)
	if err != nil {
		return nil, "", err
	}
	if err := s.checkJoined(ctx, endpointGetToken, req.RoomID, userID); err != nil {
		return nil, "", err
	}
	return s.issue(ctx, endpointGetToken, req.OpenIDToken.MatrixServerName, userID,
		RoomAlias(req.RoomID, req.SlotID), Identity(userID, req.Member.ClaimedDeviceID, req.Member.ID))
}
