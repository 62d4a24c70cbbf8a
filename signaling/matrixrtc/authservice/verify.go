package authservice

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxUserInfoBytes bounds a homeserver's userinfo and .well-known answers:
// both are a few dozen bytes; a homeserver streaming more is not one.
const maxUserInfoBytes = 64 << 10

// maxInFlight is how many verifications may run at once; more wait (within
// the verification's time limit). Joins come in bursts of a few per call, so
// this only bites under a flood.
const maxInFlight = 128

// verifier checks OpenID tokens at the homeserver that issued them, as
// lk-jwt-service does through gomatrixserverlib's federation client: the
// server name is resolved with the federation discovery rules (explicit
// port or IP literal, then .well-known/matrix/server delegation, then SRV
// _matrix-fed._tcp / _matrix._tcp, then port 8448), and the request goes
// over TLS with the server name (or the delegated host) as SNI.
//
// The verifier itself keeps nothing: the Service's verifyCache, when on,
// keeps successes for a short, bounded time.
type verifier struct {
	// inFlight bounds concurrent verifications: a burst of requests (each
	// naming any server) cannot open unbounded outbound connections.
	inFlight  chan struct{}
	overrides map[string]string // server name → base URL
	client    *http.Client
	timeout   time.Duration
	resolver  *net.Resolver
}

type (
	resolvedKey struct{}
	trustedKey  struct{} // the request goes to a configured homeserver URL
)

func newVerifier(overrides map[string]string, roots *x509.CertPool, timeout time.Duration, allow func(netip.Addr) bool) *verifier {
	v := &verifier{inFlight: make(chan struct{}, maxInFlight), overrides: overrides, timeout: timeout, resolver: net.DefaultResolver}
	dialer := &net.Dialer{Timeout: timeout}
	guarded := &net.Dialer{Timeout: timeout, Control: func(_, address string, _ syscall.RawConn) error {
		// Control sees the address after name resolution, so a name that
		// resolves (or rebinds) to a denied address is refused too.
		ap, err := netip.ParseAddrPort(address)
		if err != nil || allow == nil || allow(ap.Addr().Unmap()) {
			return err
		}
		return fmt.Errorf("%w: %s", errDeniedAddr, ap.Addr())
	}}
	tr := &http.Transport{
		Proxy:                 nil, // federation traffic goes direct, as Matrix servers send it
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		// A burst of joins is verified at one homeserver (mostly the
		// operator's own) at once: with 2 idle connections per host most
		// verifications opened a new connection (bench, 16 clients, no
		// cache: 145 → 91 µs CPU and 3.4k → 5.3k /get_token per second).
		// MaxIdleConns bounds them over all homeservers.
		MaxIdleConnsPerHost: 16,
		MaxIdleConns:        64,
		IdleConnTimeout:     90 * time.Second,
		// An SRV target or a delegated host:port is dialled in place of the
		// URL's host, which stays the name TLS checks the certificate for.
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := ctx.Value(resolvedKey{}).(string); ok && to != "" {
				addr = to
			}
			if trusted, _ := ctx.Value(trustedKey{}).(bool); trusted {
				return dialer.DialContext(ctx, network, addr)
			}
			return guarded.DialContext(ctx, network, addr)
		},
	}
	v.client = &http.Client{
		Transport: tr,
		// Federation requests are not redirected; following one would let a
		// homeserver point the service anywhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return v
}

