package matrix

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"maunium.net/go/mautrix"
)

// ErrTokenRefused is what a TokenChecker's check returns when the
// homeserver refused the access token (401 M_UNKNOWN_TOKEN, 403
// M_FORBIDDEN…). Any other error means the homeserver could not say.
var ErrTokenRefused = errors.New("matrix: the homeserver refused the access token")

// maxWhoamiBody bounds what is read of a whoami answer; a real one is a
// few hundred bytes.
const maxWhoamiBody = 64 << 10

// TokenChecker returns a check of the Matrix access tokens of API users
// (not the service user's: the bridge checks that one itself) with the
// homeserver's /_matrix/client/v3/account/whoami, through mautrix's client
// over hc (nil: http.DefaultClient; give one with a timeout). The check
// returns the token's user ID, ErrTokenRefused, or another error when the
// homeserver could not say. Errors never hold the token; answers are read
// up to 64 KiB. It fails only for a homeserver URL that is not one.
func TokenChecker(homeserverURL string, hc *http.Client) (func(ctx context.Context, token string) (userID string, err error), error) {
	if u, err := url.Parse(homeserverURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("matrix: homeserver_url: %q is not an http(s) URL", homeserverURL)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	limited := *hc
	limited.Transport = limitBody{base: hc.Transport, n: maxWhoamiBody}
	return func(ctx context.Context, token string) (string, error) {
		// A client per check: the token is the client's, and checks run
		// concurrently. It is a few small allocations; HTTP connections
		// are hc's.
		cli, err := mautrix.NewClient(homeserverURL, "", token)
		if err != nil {
			return "", fmt.Errorf("matrix whoami: %w", err) // cannot happen: the URL was parsed above
		}
		cli.Client = &limited
		cli.ResponseSizeLimit = maxWhoamiBody
		cli.DefaultHTTPRetries = 0 // the caller caches answers and its clients retry
		resp, err := cli.Whoami(quiet(ctx))
		if err != nil {
			return "", whoamiError(err, token)
		}
		if !strings.HasPrefix(string(resp.UserID), "@") {
			return "", errors.New("matrix whoami: the homeserver's answer has no user_id")
		}
		return string(resp.UserID), nil
	}, nil
}

// whoamiError maps mautrix's error for a whoami to ErrTokenRefused or to an
// error that holds neither the request (its Authorization header) nor the
// answer's body.
func whoamiError(err error, token string) error {
	var he mautrix.HTTPError
	if !errors.As(err, &he) {
		return errors.New("matrix whoami: the request failed") // mautrix's own checks; none apply here
	}
	var out error
	switch res := he.Response; {
	case res == nil && he.WrappedError != nil:
		out = fmt.Errorf("matrix whoami: %w", he.WrappedError) // *url.Error holds the URL, not the header
	case res == nil:
		out = errors.New("matrix whoami: no answer from the homeserver")
	case res.StatusCode == http.StatusUnauthorized || res.StatusCode == http.StatusForbidden:
		return ErrTokenRefused
	case res.StatusCode >= 200 && res.StatusCode < 300:
		out = errors.New("matrix whoami: the homeserver's answer is not a whoami response")
	default:
		out = fmt.Errorf("matrix whoami: homeserver answered %s", res.Status)
	}
	if token != "" && strings.Contains(out.Error(), token) {
		return errors.New("matrix whoami: the request failed")
	}
	return out
}

// limitBody is a RoundTripper whose responses' bodies end after n bytes.
type limitBody struct {
	base http.RoundTripper // nil: http.DefaultTransport
	n    int64
}

func (l limitBody) RoundTrip(req *http.Request) (*http.Response, error) {
	base := l.base
	if base == nil {
		base = http.DefaultTransport
	}
	res, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(res.Body, l.n), res.Body}
	return res, nil
}
