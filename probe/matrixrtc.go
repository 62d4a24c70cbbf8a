package probe

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/livekit/protocol/auth"
)

// Verdicts of the MatrixRTC checks.
const (
	// VerdictHTTPStatus: the server answered with another status than the
	// one expected (a reverse proxy path that leads elsewhere, say).
	VerdictHTTPStatus Verdict = "http_status"
	// VerdictNotLiveKit: something answered on the LiveKit URL, but not
	// what livekit-server answers.
	VerdictNotLiveKit Verdict = "not_livekit"
	// VerdictLiveKitAuth: LiveKit refused the API key and secret.
	VerdictLiveKitAuth Verdict = "livekit_key_refused"
)

// Transports of the MatrixRTC results.
const (
	HTTP  = "http"
	HTTPS = "https"
)

// MatrixRTC says what of the MatrixRTC stack `icebox check` tests: the
// authorization service's health and the LiveKit server clients are sent
// to, with the API key the service signs tokens with.
type MatrixRTC struct {
	// ServiceURL is the service's base (…/livekit/jwt): its /healthz is
	// asked.
	ServiceURL string
	// ServiceWhere says in a hint where ServiceURL came from, e.g.
	// "matrixrtc.public_url" or "the local http.listen".
	ServiceWhere string
	// ServiceInsecure skips certificate checks of the service (icebox's
	// own listener asked on loopback, whose certificate names the public
	// host).
	ServiceInsecure bool
	// LiveKitURL is matrixrtc.livekit.url (ws:// or wss://, maybe with a
	// reverse proxy's path).
	LiveKitURL string
	// APIKey and APISecret are tested with RoomService.ListRooms when both
	// are set.
	APIKey, APISecret string
	RootCAs           *x509.CertPool
	Insecure          bool
	Timeout           time.Duration // per request; default DefaultTimeout
}

// CheckMatrixRTC tests the service's /healthz and the LiveKit server
// (reachable, livekit-server's "OK" on /, the API key accepted) and returns
// one result for each.
func CheckMatrixRTC(ctx context.Context, m MatrixRTC) []*Result {
	if m.Timeout <= 0 {
		m.Timeout = DefaultTimeout
	}
	return []*Result{m.checkService(ctx), m.checkLiveKit(ctx)}
}

