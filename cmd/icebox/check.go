package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/probe"
)

// errCheckFailed is check's error when a target did not pass; the report
// has said why.
var errCheckFailed = errors.New("check: not every server passed")

const checkLong = `Checks STUN/TURN servers (icebox, coturn, eturnal...) from this machine, as a
client: STUN binding, then for TURN URLs authenticate, allocate, create a
permission and relay a burst of packets relay to relay, with RTT and loss.
Exit 0 only if every URL passes, 1 if one fails, 2 on a bad command line.

URLs (RFC 7064/7065), default ports 3478 and 5349:

    stun:HOST[:PORT]
    turn:HOST[:PORT][?transport=udp|tcp]
    turns:HOST[:PORT]   (TLS)

Credentials: --secret (TURN REST shared secret), --config (icebox's keyring),
--username/--password, or --ice-servers-url with --token (checks the URLs and
credentials icebox's API gives clients).

With --config and matrixrtc.enabled it also checks the MatrixRTC stack (Element
Call, Element X): the authorization service's /healthz (at matrixrtc.public_url
+ base_path, else on the local http.listen), and the LiveKit server at
matrixrtc.livekit.url: reachable, answering as livekit-server, and accepting
the API key and secret. URLs are then optional.`

// checkCommand is `icebox check`.
func checkCommand(a *cli) *cobra.Command {
	var f checkFlags
	c := &cobra.Command{
		Use:   "check [flags] URL...",
		Short: "test STUN/TURN servers as a client: binding, allocate, relay, NAT, TLS",
		Long:  checkLong,
		Example: `  icebox check --secret-file /etc/icebox/compat-secret turn:turn.example.org
  icebox check --ice-servers-url https://calls.example.org/calls/ice_servers --token T
  icebox check --config /etc/icebox/icebox.yaml`,
		Args:              cobra.ArbitraryArgs, // the URLs, among the flags in any order
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(c *cobra.Command, args []string) error {
			f.urls = args
			if err := f.complete(a.env); err != nil {
				if errors.Is(err, errNoURL) {
					_, _ = io.WriteString(a.stderr, usageText(c))
				}
				return err
			}
			return check(c.Context(), &f, a.stdout, a.env)
		},
	}
	fs := c.Flags()
	fs.StringVar(&f.secret, "secret", "", "TURN REST shared secret to mint credentials with (default: $ICEBOX_CHECK_SECRET)")
	fs.StringVar(&f.secretFile, "secret-file", "", "file holding the shared secret")
	fs.StringVar(&f.kid, "kid", "", "icebox key id to name in minted usernames (default: none, for a compat secret or coturn)")
	fs.StringVar(&f.user, "user", probe.DefaultUser, "user in minted usernames")
	fs.DurationVar(&f.ttl, "ttl", probe.DefaultTTL, "lifetime of minted credentials")
	configFlag(fs, &f.cfgPath, "mint credentials from this icebox configuration's keyring (on the server itself); with matrixrtc.enabled, also check the MatrixRTC service and LiveKit")
	fs.StringVar(&f.username, "username", "", "TURN username (static or already minted)")
	fs.StringVar(&f.password, "password", "", "TURN password (default: $ICEBOX_CHECK_PASSWORD)")
	fs.StringVar(&f.iceURL, "ice-servers-url", "", "icebox's https://HOST/calls/ice_servers: check what it gives clients")
	fs.StringVar(&f.token, "token", "", "bearer token for --ice-servers-url (default: $ICEBOX_CHECK_TOKEN)")
	fs.StringVar(&f.caFile, "ca", "", "PEM file of CA certificates to verify TLS with (default: the system's)")
	fs.BoolVar(&f.insecure, "insecure", false, "report TLS certificate problems as warnings and go on")
	fs.IntVar(&f.packets, "packets", probe.DefaultPackets, "packets relayed per TURN URL")
	fs.DurationVar(&f.timeout, "timeout", probe.DefaultTimeout, "timeout of each step")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	return c
}

// errNoURL is check's usage error when there is nothing to check.
var errNoURL = errors.New("check: no URL to check (give stun:/turn:/turns: URLs or --ice-servers-url)")

