package httpapi

import (
	"encoding/json"
	"net/http"
	"testing"
)

// TestUnknownPathNotFound: a path the API does not serve is 404 with the
// JSON error, whoever asks (no token, a user's, the admin's), rather than
// the 401 or 403 of the authenticated routes; the routes that exist still
// want their token.
func TestUnknownPathNotFound(t *testing.T) {
	e := newAPIEnv(t)
	unknown := []struct{ method, path string }{
		{"GET", "/"},
		{"GET", "/nosuch"},
		{"GET", "/api/v1/calls"},
		{"GET", "/callz/ice_servers"},
		{"POST", "/calls/c1/nosuch/deeper"},
		{"GET", "/admin/nosuch"},
		{"DELETE", "/admin/keyring/nosuch/x"},
		{"GET", "/_matrix/client/v3/voip/turnServerX"},
	}
	for _, r := range unknown {
		for _, token := range []string{"", userToken("alice"), adminToken, "not-a-token"} {
			code, body := e.do(t, token, r.method, r.path, nil)
			if code != http.StatusNotFound {
				t.Errorf("%s %s (token %t): %d %s, want 404", r.method, r.path, token != "", code, body)
				continue
			}
			var resp struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(body, &resp); err != nil || resp.Error.Code != "not_found" {
				t.Errorf("%s %s: body %s, want the JSON error not_found", r.method, r.path, body)
			}
		}
	}
	// Known routes keep their guard.
	for _, r := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/calls/ice_servers", "", http.StatusUnauthorized},
		{"GET", "/calls/ice_servers", "not-a-token", http.StatusUnauthorized},
		{"GET", "/calls/ice_servers", userToken("alice"), http.StatusOK},
		{"GET", "/_matrix/client/v3/voip/turnServer", "", http.StatusUnauthorized},
		{"GET", "/calls", "", http.StatusUnauthorized},
		{"GET", "/admin/keyring", "", http.StatusUnauthorized},
		{"GET", "/admin/conversations/c1", "", http.StatusUnauthorized},
		{"GET", "/admin/conversations/c1", userToken("alice"), http.StatusForbidden},
		{"GET", "/admin/conversations/c1", adminToken, http.StatusOK},
		{"GET", "/ws", "", http.StatusUnauthorized},
		{"GET", "/healthz", "", http.StatusOK},
	} {
		if code, body := e.do(t, r.token, r.method, r.path, nil); code != r.want {
			t.Errorf("%s %s (token %t): %d %s, want %d", r.method, r.path, r.token != "", code, body, r.want)
		}
	}
}
