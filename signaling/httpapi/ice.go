package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/signaling"
)

// ICEConfig says which ICE servers clients are told about.
type ICEConfig struct {
	// STUN are the embedded relay's stun: URIs; TURN its turn:/turns: URIs,
	// which get freshly minted credentials on every request.
	STUN []string
	TURN []string
	// TTL of minted credentials.
	TTL time.Duration
	// External servers are passed through as configured.
	External []ICEServer
}

func (c ICEConfig) validate() error {
	if len(c.STUN)+len(c.TURN)+len(c.External) == 0 {
		return errors.New("httpapi: no ICE servers to offer")
	}
	if len(c.TURN) > 0 && c.TTL < time.Second {
		return errors.New("httpapi: credential TTL must be at least 1s")
	}
	return nil
}

// ICEServer is one entry of an RTCConfiguration's iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEServersResponse is the body of GET /calls/ice_servers.
type ICEServersResponse struct {
	ICEServers []ICEServer `json:"ice_servers"`
	TTL        int64       `json:"ttl"` // seconds
	ExpiresAt  time.Time   `json:"expires_at"`
}

// MatrixTURNServerResponse is Matrix's /voip/turnServer shape.
type MatrixTURNServerResponse struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	URIs     []string `json:"uris"`
	TTL      int64    `json:"ttl"` // seconds
}

// SetICE replaces the ICE servers clients are told about (a configuration
// reload); on error the current list stays.
func (s *Server) SetICE(c ICEConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	s.ice.Store(&c)
	return nil
}

// ICE is the ICE servers clients are told about now (as SetICE last set
// them): what the gateway's legs use too.
func (s *Server) ICE() ICEConfig { return *s.ice.Load() }

// iceServers mints the ICE server list for user (and call, if callID is
// not empty: per-call credentials that die with the call).
func (s *Server) iceServers(user, callID string) ([]ICEServer, credentials.Credential, error) {
	ice := s.ice.Load()
	var out []ICEServer
	if len(ice.STUN) > 0 {
		out = append(out, ICEServer{URLs: ice.STUN})
	}
	var cred credentials.Credential
	if len(ice.TURN) > 0 {
		var err error
		cred, err = s.cfg.Keyring().Mint(credentials.Subject{User: user, CallID: credentialID(callID)}, ice.TTL)
		if err != nil {
			return nil, cred, apiError(http.StatusBadRequest, "invalid_subject", err.Error())
		}
		out = append(out, ICEServer{URLs: ice.TURN, Username: cred.Username, Credential: cred.Password})
	}
	return append(out, ice.External...), cred, nil
}

// callForCredentials checks that user may get credentials for callID: a
// participant of a live call.
func (s *Server) callForCredentials(c echo.Context, user string) (string, error) {
	callID := c.QueryParam("call_id")
	if callID == "" {
		return "", nil
	}
	if s.cfg.Calls == nil {
		return "", apiError(http.StatusBadRequest, "invalid_request", "call_id needs the calls service")
	}
	call, err := s.cfg.Calls.Get(c.Request().Context(), user, callID)
	if err != nil {
		return "", err
	}
	if call.Status.Terminal() {
		return "", apiError(http.StatusConflict, "call_ended", "the call has ended; its credentials are revoked")
	}
	return callID, nil
}

// iceServers answers GET /calls/ice_servers[?call_id=] with an
// RTCConfiguration-ready list.
func (s *Server) getICEServers(c echo.Context) error {
	user := s.user(c)
	callID, err := s.callForCredentials(c, user)
	if err != nil {
		return err
	}
	servers, cred, err := s.iceServers(user, callID)
	if err != nil {
		return err
	}
	resp := ICEServersResponse{ICEServers: servers}
	if cred.Username != "" {
		resp.TTL = int64(cred.TTL / time.Second)
		resp.ExpiresAt = cred.Expires.UTC()
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, resp)
}

// matrixTURNServer answers GET /_matrix/client/v3/voip/turnServer.
func (s *Server) matrixTURNServer(c echo.Context) error {
	ice := s.ice.Load()
	if len(ice.TURN) == 0 {
		return apiError(http.StatusNotFound, "no_turn", "no TURN server is configured")
	}
	user := s.user(c)
	callID, err := s.callForCredentials(c, user)
	if err != nil {
		return err
	}
	_, cred, err := s.iceServers(user, callID)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, MatrixTURNServerResponse{
		Username: cred.Username,
		Password: cred.Password,
		URIs:     ice.TURN,
		TTL:      int64(cred.TTL / time.Second),
	})
}

// credentialID is the call-id the credentials of callID carry ("" stays
// ""): the call ID, or a hash of a Matrix call_id outside the credential
// grammar (signaling.CredentialID).
func credentialID(callID string) string {
	if callID == "" {
		return ""
	}
	return signaling.CredentialID(callID)
}