// check runs `icebox check` once its flags are complete.
func check(ctx context.Context, f *checkFlags, stdout io.Writer, env []string) error {
	cfg, source, err := f.probeConfig(env)
	if err != nil {
		return err
	}
	rtc, err := f.matrixRTC(cfg.RootCAs, env)
	if err != nil {
		return err
	}
	if rtc == nil && f.iceURL == "" && len(f.urls) == 0 {
		return usagef("check: no URL to check, and matrixrtc is not enabled in %s (give stun:/turn:/turns: URLs or --ice-servers-url)", f.cfgPath)
	}
	var warnings []string
	if f.iceURL != "" {
		if f.token == "" {
			return usagef("check: --ice-servers-url needs --token (or $ICEBOX_CHECK_TOKEN)")
		}
		ice, err := f.fetchICEServers(ctx, cfg.RootCAs)
		if err != nil {
			return err
		}
		warnings = ice.Warnings
		if len(cfg.Targets) > 0 {
			// Only the given URLs, with the credentials the API handed out.
			cfg.Targets = withICECredentials(cfg.Targets, ice.Targets)
		} else {
			cfg.Targets = ice.Targets
		}
		source = "from " + f.iceURL
	}

	rep := probe.Run(ctx, cfg)
	if rtc != nil {
		rep.Results = append(rep.Results, probe.CheckMatrixRTC(ctx, *rtc)...)
		rep.OK = len(rep.Results) > 0
		for _, r := range rep.Results {
			rep.OK = rep.OK && r.OK()
		}
	}
	rep.Source = source
	rep.Warnings = append(warnings, rep.Warnings...)
	if f.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := printReport(stdout, rep); err != nil {
		return err
	}
	if !rep.OK {
		return errCheckFailed
	}
	return nil
}

// checkFlags are icebox check's flags and URLs, once parsed.
type checkFlags struct {
	secret, secretFile, kid, user string
	ttl                           time.Duration
	cfgPath, username, password   string
	iceURL, token, caFile         string
	insecure                      bool
	packets                       int
	timeout                       time.Duration
	jsonOut                       bool
	urls                          []string
}

// complete fills what the environment gives, and checks that the flags and
// URLs go together.
func (f *checkFlags) complete(env []string) error {
	if f.secret == "" {
		f.secret = lookupEnv(env, "ICEBOX_CHECK_SECRET", "")
	}
	if f.password == "" {
		f.password = lookupEnv(env, "ICEBOX_CHECK_PASSWORD", "")
	}
	if f.token == "" {
		f.token = lookupEnv(env, "ICEBOX_CHECK_TOKEN", "")
	}
	if f.secretFile != "" {
		if f.secret != "" {
			return usagef("check: --secret and --secret-file are exclusive")
		}
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			return usagef("check: --secret-file: %v", err)
		}
		f.secret = strings.TrimSpace(string(b))
		if f.secret == "" {
			return usagef("check: --secret-file %s is empty", f.secretFile)
		}
	}
	if err := f.exclusive(); err != nil {
		return err
	}
	if f.iceURL != "" && !strings.Contains(f.iceURL, "://") {
		return usagef("check: --ice-servers-url %q has no scheme: use https://%s (or http:// on loopback)", f.iceURL, f.iceURL)
	}
	if f.iceURL == "" && len(f.urls) == 0 && f.cfgPath == "" {
		return usageError{errNoURL}
	}
	return f.limits()
}

// exclusive checks that the credentials come from one source.
func (f *checkFlags) exclusive() error {
	sources := 0
	for _, set := range []bool{f.secret != "", f.cfgPath != "", f.username != "", f.iceURL != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return usagef("check: give one of --secret, --config, --username/--password, --ice-servers-url")
	case (f.username == "") != (f.password == ""):
		return usagef("check: --username and --password go together")
	}
	return nil
}

// limits checks the flags' ranges.
func (f *checkFlags) limits() error {
	switch {
	case f.ttl < time.Second:
		return usagef("check: --ttl must be at least 1s")
	case f.packets < 1 || f.packets > 10000:
		return usagef("check: --packets must be 1-10000")
	case f.timeout < 100*time.Millisecond:
		return usagef("check: --timeout must be at least 100ms")
	}
	return nil
}

