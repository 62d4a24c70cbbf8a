package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"
)

var errBothLiveKitSecrets = errors.New("config: matrixrtc.livekit: api_secret and api_secret_file are both set")

// SecretValue returns the LiveKit API secret: APISecret, or the contents of
// APISecretFile with surrounding whitespace trimmed (as Secret.Value).
func (l LiveKit) SecretValue() (string, error) {
	switch {
	case l.APISecret != "" && l.APISecretFile != "":
		return "", errBothLiveKitSecrets
	case l.APISecret != "":
		return l.APISecret, nil
	case l.APISecretFile != "":
		b, err := os.ReadFile(l.APISecretFile)
		if err != nil {
			return "", fmt.Errorf("config: matrixrtc.livekit.api_secret_file: %w", err)
		}
		return string(bytes.TrimSpace(b)), nil
	}
	return "", nil
}

func (v *validator) matrixRTC(m *MatrixRTC) {
	if !m.Enabled {
		return
	}
	if !strings.HasPrefix(m.BasePath, "/") || strings.HasSuffix(m.BasePath, "/") || strings.ContainsAny(m.BasePath, "?#* \t") {
		v.add("matrixrtc.base_path", "%q must start with / and not end with / (e.g. /livekit/jwt)", m.BasePath)
	}
	for i, hs := range m.FullAccessHomeservers {
		if hs == "" || strings.ContainsFunc(hs, isSpaceOrControl) || (hs == "*" && len(m.FullAccessHomeservers) > 1) {
			v.add(fmt.Sprintf("matrixrtc.full_access_homeservers[%d]", i), "%q is not a server name (or \"*\" alone)", hs)
		}
	}
	for name, raw := range m.HomeserverURLs {
		u, err := url.Parse(raw)
		if name == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			v.add("matrixrtc.homeserver_urls."+name, "%q is not an http(s) base URL without a path", raw)
		}
	}
	switch m.LiveKit.Mode {
	case LiveKitModeExternal, "": // "": a LiveKit literal without a mode (Default says external)
		v.liveKitExternal(&m.LiveKit)
	case LiveKitModeManaged:
		// Validate's liveKitManaged: it needs the relay's and listeners' ports.
	default:
		v.add("matrixrtc.livekit.mode", "%q is not one of %s, %s", m.LiveKit.Mode, LiveKitModeExternal, LiveKitModeManaged)
	}
	if m.JWTLifetime < time.Minute || m.JWTLifetime > 24*time.Hour {
		v.add("matrixrtc.jwt_lifetime", "must be between 1m and 24h (got %s)", m.JWTLifetime)
	}
	if m.VerifyTimeout < time.Second || m.VerifyTimeout > time.Minute {
		v.add("matrixrtc.verify_timeout", "must be between 1s and 60s (got %s)", m.VerifyTimeout)
	}
}

// liveKitExternal checks mode external: the URL, key and secret of a
// LiveKit server run elsewhere.
func (v *validator) liveKitExternal(l *LiveKit) {
	if u, err := url.Parse(l.URL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		v.add("matrixrtc.livekit.url", "%q must be a ws:// or wss:// URL (required when matrixrtc.enabled)", l.URL)
	}
	if l.APIKey == "" {
		v.add("matrixrtc.livekit.api_key", "required when matrixrtc.enabled")
	}
	switch {
	case l.APISecret != "" && l.APISecretFile != "":
		v.add("matrixrtc.livekit", "api_secret and api_secret_file are both set; keep one")
	case l.APISecret != "":
		if len(l.APISecret) < 32 {
			v.add("matrixrtc.livekit.api_secret", "must be at least 32 bytes (LiveKit refuses shorter secrets)")
		}
	case l.APISecretFile != "":
		if b, ok := v.privateFile("matrixrtc.livekit.api_secret_file", l.APISecretFile); ok && len(bytes.TrimSpace(b)) < 32 {
			v.add("matrixrtc.livekit.api_secret_file", "%s holds fewer than 32 bytes (LiveKit refuses shorter secrets)", l.APISecretFile)
		}
	default:
		v.add("matrixrtc.livekit.api_secret", "required when matrixrtc.enabled (or matrixrtc.livekit.api_secret_file)")
	}
}