// Verify returns the user ID the homeserver serverName says token belongs
// to. The user must be of serverName: a homeserver vouches for its own
// users only.
func (v *verifier) Verify(ctx context.Context, serverName, token string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	select {
	case v.inFlight <- struct{}{}:
		defer func() { <-v.inFlight }()
	case <-ctx.Done():
		return "", errBusy
	}
	base, dialTo, err := v.resolve(ctx, serverName)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUnreachable, err)
	}
	u := base + "/_matrix/federation/v1/openid/userinfo?access_token=" + url.QueryEscape(token)
	rctx := context.WithValue(ctx, resolvedKey{}, dialTo)
	if v.overrides[serverName] != "" {
		rctx = context.WithValue(rctx, trustedKey{}, true)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errUnreachable, err)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		// The URL (with the token in it) is in a *url.Error: keep only
		// its cause.
		return "", fmt.Errorf("%w: %v", errUnreachable, unwrapURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUserInfoBytes))
	if err != nil {
		return "", fmt.Errorf("%w: reading userinfo: %v", errUnreachable, unwrapURLError(err))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
		resp.StatusCode == http.StatusNotFound && strings.Contains(string(body), "M_UNKNOWN_TOKEN"):
		return "", errInvalidToken
	case resp.StatusCode >= 500:
		return "", fmt.Errorf("%w: status %d", errUnreachable, resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%w: status %d", errBadResponse, resp.StatusCode)
	}
	var info struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(body, &info); err != nil || info.Sub == "" {
		return "", fmt.Errorf("%w: no sub", errBadResponse)
	}
	if _, server, ok := strings.Cut(info.Sub, ":"); !ok || !strings.HasPrefix(info.Sub, "@") || server != serverName {
		return "", errForeignUser
	}
	return info.Sub, nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// resolve finds the federation API of serverName: the base URL (whose
// host TLS verifies) and, when different, the host:port to dial.
func (v *verifier) resolve(ctx context.Context, serverName string) (base, dialTo string, err error) {
	if u := v.overrides[serverName]; u != "" {
		return strings.TrimSuffix(u, "/"), "", nil
	}
	if !validServerName(serverName) {
		return "", "", fmt.Errorf("%q is not a server name", serverName)
	}
	if direct, ok := explicitAddr(serverName); ok {
		return "https://" + direct, "", nil
	}
	if delegated, err := v.wellKnown(ctx, serverName); err == nil {
		if direct, ok := explicitAddr(delegated); ok {
			return "https://" + direct, "", nil
		}
		return v.srv(ctx, delegated)
	}
	return v.srv(ctx, serverName)
}

// srv looks up the SRV records of a host name without a port, falling back
// to port 8448; the certificate is checked for the host name itself.
func (v *verifier) srv(ctx context.Context, host string) (base, dialTo string, err error) {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, addrs, err := v.resolver.LookupSRV(ctx, service, "tcp", host)
		if err == nil && len(addrs) > 0 {
			target := strings.TrimSuffix(addrs[0].Target, ".")
			return "https://" + host, net.JoinHostPort(target, strconv.Itoa(int(addrs[0].Port))), nil
		}
	}
	return "https://" + net.JoinHostPort(host, "8448"), "", nil
}

// wellKnown reads https://serverName/.well-known/matrix/server's m.server.
func (v *verifier) wellKnown(ctx context.Context, serverName string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+serverName+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	var wk struct {
		Server string `json:"m.server"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxUserInfoBytes)).Decode(&wk); err != nil {
		return "", err
	}
	if !validServerName(wk.Server) {
		return "", fmt.Errorf("m.server %q is not a server name", wk.Server)
	}
	return wk.Server, nil
}

// explicitAddr reports a server name that names its address itself: an IP
// literal or a host with a port, given its host:port (8448 by default).
func explicitAddr(name string) (string, bool) {
	if host, port, err := net.SplitHostPort(name); err == nil {
		return net.JoinHostPort(strings.Trim(host, "[]"), port), true
	}
	if ip := net.ParseIP(strings.Trim(name, "[]")); ip != nil {
		return net.JoinHostPort(ip.String(), "8448"), true
	}
	return "", false
}

// validServerName checks the grammar of a Matrix server name (host or
// host:port) loosely: enough to keep a request's value out of URL syntax.
func validServerName(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == ':', r == '[', r == ']':
		default:
			return false
		}
	}
	return true
}
