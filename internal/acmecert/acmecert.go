// Package acmecert gets and renews the certificates of icebox's TLS
// listeners from an ACME CA (RFC 8555: Let's Encrypt, or a private CA),
// through certmagic. The certificates and the ACME account live in a
// directory of the state directory; the listeners' tls.Config asks the
// Manager for the current certificate on every handshake, so a renewal is
// seen by the next handshake while open connections (and the TURN
// allocations over them) carry on with the one they began with.
//
// A failed order or renewal leaves the certificate that serves in place;
// certmagic retries with backoff, the failure is logged, counted and kept
// for Status until a later attempt succeeds.
package acmecert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// The challenges a Manager can answer.
const (
	// HTTP01 answers the CA on port 80 over plain HTTP (Config.HTTPListener).
	HTTP01 = "http-01"
	// TLSALPN01 answers the CA on port 443 inside TLS, on the listeners
	// that use TLSConfig (ALPN "acme-tls/1", RFC 8737).
	TLSALPN01 = "tls-alpn-01"
)

// LetsEncrypt is the production directory of Let's Encrypt.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// Config is what a Manager is built from.
type Config struct {
	// Domains are the names to get certificates for, one certificate each
	// (certmagic's model); the first also answers clients that send no
	// SNI (TURN clients given an IP address) or another name.
	Domains []string
	// Email is given to the CA for expiry notices; "" registers without.
	Email string
	// CA is the ACME directory URL. Default: LetsEncrypt.
	CA string
	// CARoots verifies the CA's HTTPS (a private CA, pebble); nil: the
	// system's roots.
	CARoots *x509.CertPool
	// AgreeTOS accepts the CA's terms of service; required.
	AgreeTOS bool
	// Challenge is HTTP01 or TLSALPN01.
	Challenge string
	// HTTPListener receives the CA's http-01 requests (bound by the
	// caller, port 80 as the CA sees it); Run serves it. Required for
	// HTTP01, unused otherwise.
	HTTPListener net.Listener
	// TLSALPNAddr is the address ("host:port") of the caller's TLS listener
	// that the CA reaches on port 443, for TLSALPN01: certmagic then finds
	// it taken and does not open a listener of its own.
	TLSALPNAddr string
	// StorageDir holds certificates, keys and the ACME account (created
	// 0700, files 0600).
	StorageDir string
	// RenewCheckInterval is how often certificates are checked for
	// renewal. Default: certmagic's 10 minutes.
	RenewCheckInterval time.Duration
	// RenewalWindowRatio is the share of a certificate's lifetime, at its
	// end, in which it is renewed. Default: certmagic's 1/3.
	RenewalWindowRatio float64
	Logger             zerolog.Logger
	// Registerer receives the icebox_acme_* metrics; nil: not recorded.
	Registerer prometheus.Registerer
}

// Manager gets and renews the certificates of Config.Domains.
type Manager struct {
	cfg     Config
	log     zerolog.Logger
	cache   *certmagic.Cache
	magic   *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	metrics *metrics

	mu       sync.Mutex
	failures map[string]failure // by domain; cleared by the next success

	closeOnce sync.Once
}

// failure is the last failed attempt for one domain.
type failure struct {
	at      time.Time
	renewal bool
	err     string
}

