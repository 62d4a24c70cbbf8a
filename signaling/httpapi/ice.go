package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/icebox-voip/icebox/credentials"
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

// subject reads who the credential is for. Until API authentication exists
// (issue 3) the caller names the user in the "user" query parameter.
func subject(c echo.Context) (credentials.Subject, error) {
	sub := credentials.Subject{User: c.QueryParam("user"), CallID: c.QueryParam("call_id")}
	if sub.User == "" {
		return sub, apiError(http.StatusBadRequest, "missing_user", "query parameter user is required")
	}
	return sub, nil
}

func (s *Server) mint(c echo.Context) (credentials.Credential, error) {
	sub, err := subject(c)
	if err != nil {
		return credentials.Credential{}, err
	}
	cred, err := s.cfg.Keyring().Mint(sub, s.cfg.ICE.TTL)
	if err != nil {
		return credentials.Credential{}, apiError(http.StatusBadRequest, "invalid_subject", err.Error())
	}
	return cred, nil
}

// iceServers answers GET /calls/ice_servers[?call_id=] with an
// RTCConfiguration-ready list.
func (s *Server) iceServers(c echo.Context) error {
	ice := s.cfg.ICE
	resp := ICEServersResponse{ICEServers: []ICEServer{}}
	if len(ice.STUN) > 0 {
		resp.ICEServers = append(resp.ICEServers, ICEServer{URLs: ice.STUN})
	}
	if len(ice.TURN) > 0 {
		cred, err := s.mint(c)
		if err != nil {
			return err
		}
		resp.ICEServers = append(resp.ICEServers, ICEServer{
			URLs: ice.TURN, Username: cred.Username, Credential: cred.Password,
		})
		resp.TTL = int64(cred.TTL / time.Second)
		resp.ExpiresAt = cred.Expires.UTC()
	}
	resp.ICEServers = append(resp.ICEServers, ice.External...)
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, resp)
}

// matrixTURNServer answers GET /_matrix/client/v3/voip/turnServer.
func (s *Server) matrixTURNServer(c echo.Context) error {
	if len(s.cfg.ICE.TURN) == 0 {
		return apiError(http.StatusNotFound, "no_turn", "no TURN server is configured")
	}
	cred, err := s.mint(c)
	if err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(http.StatusOK, MatrixTURNServerResponse{
		Username: cred.Username,
		Password: cred.Password,
		URIs:     s.cfg.ICE.TURN,
		TTL:      int64(cred.TTL / time.Second),
	})
}
