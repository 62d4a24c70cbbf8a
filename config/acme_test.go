package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestACMEValidate: what the acme section and tls.acme accept and refuse,
// each refusal naming its key.
func TestACMEValidate(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := func() Config {
		c := Default()
		c.TURN.Listen.TLS = []string{"0.0.0.0:5349"}
		c.TURN.TLS.ACME = true
		c.HTTP.TLS.ACME = true
		c.ACME.Domains = []string{"turn.voip.test", "api.voip.test"}
		c.ACME.Email = "ops@example.org"
		c.ACME.AgreeTOS = true
		c.ICEServers.Hostname = "TURN.voip.test"
		return c
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"good", func(*Config) {}, ""},
		{"off by default", func(c *Config) { *c = Default() }, ""},
		{"api only, tls-alpn-01, private CA", func(c *Config) {
			c.TURN.TLS.ACME = false
			c.TURN.Listen.TLS = []string{}
			c.ACME.Challenge, c.ACME.CAURL, c.ACME.CARootFile = ChallengeTLSALPN01, "https://127.0.0.1:14000/dir", root
		}, ""},
		{"files and acme", func(c *Config) { c.TURN.TLS.CertFile = root }, "turn.tls: acme and cert_file/key_file are both set; keep one"},
		{"http files and acme", func(c *Config) { c.HTTP.TLS.KeyFile = root }, "http.tls: acme and cert_file/key_file are both set"},
		{"turn acme without listener", func(c *Config) { c.TURN.Listen.TLS = []string{} }, "turn.tls.acme: is set but turn.listen.tls is empty"},
		{"no domains", func(c *Config) { c.ACME.Domains = []string{} }, "acme.domains: required when a listener sets tls.acme"},
		{"domains unused", func(c *Config) { c.TURN.TLS.ACME, c.HTTP.TLS.ACME, c.TURN.Listen.TLS = false, false, []string{} }, "acme.domains: set, but no listener gets its certificate from ACME"},
		{"wildcard", func(c *Config) { c.ACME.Domains = []string{"*.example.org"} }, "acme.domains[0]: \"*.example.org\": wildcard names need the dns-01 challenge"},
		{"not fqdn", func(c *Config) { c.ACME.Domains = []string{"localhost"} }, "acme.domains[0]: \"localhost\" is not a fully qualified domain name"},
		{"bad name", func(c *Config) { c.ACME.Domains = []string{"a_b.example.org"} }, "acme.domains[0]: \"a_b.example.org\" is not a fully qualified"},
		{"placeholder", func(c *Config) { c.ACME.Domains = []string{"turn.example.org"} }, "acme.domains[0]: \"turn.example.org\" is the example's placeholder"},
		{"ip", func(c *Config) { c.ACME.Domains = []string{"192.0.2.1"} }, "acme.domains[0]: \"192.0.2.1\" is an IP address"},
		{"twice", func(c *Config) { c.ACME.Domains = []string{"turn.voip.test", "TURN.voip.test"} }, "acme.domains[1]: \"TURN.voip.test\" is listed twice"},
		{"email", func(c *Config) { c.ACME.Email = "ops at example" }, "acme.email: \"ops at example\" is not an email address"},
		{"ca url http", func(c *Config) { c.ACME.CAURL = "http://ca.example.org/dir" }, "acme.ca_url: \"http://ca.example.org/dir\" is not an https URL"},
		{"ca root missing", func(c *Config) { c.ACME.CARootFile = filepath.Join(dir, "nope.pem") }, "acme.ca_root_file: " + filepath.Join(dir, "nope.pem") + " does not exist"},
		{"challenge", func(c *Config) { c.ACME.Challenge = "dns-01" }, "acme.challenge: \"dns-01\" is not one of http-01, tls-alpn-01"},
		{"http listen", func(c *Config) { c.ACME.HTTPListen = "example.org:80" }, "acme.http_listen: host \"example.org\" is not an IP address"},
		{"tos", func(c *Config) { c.ACME.AgreeTOS = false }, "acme.agree_tos: must be true"},
		{"ice hostname unset", func(c *Config) { c.ICEServers.Hostname = "" }, `ice_servers.hostname: "" must be one of acme.domains with turn.tls.acme`},
		{"ice hostname other", func(c *Config) { c.ICEServers.Hostname = "relay.voip.test" }, `ice_servers.hostname: "relay.voip.test" must be one of acme.domains`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("got %v, want valid", err)
			case tc.want != "" && (err == nil || strings.Count(err.Error(), "\n") > 0 || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want one error containing %q", err, tc.want)
			}
		})
	}
}

// TestACMEEnv: the acme keys and tls.acme from the environment.
func TestACMEEnv(t *testing.T) {
	c, err := Load("", []string{
		"ICEBOX_TURN_LISTEN_TLS=0.0.0.0:443", "ICEBOX_TURN_TLS_ACME=true", "ICEBOX_HTTP_TLS_ACME=true",
		"ICEBOX_ACME_DOMAINS=turn.voip.test,api.voip.test", "ICEBOX_ACME_AGREE_TOS=true",
		"ICEBOX_ACME_CHALLENGE=tls-alpn-01", "ICEBOX_ACME_EMAIL=ops@example.org", "ICEBOX_ICE_SERVERS_HOSTNAME=turn.voip.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !c.UsesACME() || len(c.ACME.Domains) != 2 || c.ACME.Challenge != ChallengeTLSALPN01 || c.ACME.CAURL != LetsEncryptDirectory || c.ACME.HTTPListen != ":80" {
		t.Errorf("got %+v", c.ACME)
	}
}
