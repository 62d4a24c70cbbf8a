package matrix

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

func httpErr(status int, errcode string, extra map[string]any, header http.Header) error {
	he := mautrix.HTTPError{Response: &http.Response{StatusCode: status, Header: header}}
	if errcode != "" {
		data := map[string]any{"errcode": errcode}
		for k, v := range extra {
			data[k] = v
		}
		he.RespError = &mautrix.RespError{ErrCode: errcode, StatusCode: status, ExtraData: data}
	}
	return he
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want failure
	}{
		{"connection refused", mautrix.HTTPError{Message: "request error", WrappedError: errors.New("dial tcp: connection refused")}, failure{kind: kindNetwork}},
		{"not an HTTPError", errors.New("boom"), failure{kind: kindNetwork}},
		{"timeout", mautrix.HTTPError{Message: "request error", WrappedError: fmt.Errorf("Put: %w", context.DeadlineExceeded)}, failure{kind: kindTimeout}},
		{"429 with retry_after_ms", httpErr(429, "M_LIMIT_EXCEEDED", map[string]any{"retry_after_ms": float64(1500)}, nil), failure{kind: kindRateLimited, retryAfter: 1500 * time.Millisecond}},
		{"429 with Retry-After", httpErr(429, "", nil, http.Header{"Retry-After": {"3"}}), failure{kind: kindRateLimited, retryAfter: 3 * time.Second}},
		{"429 asking for a day", httpErr(429, "M_LIMIT_EXCEEDED", map[string]any{"retry_after_ms": float64(86_400_000)}, nil), failure{kind: kindRateLimited, retryAfter: maxRetryAfter}},
		{"502", httpErr(502, "", nil, nil), failure{kind: kindServer}},
		{"503 with Retry-After", httpErr(503, "", nil, http.Header{"Retry-After": {"2"}}), failure{kind: kindServer, retryAfter: 2 * time.Second}},
		{"401", httpErr(401, "M_UNKNOWN_TOKEN", nil, nil), failure{kind: kindUnauthorized}},
		{"403", httpErr(403, "M_FORBIDDEN", nil, nil), failure{kind: kindForbidden, permanent: true}},
		{"404", httpErr(404, "M_NOT_FOUND", nil, nil), failure{kind: kindNotFound, permanent: true}},
		{"400", httpErr(400, "M_BAD_JSON", nil, nil), failure{kind: kindBadRequest, permanent: true}},
		{"413", httpErr(413, "M_TOO_LARGE", nil, nil), failure{kind: kindBadRequest, permanent: true}},
		{"409", httpErr(409, "", nil, nil), failure{kind: kindClientError, permanent: true}},
		{"408", httpErr(408, "", nil, nil), failure{kind: kindTimeout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.err); got != tt.want {
				t.Errorf("classify(%v) = %+v, want %+v", tt.err, got, tt.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 9; n++ {
		got = append(got, backoff(n, time.Second, time.Minute))
	}
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60, 60}
	for i := range want {
		if got[i] != want[i]*time.Second {
			t.Fatalf("backoff(1..9) = %v, want %v seconds", got, want)
		}
	}
	if got := backoff(1_000_000, time.Second, time.Minute); got != time.Minute {
		t.Errorf("backoff(1e6) = %v, want 1m", got)
	}
}

func TestIsMatrixUserID(t *testing.T) {
	for s, want := range map[string]bool{
		"@bob:localhost": true, "@b:example.org:8448": true,
		"bob": false, "@bob": false, "@:localhost": false, "bob:localhost": false, "": false,
	} {
		if got := isMatrixUserID(s); got != want {
			t.Errorf("isMatrixUserID(%q) = %v, want %v", s, got, want)
		}
	}
}
