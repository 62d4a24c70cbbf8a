package config

import (
	"fmt"
	"net/mail"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// ACME gets the certificates of the TLS listeners that set tls.acme
// (turn.tls, http.tls) from an ACME CA — Let's Encrypt, or any RFC 8555
// CA — instead of files: obtained at start, stored with the ACME account in
// state_dir/acme (directories 0700, files 0600) and renewed before they
// expire; a renewal serves new handshakes while open connections and TURN
// allocations carry on. Unused while no listener sets tls.acme: its keys are
// then not checked, except that domains must be empty.
type ACME struct {
	// Domains are the names to get certificates for (one certificate
	// each); each must resolve to this host. The first answers clients
	// that send no name (SNI), such as TURN clients given an IP address.
	// With turn.tls.acme, ice_servers.hostname must be one of them.
	// Required when a listener sets tls.acme. Default: none
	Domains []string `yaml:"domains"`
	// Email is the account's contact, for the CA's expiry notices.
	// Default: "" (none)
	Email string `yaml:"email"`
	// CAURL is the CA's ACME directory (https). Default: Let's Encrypt's
	// production directory
	CAURL string `yaml:"ca_url"`
	// CARootFile is a PEM file of roots that the CA's own HTTPS chains to,
	// for a private CA; "" = the system's roots. Default: ""
	CARootFile string `yaml:"ca_root_file"`
	// Challenge is how the CA checks that icebox holds the domains:
	// "http-01" (the CA fetches http://<domain>/.well-known/acme-challenge/
	// on port 80, answered on http_listen) or "tls-alpn-01" (the CA opens
	// TLS to <domain>:443, answered by the ACME TLS listener on port 443:
	// http.listen or turn.listen.tls, or one that port 443 is forwarded
	// to). Default: "http-01"
	Challenge string `yaml:"challenge"`
	// HTTPListen is where http-01 challenges are answered (port 80 as the
	// CA sees it); other requests there get 404. Default: ":80"
	HTTPListen string `yaml:"http_listen"`
	// AgreeTOS accepts the CA's terms of service (Let's Encrypt's
	// subscriber agreement); it must be true to get certificates.
	// Default: false
	AgreeTOS bool `yaml:"agree_tos"`
}

// LetsEncryptDirectory is the default acme.ca_url.
const LetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// The acme.challenge values.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
)

// defaultACME is the acme section's defaults.
func defaultACME() ACME {
	return ACME{Domains: []string{}, CAURL: LetsEncryptDirectory, Challenge: ChallengeHTTP01, HTTPListen: ":80"}
}

// UsesACME reports whether any listener gets its certificate from acme.
func (c *Config) UsesACME() bool {
	return (c.TURN.TLS.ACME && len(c.TURN.Listen.TLS)+len(c.TURN.Mux.Listen) > 0) || c.HTTP.TLS.ACME
}

// tlsSource checks one listener's certificate source: files or ACME, not
// both; path is its section ("turn.tls").
func (v *validator) tlsSource(path string, tf TLSFiles) {
	if tf.ACME && (tf.CertFile != "" || tf.KeyFile != "") {
		v.add(path, "acme and cert_file/key_file are both set; keep one (ACME gets the certificate itself)")
	}
}

// acme checks the acme section when a listener uses it.
func (v *validator) acme(c *Config) {
	v.tlsSource("turn.tls", c.TURN.TLS)
	v.tlsSource("http.tls", c.HTTP.TLS)
	if c.TURN.TLS.ACME && len(c.TURN.Listen.TLS)+len(c.TURN.Mux.Listen) == 0 {
		v.add("turn.tls.acme", "is set but turn.listen.tls is empty (and so is turn.mux.listen): no TURN TLS listener would use the certificate")
	}
	a := &c.ACME
	if !c.UsesACME() {
		if len(a.Domains) > 0 {
			v.add("acme.domains", "set, but no listener gets its certificate from ACME (set turn.tls.acme or http.tls.acme: true)")
		}
		return
	}
	if len(a.Domains) == 0 {
		v.add("acme.domains", "required when a listener sets tls.acme: the names to get certificates for (e.g. [turn.example.com])")
	}
	errsBefore := len(v.errs)
	seen := map[string]bool{}
	for i, d := range a.Domains {
		path := fmt.Sprintf("acme.domains[%d]", i)
		switch {
		case strings.Contains(d, "*"):
			v.add(path, "%q: wildcard names need the dns-01 challenge, which icebox does not do; list each name", d)
		case strings.HasSuffix(d, "."), !validHostname(d), !strings.Contains(d, "."):
			v.add(path, "%q is not a fully qualified domain name (e.g. turn.example.com)", d)
		case isExampleHost(d):
			v.add(path, "%q is the example's placeholder; no CA issues certificates for it: give this server's name", d)
		case isIPText(d):
			v.add(path, "%q is an IP address; ACME certificates here are for domain names", d)
		case seen[strings.ToLower(d)]:
			v.add(path, "%q is listed twice", d)
		}
		seen[strings.ToLower(d)] = true
	}
	if a.Email != "" {
		if addr, err := mail.ParseAddress(a.Email); err != nil || addr.Address != a.Email {
			v.add("acme.email", "%q is not an email address", a.Email)
		}
	}
	if u, err := url.Parse(a.CAURL); err != nil || u.Scheme != "https" || u.Host == "" {
		v.add("acme.ca_url", "%q is not an https URL of an ACME directory (Let's Encrypt: %s)", a.CAURL, LetsEncryptDirectory)
	}
	if a.CARootFile != "" {
		v.requiredFile("acme.ca_root_file", a.CARootFile, "acme")
	}
	v.oneOf("acme.challenge", a.Challenge, ChallengeHTTP01, ChallengeTLSALPN01)
	if a.Challenge == ChallengeHTTP01 {
		v.hostPort("acme.http_listen", a.HTTPListen, true)
	}
	domainsOK := len(v.errs) == errsBefore && len(a.Domains) > 0
	if c.TURN.TLS.ACME && len(c.TURN.Listen.TLS) > 0 && domainsOK {
		// Clients verify the turns: certificate against the URL's host,
		// which /calls/ice_servers takes from ice_servers.hostname (else an
		// IP address, which no ACME certificate here names).
		h := c.ICEServers.Hostname
		if !slices.ContainsFunc(a.Domains, func(d string) bool { return strings.EqualFold(d, h) }) {
			v.add("ice_servers.hostname", "%q must be one of acme.domains with turn.tls.acme: clients check the turns: certificate against this name", h)
		}
	}
	if !a.AgreeTOS {
		v.add("acme.agree_tos", "must be true: getting certificates means accepting the CA's terms of service (read them at the CA, e.g. Let's Encrypt's subscriber agreement)")
	}
}

func isIPText(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}
