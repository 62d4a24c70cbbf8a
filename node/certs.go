package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/internal/acmecert"
	"github.com/icebox-voip/icebox/internal/tlsreload"
)

// certSource is where TLS listeners get their certificate: files
// (tlsreload.Reloader) or an ACME CA (acmecert.Manager). Both answer
// through tls.Config.GetCertificate, so a reload or renewal reaches new
// handshakes only: open connections and TURN allocations carry on. Run
// runs Watch; SIGHUP calls Reload.
type certSource interface {
	Watch(ctx context.Context) error
	Reload(why string)
}

// bindCerts gives the bound TLS listeners (TURN over TLS, the API with
// http.tls) their certificates, from files or ACME, and exports their
// expiry per listener.
func (n *Node) bindCerts(ctx context.Context) error {
	turnTLS := len(n.turnLn.TLS)+len(n.muxLn) > 0 // the shared port serves turn.tls's certificate
	apiTLS := n.cfg.HTTP.TLS.ACME || n.cfg.HTTP.TLS.CertFile != ""
	if !turnTLS && !apiTLS {
		return nil
	}
	if (turnTLS && n.cfg.TURN.TLS.ACME) || n.cfg.HTTP.TLS.ACME {
		if err := n.bindACME(ctx); err != nil {
			return err
		}
	}
	expiry := tlsreload.NewExpiry(n.opts.Registry)
	if turnTLS {
		cfg, notAfter, err := n.certSource("turn.tls", n.cfg.TURN.TLS)
		if err != nil {
			return err
		}
		n.turnLn.TLSConfig = cfg
		expiry.Track("turn", notAfter)
	}
	if apiTLS {
		cfg, notAfter, err := n.certSource("http.tls", n.cfg.HTTP.TLS)
		if err != nil {
			return err
		}
		n.httpLn = tls.NewListener(n.httpLn, cfg)
		expiry.Track("api", notAfter)
	}
	return nil
}

// certSource returns the TLS config of one listener's section and when its
// certificate expires.
func (n *Node) certSource(section string, tf config.TLSFiles) (*tls.Config, func() time.Time, error) {
	if tf.ACME {
		return n.acme.TLSConfig(), n.acme.NotAfter, nil
	}
	r, err := tlsreload.New(tf.CertFile, tf.KeyFile, n.log)
	if err != nil {
		return nil, nil, ConfigError{fmt.Errorf("%s: %w", section, err)}
	}
	n.certs = append(n.certs, r)
	return r.TLSConfig(), r.NotAfter, nil
}

// bindACME binds the http-01 challenge listener (for that challenge) and
// builds the ACME manager; it asks the CA nothing before Run.
func (n *Node) bindACME(ctx context.Context) error {
	a := n.cfg.ACME
	mc := acmecert.Config{
		Domains:            a.Domains,
		Email:              a.Email,
		CA:                 a.CAURL,
		AgreeTOS:           a.AgreeTOS,
		Challenge:          a.Challenge,
		StorageDir:         filepath.Join(n.cfg.StateDir, "acme"),
		RenewCheckInterval: n.opts.ACMERenewCheck,
		Logger:             n.log,
		Registerer:         n.opts.Registry,
	}
	if a.CARootFile != "" {
		b, err := os.ReadFile(a.CARootFile)
		if err != nil {
			return ConfigError{fmt.Errorf("acme.ca_root_file: %w", err)}
		}
		mc.CARoots = x509.NewCertPool()
		if !mc.CARoots.AppendCertsFromPEM(b) {
			return ConfigError{fmt.Errorf("acme.ca_root_file: %s holds no PEM certificate", a.CARootFile)}
		}
	}
	switch a.Challenge {
	case config.ChallengeHTTP01:
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", a.HTTPListen)
		if err != nil {
			return fmt.Errorf("acme: listen %s (http-01): %w", a.HTTPListen, err)
		}
		n.onClose(func() error { return ignoreClosed(ln.Close()) })
		mc.HTTPListener = ln
	case config.ChallengeTLSALPN01:
		mc.TLSALPNAddr = n.tlsALPNAddr()
	}
	m, err := acmecert.New(mc)
	if err != nil {
		return ConfigError{fmt.Errorf("acme: %w", err)}
	}
	n.onClose(m.Close)
	n.acme = m
	n.certs = append(n.certs, m)
	return nil
}

// tlsALPNAddr is the ACME TLS listener the CA reaches for tls-alpn-01: the
// one on port 443, else (port 443 forwarded to it) the first one.
func (n *Node) tlsALPNAddr() string {
	var addrs []string
	if n.cfg.HTTP.TLS.ACME {
		addrs = append(addrs, n.addrs.HTTP)
	}
	if n.cfg.TURN.TLS.ACME {
		addrs = append(addrs, n.addrs.TURNTLS...)
	}
	for _, addr := range addrs {
		if _, port, err := net.SplitHostPort(addr); err == nil && port == "443" {
			return addr
		}
	}
	return addrs[0]
}

// certsReady is nil unless ACME has no valid certificate yet for a domain
// (then TLS handshakes fail): a failing renewal while the current
// certificate is valid keeps the node ready, and shows in ACMEStatus.
func (n *Node) certsReady() error {
	if n.acme == nil {
		return nil
	}
	return n.acme.Ready()
}

// ACMEStatus is each ACME domain's certificate state (expiry, last failed
// order or renewal), for /readyz details; nil without ACME.
func (n *Node) ACMEStatus() []acmecert.DomainStatus {
	if n.acme == nil {
		return nil
	}
	return n.acme.Status()
}

// readyDetails is /readyz's "details": each ACME domain's certificate expiry
// and whether its last order or renewal failed (when, not why: /readyz needs
// no token; the log has the CA's error). nil without ACME.
func (n *Node) readyDetails() map[string]any {
	st := n.ACMEStatus()
	if len(st) == 0 {
		return nil
	}
	type domain struct {
		Domain      string     `json:"domain"`
		NotAfter    *time.Time `json:"not_after,omitempty"`
		FailedAt    *time.Time `json:"last_failure_at,omitempty"`
		FailingStep string     `json:"failing,omitempty"` // "renew" or "obtain"
	}
	out := make([]domain, 0, len(st))
	for _, d := range st {
		v := domain{Domain: d.Domain, NotAfter: d.NotAfter}
		if d.LastError != "" {
			v.FailedAt, v.FailingStep = d.LastErrorAt, "obtain"
			if d.Renewal {
				v.FailingStep = "renew"
			}
		}
		out = append(out, v)
	}
	return map[string]any{"acme": out}
}
