package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

// matrixWhoamiTimeout bounds one access-token check with the homeserver.
const matrixWhoamiTimeout = 5 * time.Second

// buildAuthenticator turns the auth section into the API's authenticator.
// With no method configured every API request is refused (401) and a
// warning says how to configure one. Matrix access tokens are accepted when
// the matrix section (optional) is enabled and auth.matrix_tokens too.
func buildAuthenticator(cfg config.Auth, matrix ...config.Matrix) (*httpapi.Authenticator, error) {
	ac := httpapi.AuthConfig{
		JWTIssuer:     cfg.JWT.Issuer,
		JWTAudience:   cfg.JWT.Audience,
		JWTAdminClaim: cfg.JWT.AdminClaim,
		JWTMaxTTL:     cfg.JWT.MaxTTL,
	}
	for i, t := range cfg.StaticTokens {
		raw, err := hex.DecodeString(t.SHA256)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("auth.static_tokens[%d].sha256: not a hex SHA-256", i)
		}
		ac.StaticTokens = append(ac.StaticTokens, httpapi.StaticToken{SHA256: [32]byte(raw), User: t.User, Admin: t.Admin})
	}
	secret, err := cfg.JWT.SecretValue()
	if err != nil {
		return nil, fmt.Errorf("auth.jwt: %w", err)
	}
	if len(secret) > 0 {
		ac.JWTSecret = secret
	}
	if len(matrix) > 0 && matrixTokensOn(cfg, matrix[0]) {
		ac.MatrixWhoami = matrixWhoami(matrix[0].HomeserverURL, &http.Client{Timeout: matrixWhoamiTimeout})
		ac.MatrixCache = cfg.MatrixTokens.Cache
		ac.MatrixNegativeCache = cfg.MatrixTokens.NegativeCache
	}
	return httpapi.NewAuthenticator(ac)
}

// matrixTokensOn reports whether Matrix access tokens are accepted as API
// bearer tokens.
func matrixTokensOn(auth config.Auth, m config.Matrix) bool {
	return m.Enabled && auth.MatrixTokens.Enabled && m.HomeserverURL != ""
}

// matrixWhoami returns a check of a Matrix access token with the
// homeserver's /_matrix/client/v3/account/whoami: the user ID,
// httpapi.ErrMatrixTokenInvalid when the homeserver refused the token, or
// another error when it could not say. Errors never hold the token.
func matrixWhoami(homeserver string, client *http.Client) func(ctx context.Context, token string) (string, error) {
	endpoint := strings.TrimRight(homeserver, "/") + "/_matrix/client/v3/account/whoami"
	return func(ctx context.Context, token string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
		if err != nil {
			return "", fmt.Errorf("matrix whoami: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			// *url.Error holds the URL, not the header: no token here.
			return "", fmt.Errorf("matrix whoami: %w", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", fmt.Errorf("matrix whoami: reading the answer: %w", err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
		case http.StatusUnauthorized, http.StatusForbidden:
			return "", httpapi.ErrMatrixTokenInvalid
		default:
			return "", fmt.Errorf("matrix whoami: homeserver answered %s", resp.Status)
		}
		var who struct {
			UserID string `json:"user_id"`
		}
		if err := json.Unmarshal(body, &who); err != nil || !strings.HasPrefix(who.UserID, "@") {
			return "", fmt.Errorf("matrix whoami: the homeserver's answer has no user_id")
		}
		return who.UserID, nil
	}
}