// New checks cfg and builds the Manager; nothing is asked of the CA before
// Run. Close releases it.
func New(cfg Config) (*Manager, error) {
	if len(cfg.Domains) == 0 {
		return nil, errors.New("acmecert: no domains")
	}
	if !cfg.AgreeTOS {
		return nil, errors.New("acmecert: the CA's terms of service must be agreed to (AgreeTOS)")
	}
	if cfg.CA == "" {
		cfg.CA = LetsEncrypt
	}
	switch cfg.Challenge {
	case HTTP01:
		if cfg.HTTPListener == nil {
			return nil, errors.New("acmecert: http-01 needs an HTTPListener")
		}
	case TLSALPN01:
		if cfg.TLSALPNAddr == "" {
			return nil, errors.New("acmecert: tls-alpn-01 needs the address of a TLS listener (TLSALPNAddr)")
		}
	default:
		return nil, fmt.Errorf("acmecert: challenge %q is not %s or %s", cfg.Challenge, HTTP01, TLSALPN01)
	}
	if err := os.MkdirAll(cfg.StorageDir, 0o700); err != nil {
		return nil, fmt.Errorf("acmecert: storage: %w", err)
	}
	if err := os.Chmod(cfg.StorageDir, 0o700); err != nil {
		return nil, fmt.Errorf("acmecert: storage: %w", err)
	}
	m := &Manager{
		cfg:      cfg,
		log:      cfg.Logger.With().Str("component", "acme").Logger(),
		metrics:  newMetrics(cfg.Registerer),
		failures: map[string]failure{},
	}
	zl := newZapLogger(m.log)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: cfg.RenewCheckInterval,
		Logger:             zl,
	})
	m.magic = certmagic.New(m.cache, certmagic.Config{
		RenewalWindowRatio: cfg.RenewalWindowRatio,
		DefaultServerName:  cfg.Domains[0],
		// A name not managed here gets the first domain's certificate
		// (the client then refuses it), as one certificate from files
		// answers every name, rather than a failed handshake.
		FallbackServerName: cfg.Domains[0],
		Storage:            &certmagic.FileStorage{Path: cfg.StorageDir},
		OnEvent:            m.onEvent,
		// tls_get_certificate comes with every handshake: not wanted.
		ShouldEmitFunc: func(event string) bool { return event != "tls_get_certificate" },
		Logger:         zl,
	})
	tmpl := certmagic.ACMEIssuer{
		CA:                      cfg.CA,
		TestCA:                  cfg.CA, // no separate staging run: the CA's own rate limits apply
		Email:                   cfg.Email,
		Agreed:                  true,
		TrustedRoots:            cfg.CARoots,
		DisableHTTPChallenge:    cfg.Challenge != HTTP01,
		DisableTLSALPNChallenge: cfg.Challenge != TLSALPN01,
		Logger:                  zl,
	}
	// Point certmagic's own challenge listener at the address icebox
	// holds already: it finds it taken and leaves the answer to icebox.
	addr := cfg.TLSALPNAddr
	if cfg.Challenge == HTTP01 {
		addr = cfg.HTTPListener.Addr().String()
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		m.cache.Stop()
		return nil, fmt.Errorf("acmecert: challenge address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		m.cache.Stop()
		return nil, fmt.Errorf("acmecert: challenge address %q: %w", addr, err)
	}
	tmpl.ListenHost = host
	if cfg.Challenge == HTTP01 {
		tmpl.AltHTTPPort = p
	} else {
		tmpl.AltTLSALPNPort = p
	}
	m.issuer = certmagic.NewACMEIssuer(m.magic, tmpl)
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

// TLSConfig returns a server config that serves the current certificate
// for the client's SNI (Domains[0] without one) and, for tls-alpn-01,
// answers the CA's validation handshakes; other clients see no ALPN
// offered, as with a certificate from files.
func (m *Manager) TLSConfig() *tls.Config {
	base := &tls.Config{GetCertificate: m.magic.GetCertificate, MinVersion: tls.VersionTLS12}
	if m.cfg.Challenge != TLSALPN01 {
		return base
	}
	// Only the CA's validation handshake (which offers acme-tls/1 alone)
	// gets acme-tls/1 negotiated: offering it to every client would refuse
	// those whose ALPN list does not overlap.
	alpn := &tls.Config{GetCertificate: m.magic.GetCertificate, MinVersion: tls.VersionTLS12,
		NextProtos: []string{acmez.ACMETLS1Protocol}}
	base.GetConfigForClient = func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(h.SupportedProtos, acmez.ACMETLS1Protocol) {
			return alpn, nil
		}
		return nil, nil
	}
	return base
}

// Watch gets the certificates (from storage, else from the CA) and keeps
// them renewed, serving the http-01 listener, until ctx is done. It is
// named after tlsreload.Reloader.Watch, its counterpart for files.
func (m *Manager) Watch(ctx context.Context) error {
	var srv *http.Server
	errc := make(chan error, 1)
	if m.cfg.Challenge == HTTP01 {
		srv = &http.Server{
			Handler:           m.issuer.HTTPChallengeHandler(http.HandlerFunc(notChallenge)),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    8 << 10,
		}
		go func() { errc <- srv.Serve(m.cfg.HTTPListener) }()
	}
	start := time.Now()
	m.log.Info().Strs("domains", m.cfg.Domains).Str("ca", m.cfg.CA).Str("challenge", m.cfg.Challenge).
		Msg("managing certificates")
	// ManageAsync loads what storage has and orders the rest in the
	// background, retrying with backoff; the cache renews from then on.
	if err := m.magic.ManageAsync(ctx, m.cfg.Domains); err != nil {
		m.log.Error().Err(err).Msg("managing certificates")
	}
	go m.logFirstCertificate(ctx, start)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		} else {
			err = fmt.Errorf("acmecert: http-01 listener: %w", err)
		}
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // ends Serve: errc has room for its answer
	}
	return err
}

// logFirstCertificate logs once when every domain has a certificate, with
// how long it took (the time to first certificate on a fresh start).
func (m *Manager) logFirstCertificate(ctx context.Context, start time.Time) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if m.Ready() == nil {
				m.log.Info().Dur("after", time.Since(start)).Time("not_after", m.NotAfter()).
					Msg("serving ACME certificates for every domain")
				return
			}
		}
	}
}

