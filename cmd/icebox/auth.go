package main

import (
	"encoding/hex"
	"fmt"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

// buildAuthenticator turns the auth section into the API's authenticator.
// With no method configured every API request is refused (401) and a
// warning says how to configure one.
func buildAuthenticator(cfg config.Auth) (*httpapi.Authenticator, error) {
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
	return httpapi.NewAuthenticator(ac)
}
