package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix"
)

// matrixWhoamiTimeout bounds one access-token check with the homeserver.
const matrixWhoamiTimeout = 5 * time.Second

// buildAuthenticator turns the auth section into the API's authenticator.
// With no method configured every API request is refused (401) and a
// warning says how to configure one. Matrix access tokens are accepted when
// the matrix section (optional) is enabled and auth.matrix_tokens too.
func buildAuthenticator(cfg config.Auth, mx ...config.Matrix) (*httpapi.Authenticator, error) {
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
	if len(mx) > 0 && matrixTokensOn(cfg, mx[0]) {
		check, err := matrixTokenCheck(mx[0].HomeserverURL, &http.Client{Timeout: matrixWhoamiTimeout})
		if err != nil {
			return nil, fmt.Errorf("auth.matrix_tokens: %w", err)
		}
		ac.MatrixWhoami = check
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

// matrixTokenCheck is the check of API users' Matrix access tokens with
// the homeserver (matrix.TokenChecker), its refusals as the API's
// ErrMatrixTokenInvalid.
func matrixTokenCheck(homeserver string, client *http.Client) (func(ctx context.Context, token string) (string, error), error) {
	check, err := matrix.TokenChecker(homeserver, client)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, token string) (string, error) {
		user, err := check(ctx, token)
		if errors.Is(err, matrix.ErrTokenRefused) {
			return "", httpapi.ErrMatrixTokenInvalid
		}
		return user, err
	}, nil
}