// probeConfig turns the flags into the prober's configuration, and says
// where the credentials come from.
func (f *checkFlags) probeConfig(env []string) (probe.Config, string, error) {
	cfg := probe.Config{TTL: f.ttl, Insecure: f.insecure, Packets: f.packets, Timeout: f.timeout}
	if f.caFile != "" {
		pem, err := os.ReadFile(f.caFile)
		if err != nil {
			return cfg, "", usagef("check: --ca: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, "", usagef("check: --ca %s holds no PEM certificate", f.caFile)
		}
	}
	for _, u := range f.urls {
		t, err := probe.ParseURL(u)
		if err != nil {
			return cfg, "", usagef("check: %v", err)
		}
		t.Username, t.Password = f.username, f.password
		cfg.Targets = append(cfg.Targets, t)
	}
	switch {
	case f.secret != "":
		cfg.Mint = probe.SecretMinter([]byte(f.secret), f.kid, f.user, nil)
		return cfg, "minted from the shared secret", nil
	case f.cfgPath != "" && len(cfg.Targets) > 0:
		m, err := keyringMinter(f.cfgPath, f.user, env)
		if err != nil {
			return cfg, "", err
		}
		cfg.Mint = m
		return cfg, "minted from the keyring of " + f.cfgPath, nil
	case f.username != "":
		return cfg, "given username and password", nil
	}
	return cfg, "", nil
}

// matrixRTC is what to check of the MatrixRTC stack: nil without --config
// or with matrixrtc off.
func (f *checkFlags) matrixRTC(roots *x509.CertPool, env []string) (*probe.MatrixRTC, error) {
	if f.cfgPath == "" {
		return nil, nil
	}
	cfg, _, err := loadConfig(f.cfgPath, env)
	if err != nil || !cfg.MatrixRTC.Enabled {
		return nil, err
	}
	m, err := matrixRTCChecks(cfg, roots, f.insecure, f.timeout)
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// fetchICEServers asks icebox's /calls/ice_servers what it gives clients.
func (f *checkFlags) fetchICEServers(ctx context.Context, roots *x509.CertPool) (*probe.ICEServers, error) {
	hc := &http.Client{Timeout: f.timeout, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, InsecureSkipVerify: f.insecure}, //nolint:gosec // --insecure asks for it
	}}
	fctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	ice, err := probe.FetchICEServers(fctx, hc, f.iceURL, f.token, time.Now)
	if err != nil {
		return nil, fmt.Errorf("check: %w", err)
	}
	return ice, nil
}

// withICECredentials gives each target the credentials the API handed out
// for a TURN server of the same host.
func withICECredentials(targets, ice []probe.Target) []probe.Target {
	for i, t := range targets {
		for _, it := range ice {
			if it.Host == t.Host && it.Username != "" {
				targets[i].Username, targets[i].Password = it.Username, it.Password
				break
			}
		}
	}
	return targets
}

// keyringMinter mints with the active secret of a configuration's keyring.
func keyringMinter(path, user string, env []string) (probe.Minter, error) {
	cfg, _, err := loadConfig(path, env)
	if err != nil {
		return nil, err
	}
	kr, err := keystore.Read(cfg)
	if err != nil {
		return nil, usageError{err}
	}
	return func(ttl time.Duration) (string, string, time.Time, error) {
		c, err := kr.Mint(credentials.Subject{User: user}, ttl)
		return c.Username, c.Password, c.Expires, err
	}, nil
}

// printReport writes the human table.
func printReport(w io.Writer, rep *probe.Report) error {
	var b strings.Builder
	for _, warn := range rep.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", warn)
	}
	passed := 0
	for _, r := range rep.Results {
		if r.OK() {
			passed++
		}
		fmt.Fprintf(&b, "\n%s  (%s", r.URL, r.Transport)
		if r.Server != "" {
			fmt.Fprintf(&b, ", server %s", r.Server)
		}
		if r.Username != "" {
			fmt.Fprintf(&b, ", username %s", r.Username)
		}
		b.WriteString(")\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  STEP\tSTATUS\tTIME\tDETAIL")
		for _, s := range r.Steps {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Name, s.Status, fmtDur(s.Duration), s.Detail)
		}
		_ = tw.Flush()
		for _, warn := range r.Warnings {
			fmt.Fprintf(&b, "  warning: %s\n", warn)
		}
		if r.OK() {
			b.WriteString("  verdict: ok\n")
			continue
		}
		fmt.Fprintf(&b, "  verdict: %s: %s\n", r.Verdict, r.Message)
		if r.Hint != "" {
			fmt.Fprintf(&b, "  fix: %s\n", r.Hint)
		}
	}
	status := "PASS"
	if !rep.OK {
		status = "FAIL"
	}
	fmt.Fprintf(&b, "\n%s: %d of %d passed", status, passed, len(rep.Results))
	if rep.Source != "" {
		fmt.Fprintf(&b, " (credentials %s)", rep.Source)
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}
