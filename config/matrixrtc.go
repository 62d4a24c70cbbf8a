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

// maxVerifyCacheTTL bounds matrixrtc.verify_cache_ttl: a cached
// verification lets a token work that long after the homeserver stopped
// vouching for it, so it stays far below an OpenID token's lifetime
// (Synapse and Dendrite issue them for an hour).
const maxVerifyCacheTTL = 5 * time.Minute

// ServiceURL is the livekit_service_url of the homeserver's
// .well-known/matrix/client: PublicURL followed by BasePath. It is ""
// when PublicURL is not set.
func (m MatrixRTC) ServiceURL() string {
	if m.PublicURL == "" {
		return ""
	}
	return strings.TrimSuffix(m.PublicURL, "/") + m.BasePath
}

// CheckPublicURL checks a public URL of icebox's HTTP API (the
// matrixrtc.public_url key, or the same given on a command line).
func CheckPublicURL(raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil, u.Scheme != "https" && u.Scheme != "http", u.Host == "", u.Opaque != "":
		return fmt.Errorf("%q is not an http(s) URL such as https://icebox.your.domain", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(u.Path, "/"):
		return fmt.Errorf("%q must be scheme://host[:port][/prefix], without user, query, fragment or final /", raw)
	}
	return nil
}

// matrixRTCDiscovery checks the discovery, cache and room policy keys,
// which need the Matrix section too.
func (v *validator) matrixRTCDiscovery(m *MatrixRTC, mx *Matrix) {
	if !m.Enabled {
		return
	}
	if m.PublicURL != "" {
		if err := CheckPublicURL(m.PublicURL); err != nil {
			v.add("matrixrtc.public_url", "%v", err)
		}
	}
	if m.VerifyCacheTTL < 0 || m.VerifyCacheTTL > maxVerifyCacheTTL {
		v.add("matrixrtc.verify_cache_ttl", "must be between 0s (no cache) and %s (got %s)", maxVerifyCacheTTL, m.VerifyCacheTTL)
	}
	if m.RequireJoined {
		switch {
		case !mx.Enabled:
			// Membership is private to the room's members: only a user in
			// the room can ask, and icebox asks as its service user.
			v.add("matrixrtc.require_joined", "needs matrix.enabled: room membership is asked as icebox's Matrix service user (set require_joined: false, or configure matrix)")
		case !mx.hasToken():
			v.add("matrixrtc.require_joined", "needs matrix.access_token or matrix.access_token_file: a password login's session belongs to the VoIP bridge")
		}
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