func notChallenge(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "this port answers ACME http-01 challenges only", http.StatusNotFound)
}

// Reload does nothing: certificates renew themselves. It is there so that
// SIGHUP, which reloads certificate files, treats both kinds alike.
func (m *Manager) Reload(why string) {
	m.log.Debug().Str("trigger", why).Msg("ACME certificates renew by themselves; nothing to reload")
}

// Close stops the renewals. It is idempotent.
func (m *Manager) Close() error {
	m.closeOnce.Do(m.cache.Stop)
	return nil
}

// current returns the newest certificate cached for domain, or nil.
func (m *Manager) current(domain string) *x509.Certificate {
	var best *x509.Certificate
	for _, c := range m.cache.AllMatchingCertificates(domain) {
		if c.Leaf != nil && (best == nil || c.Leaf.NotAfter.After(best.NotAfter)) {
			best = c.Leaf
		}
	}
	return best
}

// NotAfter is when the first of the served certificates expires; zero
// until every domain has one.
func (m *Manager) NotAfter() time.Time {
	var first time.Time
	for _, d := range m.cfg.Domains {
		leaf := m.current(d)
		if leaf == nil {
			return time.Time{}
		}
		if first.IsZero() || leaf.NotAfter.Before(first) {
			first = leaf.NotAfter
		}
	}
	return first
}

// Ready reports a domain without a valid certificate (none obtained yet,
// or expired), or nil. A failing renewal of a certificate that is still
// valid is not an error here: the old certificate serves (see Status).
func (m *Manager) Ready() error {
	now := time.Now()
	for _, d := range m.cfg.Domains {
		leaf := m.current(d)
		if leaf != nil && now.Before(leaf.NotAfter) {
			continue
		}
		what := "no certificate yet"
		if leaf != nil {
			what = "certificate expired on " + leaf.NotAfter.UTC().Format(time.RFC3339)
		}
		m.mu.Lock()
		f, failed := m.failures[d]
		m.mu.Unlock()
		if failed {
			return fmt.Errorf("acmecert: %s: %s; last attempt failed at %s: %s", d, what, f.at.UTC().Format(time.RFC3339), f.err)
		}
		return fmt.Errorf("acmecert: %s: %s", d, what)
	}
	return nil
}

// DomainStatus is the state of one domain's certificate.
type DomainStatus struct {
	Domain string `json:"domain"`
	// NotAfter is the served certificate's expiry; absent: none yet.
	NotAfter *time.Time `json:"not_after,omitempty"`
	// LastError is the last failed order or renewal, until one succeeds
	// (the old certificate, if any, keeps serving meanwhile).
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// Renewal: LastError is of a renewal (else of the first order).
	Renewal bool `json:"renewal,omitempty"`
}

// Status is each domain's certificate state, for /readyz details and
// operators: it names no key or account secret.
func (m *Manager) Status() []DomainStatus {
	out := make([]DomainStatus, 0, len(m.cfg.Domains))
	for _, d := range m.cfg.Domains {
		s := DomainStatus{Domain: d}
		if leaf := m.current(d); leaf != nil {
			na := leaf.NotAfter.UTC()
			s.NotAfter = &na
		}
		m.mu.Lock()
		if f, ok := m.failures[d]; ok {
			at := f.at.UTC()
			s.LastError, s.LastErrorAt, s.Renewal = f.err, &at, f.renewal
		}
		m.mu.Unlock()
		out = append(out, s)
	}
	return out
}

// onEvent keeps the metrics and failures from certmagic's events. It
// returns quickly and never cancels anything.
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	domain, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	op := "obtain"
	if renewal {
		op = "renew"
	}
	switch event {
	case "cert_obtained":
		m.metrics.done(renewal)
		m.mu.Lock()
		delete(m.failures, domain)
		m.mu.Unlock()
		m.log.Info().Str("domain", domain).Bool("renewal", renewal).Msg("certificate obtained")
	case "cert_failed":
		err, _ := data["error"].(error)
		if errors.Is(err, context.Canceled) {
			return nil // icebox is stopping: not the CA's failure
		}
		m.metrics.failed(op)
		msg := "unknown error"
		if err != nil {
			msg = err.Error()
		}
		m.mu.Lock()
		m.failures[domain] = failure{at: time.Now(), renewal: renewal, err: msg}
		m.mu.Unlock()
		ev := m.log.Error().Str("domain", domain).Bool("renewal", renewal).Str("error", msg)
		if leaf := m.current(domain); leaf != nil && time.Now().Before(leaf.NotAfter) {
			ev = ev.Time("serving_not_after", leaf.NotAfter)
			ev.Msg("certificate renewal failed; the current certificate keeps serving, and the CA will be asked again")
			return nil
		}
		ev.Msg("getting a certificate failed; the CA will be asked again")
	}
	return nil
}
