package matrix

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"maunium.net/go/mautrix"
)

// Kinds of send failure: the label of icebox_matrix_send_errors_total, and
// for permanent ones the reason an entry is dropped with.
const (
	kindNetwork      = "network"       // no response: refused, reset, DNS…
	kindTimeout      = "timeout"       // no response within sendTimeout
	kindServer       = "server"        // 5xx
	kindRateLimited  = "rate_limited"  // 429 M_LIMIT_EXCEEDED
	kindUnauthorized = "unauthorized"  // 401: the token; retried (an operator fixes it)
	kindForbidden    = "forbidden"     // 403 M_FORBIDDEN: not in the room, power levels
	kindNotFound     = "not_found"     // 404
	kindBadRequest   = "bad_request"   // 400 M_BAD_JSON, M_NOT_JSON, 413 M_TOO_LARGE
	kindClientError  = "client_error"  // any other 4xx
	kindInvalid      = "invalid_entry" // stored content that is not JSON, or no room/type
)

// Reasons an entry is dropped with, besides the permanent kinds above.
const (
	reasonExpired       = "expired"        // older than maxEntryAge
	reasonInviteExpired = "invite_expired" // the invite's lifetime passed before it could be sent
)

var (
	sendKinds   = []string{kindNetwork, kindTimeout, kindServer, kindRateLimited, kindUnauthorized, kindForbidden, kindNotFound, kindBadRequest, kindClientError, kindInvalid}
	dropReasons = []string{reasonExpired, reasonInviteExpired, reasonUnencrypted, kindForbidden, kindNotFound, kindBadRequest, kindClientError, kindInvalid}
)

// failure is a classified send error.
type failure struct {
	kind       string
	permanent  bool          // the homeserver refused this event: retrying will not help
	retryAfter time.Duration // the homeserver's retry_after_ms or Retry-After
}

// classify sorts a mautrix error. Anything without an HTTP response is a
// network problem and transient; 5xx, 429 and 401 are transient; other
// 4xx are the event's fault and permanent.
func classify(err error) failure {
	if errors.Is(err, context.DeadlineExceeded) {
		return failure{kind: kindTimeout}
	}
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		return failure{kind: kindNetwork}
	}
	status := he.Response.StatusCode
	switch {
	case status == http.StatusTooManyRequests:
		return failure{kind: kindRateLimited, retryAfter: retryAfter(he)}
	case status == http.StatusUnauthorized:
		return failure{kind: kindUnauthorized}
	case status == http.StatusRequestTimeout:
		return failure{kind: kindTimeout}
	case status >= 500 || status < 400:
		return failure{kind: kindServer, retryAfter: retryAfter(he)}
	case status == http.StatusForbidden:
		return failure{kind: kindForbidden, permanent: true}
	case status == http.StatusNotFound:
		return failure{kind: kindNotFound, permanent: true}
	case status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge:
		return failure{kind: kindBadRequest, permanent: true}
	default:
		return failure{kind: kindClientError, permanent: true}
	}
}

// maxRetryAfter caps what a homeserver may ask for, so a bogus value cannot
// park an entry for days.
const maxRetryAfter = 10 * time.Minute

// retryAfter reads retry_after_ms from the error body (Matrix), else the
// Retry-After header in seconds (HTTP).
func retryAfter(he mautrix.HTTPError) time.Duration {
	var d time.Duration
	if he.RespError != nil {
		if ms, ok := he.RespError.ExtraData["retry_after_ms"].(float64); ok && ms > 0 {
			d = time.Duration(ms * float64(time.Millisecond))
		}
	}
	if d == 0 && he.Response != nil {
		if s, err := strconv.Atoi(strings.TrimSpace(he.Response.Header.Get("Retry-After"))); err == nil && s > 0 {
			d = time.Duration(s) * time.Second
		}
	}
	return min(d, maxRetryAfter)
}

// backoff is the delay after the n-th failed attempt: lo, 2·lo, 4·lo … hi.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// sleepCtx waits d, or less if ctx ends first; it reports whether the full
// wait happened.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
