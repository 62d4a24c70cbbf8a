package matrix_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
)

// The token every fake answer below is asked about; no error may hold it.
const checkedToken = "syt_Ym9i_checked_token_value_0123"

func TestTokenChecker(t *testing.T) {
	huge := `{"user_id":"@bob:example.org","pad":"` + strings.Repeat("x", 70<<10) + `"}`
	tests := []struct {
		name    string
		status  int
		body    string
		want    string // user ID
		refused bool   // ErrTokenRefused
		wantErr string // in the error text otherwise
	}{
		{"ok", 200, `{"user_id":"@bob:example.org","device_id":"DEV"}`, "@bob:example.org", false, ""},
		{"unknown token", 401, `{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token ` + checkedToken + `"}`, "", true, ""},
		{"forbidden", 403, `{"errcode":"M_FORBIDDEN","error":"no"}`, "", true, ""},
		{"401 without a Matrix body", 401, `nope`, "", true, ""},
		{"server error echoing the token", 502, `{"errcode":"M_UNKNOWN","error":"` + checkedToken + `"}`, "", false, "homeserver answered 502 Bad Gateway"},
		{"rate limited", 429, `{"errcode":"M_LIMIT_EXCEEDED"}`, "", false, "homeserver answered 429 Too Many Requests"},
		{"not found", 404, `<html>`, "", false, "homeserver answered 404 Not Found"},
		{"no user_id", 200, `{"device_id":"DEV"}`, "", false, "the homeserver's answer has no user_id"},
		{"not JSON", 200, `<html>`, "", false, "the homeserver's answer is not a whoami response"},
		{"answer over 64 KiB", 200, huge, "", false, "the homeserver's answer is not a whoami response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/_matrix/client/v3/account/whoami" || r.Header.Get("Authorization") != "Bearer "+checkedToken {
					t.Errorf("request %s %s with Authorization %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			check, err := matrix.TokenChecker(srv.URL, &http.Client{Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			got, err := check(context.Background(), checkedToken)
			switch {
			case tt.want != "":
				if err != nil || got != tt.want {
					t.Errorf("check = %q, %v; want %q", got, err, tt.want)
				}
			case tt.refused:
				if !errors.Is(err, matrix.ErrTokenRefused) {
					t.Errorf("check = %q, %v; want ErrTokenRefused", got, err)
				}
			default:
				if err == nil || errors.Is(err, matrix.ErrTokenRefused) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("check = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
			}
			if err != nil && strings.Contains(err.Error(), checkedToken) {
				t.Errorf("the error holds the token: %v", err)
			}
		})
	}
}

func TestTokenCheckerUnreachable(t *testing.T) {
	check, err := matrix.TokenChecker(closedURL(t), &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = check(context.Background(), checkedToken)
	if err == nil || errors.Is(err, matrix.ErrTokenRefused) || strings.Contains(err.Error(), checkedToken) {
		t.Errorf("check against a closed port = %v; want a network error without the token", err)
	}
	if _, err := matrix.TokenChecker("ftp://example.org", nil); err == nil {
		t.Error("TokenChecker accepted an ftp URL")
	}
}

// TestTokenCheckerDendrite: against a real homeserver, a user's token
// gives their user ID, a made-up one is refused.
func TestTokenCheckerDendrite(t *testing.T) {
	hs := matrixtest.StartDendrite(t)
	bob, _, _ := hs.Register(t, "bob", "bob-password-123", false)
	token, _ := hs.Login(t, bob, "bob-password-123")
	check, err := matrix.TokenChecker(hs.URL(), &http.Client{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := check(context.Background(), token); err != nil || got != bob {
		t.Errorf("check(bob's token) = %q, %v; want %s", got, err, bob)
	}
	if got, err := check(context.Background(), "made_up_token_0123456789"); !errors.Is(err, matrix.ErrTokenRefused) {
		t.Errorf("check(made-up token) = %q, %v; want ErrTokenRefused", got, err)
	}
}
