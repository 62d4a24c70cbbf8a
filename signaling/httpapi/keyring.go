package httpapi

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// KeyringAdmin rotates and describes the TURN credentials keyring.
type KeyringAdmin interface {
	Rotate() (KeyringInfo, error)
	Info() KeyringInfo
}

// ErrKeyringNotManaged: the keyring's secrets come from the configuration,
// so icebox cannot rotate them itself (409).
var ErrKeyringNotManaged = errors.New("keyring not managed by icebox")

// KeyringInfo is GET /admin/keyring: which kid signs, which are accepted
// and until when. Never a secret.
type KeyringInfo struct {
	ActiveKID string    `json:"active_kid"`
	Keys      []KeyInfo `json:"keys"`
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
	info, err := s.cfg.KeyringAdmin.Rotate()
	if errors.Is(err, ErrKeyringNotManaged) {
		return apiError(http.StatusConflict, "keyring_not_managed", err.Error())
	}
	if err != nil {
		return err
	}
	s.log.Info().Str("active_kid", info.ActiveKID).Msg("keyring rotated")
	return c.JSON(http.StatusOK, info)
}