func (m MatrixRTC) client(insecure bool) *http.Client {
	return &http.Client{
		Timeout: m.Timeout,
		Transport: &http.Transport{
			Proxy:           nil,                                                           // the check is of the direct path clients take
			TLSClientConfig: &tls.Config{RootCAs: m.RootCAs, InsecureSkipVerify: insecure}, //nolint:gosec // --insecure, or icebox's own loopback listener
		},
		// A redirect is a misconfiguration to report, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// checkService asks the authorization service's /healthz.
func (m MatrixRTC) checkService(ctx context.Context) *Result {
	u := strings.TrimSuffix(m.ServiceURL, "/") + "/healthz"
	r := &Result{URL: u, Transport: schemeOf(u)}
	hc := m.client(m.Insecure || m.ServiceInsecure)
	defer hc.CloseIdleConnections()
	start := time.Now()
	status, _, err := get(ctx, hc, u)
	d := time.Since(start)
	switch {
	case err != nil:
		v, msg, hint := httpVerdict(err, u)
		r.fail("healthz", d, v, "MatrixRTC authorization service: "+msg,
			hint+"; the URL is "+m.ServiceWhere+" + matrixrtc.base_path + /healthz")
	case status != http.StatusOK:
		r.fail("healthz", d, VerdictHTTPStatus, fmt.Sprintf("MatrixRTC authorization service: GET %s answered %d, want 200", u, status),
			"the reverse proxy must pass matrixrtc.base_path ("+pathOf(m.ServiceURL)+") to icebox's http.listen unchanged, "+
				"and matrixrtc.enabled must be true in the running icebox")
	default:
		r.step("healthz", StatusOK, d, "200")
		r.Verdict = VerdictOK
	}
	return r
}

// checkLiveKit asks the LiveKit server's root (livekit-server answers "OK"
// there) and, with the API key, RoomService.ListRooms.
func (m MatrixRTC) checkLiveKit(ctx context.Context) *Result {
	base, err := liveKitHTTP(m.LiveKitURL)
	r := &Result{URL: m.LiveKitURL, Transport: schemeOf(base)}
	if err != nil {
		r.fail("url", 0, VerdictHTTPStatus, err.Error(), "matrixrtc.livekit.url must be ws://HOST:PORT or wss://HOST[/path]")
		return r
	}
	hc := m.client(m.Insecure)
	defer hc.CloseIdleConnections()
	start := time.Now()
	status, body, err := get(ctx, hc, base+"/")
	d := time.Since(start)
	switch {
	case err != nil:
		v, msg, hint := httpVerdict(err, base)
		r.fail("reach", d, v, "LiveKit server: "+msg,
			hint+" (livekit-server's port.signal, 7880 by default, or the reverse proxy in front of it on 443)")
		return r
	case status != http.StatusOK || strings.TrimSpace(string(body)) != "OK":
		r.fail("reach", d, VerdictNotLiveKit, fmt.Sprintf("LiveKit server: GET %s/ answered %d %q, not livekit-server's 200 \"OK\"", base, status, short(body)),
			"matrixrtc.livekit.url must lead to livekit-server; behind a reverse proxy, forward that path (and WebSocket upgrades) to livekit-server's port.signal")
		return r
	}
	r.step("reach", StatusOK, d, "200 OK")
	if m.APIKey == "" || m.APISecret == "" {
		r.step("api_key", StatusSkip, 0, "no API key and secret to test")
		r.Verdict = VerdictOK
		return r
	}
	start = time.Now()
	status, body, err = m.listRooms(ctx, hc, base)
	d = time.Since(start)
	switch {
	case err != nil:
		v, msg, hint := httpVerdict(err, base)
		r.fail("api_key", d, v, "LiveKit RoomService: "+msg, hint)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		r.fail("api_key", d, VerdictLiveKitAuth, fmt.Sprintf("LiveKit refused the API key %q and its secret (%d %s)", m.APIKey, status, short(body)),
			"matrixrtc.livekit.api_key and api_secret (or api_secret_file) must be a pair in livekit-server's keys: (or LIVEKIT_KEYS); "+
				"without it every token icebox issues is refused and calls never connect")
	case status != http.StatusOK:
		r.fail("api_key", d, VerdictHTTPStatus, fmt.Sprintf("LiveKit RoomService.ListRooms answered %d %s", status, short(body)),
			"the reverse proxy must forward /twirp/ to livekit-server too (icebox creates rooms through it)")
	default:
		r.step("api_key", StatusOK, d, "RoomService.ListRooms accepted key "+m.APIKey)
		r.Verdict = VerdictOK
	}
	return r
}

// listRooms calls LiveKit's RoomService.ListRooms (Twirp, JSON) with a
// token for the key: the cheapest call that needs a valid key and secret.
// (server-sdk-go would do the same one POST and bring a WebRTC stack.)
func (m MatrixRTC) listRooms(ctx context.Context, hc *http.Client, base string) (int, []byte, error) {
	at := auth.NewAccessToken(m.APIKey, m.APISecret)
	at.SetVideoGrant(&auth.VideoGrant{RoomList: true}).SetValidFor(time.Minute)
	jwt, err := at.ToJWT()
	if err != nil {
		return 0, nil, fmt.Errorf("signing a LiveKit token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/twirp/livekit.RoomService/ListRooms", bytes.NewReader([]byte("{}")))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+jwt)
	return do(hc, req)
}

func get(ctx context.Context, hc *http.Client, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	return do(hc, req)
}

func do(hc *http.Client, req *http.Request) (int, []byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	return resp.StatusCode, body, err
}

// liveKitHTTP turns matrixrtc.livekit.url into the HTTP base of the same
// server (ws → http, wss → https), without a final /.
func liveKitHTTP(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("LiveKit URL %q is not a URL", raw)
	}
	switch u.Scheme {
	case "ws", "http":
		u.Scheme = "http"
	case "wss", "https":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("LiveKit URL %q: want ws:// or wss://", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// httpVerdict classifies an error of an HTTP request to u.
func httpVerdict(err error, u string) (Verdict, string, string) {
	host := u
	if pu, perr := url.Parse(u); perr == nil {
		host = pu.Host
	}
	var (
		dnsErr  *net.DNSError
		ne      net.Error
		unknown x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &dnsErr):
		return VerdictResolve, fmt.Sprintf("cannot resolve %s: %v", host, dnsErr), "check the host name and this machine's DNS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return VerdictRefused, fmt.Sprintf("connection refused by %s: nothing listens there", host), "start the server, or fix the address and port"
	case errors.As(err, &unknown):
		return VerdictTLSUntrusted, fmt.Sprintf("the certificate of %s is signed by an unknown authority", host), "install a certificate from a public CA (or pass --ca)"
	case errors.As(err, &hostErr):
		return VerdictTLSName, fmt.Sprintf("the certificate of %s does not name it: %v", host, hostErr), "the certificate must name the host in the URL"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return VerdictTLSExpired, fmt.Sprintf("the certificate of %s is expired or not yet valid", host), "renew the certificate"
	case errors.As(err, &ne) && ne.Timeout():
		return VerdictUnreachable, fmt.Sprintf("no answer from %s (timed out)", host), "a firewall may drop the traffic, or the server is down"
	default:
		return VerdictUnreachable, fmt.Sprintf("cannot reach %s: %v", host, err), "check that the server runs and is reachable from here"
	}
}

func schemeOf(u string) string {
	if strings.HasPrefix(u, "https://") {
		return HTTPS
	}
	return HTTP
}

func pathOf(u string) string {
	if pu, err := url.Parse(u); err == nil && pu.Path != "" {
		return pu.Path
	}
	return "/"
}

// short is a response body for a message: one line, at most 80 bytes.
func short(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
