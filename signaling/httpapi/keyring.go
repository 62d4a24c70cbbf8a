package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

// KeyringAdmin rotates and describes the TURN credentials keyring.
type KeyringAdmin interface {
	// Rotate makes a new secret sign. With compat, it also takes over the
	// compat role (usernames without a kid, as Synapse, Dendrite and
	// coturn mint them) and the old compat secret retires too.
	Rotate(compat bool) (KeyringInfo, error)
	Info() KeyringInfo
}

// ErrKeyringNotManaged: the keyring's secrets come from the configuration,
// so icebox cannot rotate them itself, and there was nothing else to
// rotate (409). With the SFU TURN secret rotated, Rotate answers the
// KeyringInfo with Rotation.Keyring false instead (200).
var ErrKeyringNotManaged = errors.New("keyring not managed by icebox")

// KeyringInfo is GET /admin/keyring: which kid signs, which are accepted
// and until when. Never a secret.
type KeyringInfo struct {
	ActiveKID string    `json:"active_kid"`
	Keys      []KeyInfo `json:"keys"`

	// SFU describes the LiveKit SFU's TURN secrets
	// (matrixrtc.livekit.turn), which a rotation rotates too; absent when
	// off.
	SFU *SFUKeyring `json:"sfu,omitempty"`
	// LiveKit is the managed livekit-server, which a rotation of the SFU
	// secret restarts; absent when matrixrtc.livekit.mode is not managed.
	LiveKit *LiveKitState `json:"livekit,omitempty"`
	// Rotation is what a rotation did (POST /admin/keyring/rotate only).
	Rotation *Rotation `json:"rotation,omitempty"`
}

// Rotation says what POST /admin/keyring/rotate rotated: the keyring, the
// SFU TURN secret, or only the latter (a keyring of configured secrets,
// which icebox cannot rotate: KeyringNotRotated says why).
type Rotation struct {
	Keyring           bool   `json:"keyring"`
	SFU               bool   `json:"sfu"`
	KeyringNotRotated string `json:"keyring_not_rotated,omitempty"`
}

// SFUKeyring is the SFU TURN secrets: the one LiveKit mints credentials
// with (current_kid), and older ones still accepted until retire_at.
type SFUKeyring struct {
	CurrentKID string    `json:"current_kid"`
	Keys       []KeyInfo `json:"keys"`
}

// LiveKitState is the managed livekit-server: running and answering (up),
// its restarts after failures (not those a rotation asks for), and its
// rooms and participants as its webhooks report them.
type LiveKitState struct {
	Up           bool `json:"up"`
	PID          int  `json:"pid,omitempty"`
	Restarts     int  `json:"restarts"`
	Rooms        int  `json:"rooms"`
	Participants int  `json:"participants"`
}

// KeyInfo is one key of the keyring.
type KeyInfo struct {
	KID      string     `json:"kid"`
	Compat   bool       `json:"compat,omitempty"`
	RetireAt *time.Time `json:"retire_at,omitempty"`
}

func (s *Server) getKeyring(c echo.Context) error {
	if s.cfg.KeyringAdmin == nil {
		return apiError(http.StatusNotFound, "not_found", "no keyring administration here")
	}
	return c.JSON(http.StatusOK, s.cfg.KeyringAdmin.Info())
}

func (s *Server) rotateKeyring(c echo.Context) error {
	if s.cfg.KeyringAdmin == nil {
		return apiError(http.StatusNotFound, "not_found", "no keyring administration here")
	}
	compat := false
	if v := c.QueryParam("compat"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return apiError(http.StatusBadRequest, "invalid_request", "compat must be true or false")
		}
		compat = b
	}
	info, err := s.cfg.KeyringAdmin.Rotate(compat)
	if errors.Is(err, ErrKeyringNotManaged) {
		return apiError(http.StatusConflict, "keyring_not_managed", err.Error())
	}
	if err != nil {
		return err
	}
	if r := info.Rotation; r != nil && !r.Keyring {
		s.log.Info().Bool("sfu", r.SFU).Msg("SFU TURN secret rotated; the keyring's configured secrets were not")
		return c.JSON(http.StatusOK, info)
	}
	s.log.Info().Str("active_kid", info.ActiveKID).Msg("keyring rotated")
	return c.JSON(http.StatusOK, info)
}
