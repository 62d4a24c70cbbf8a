package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/probe"
)

// errCheckFailed is check's error when a target did not pass; the report
// has said why.
var errCheckFailed = errors.New("check: not every server passed")

const checkUsage = `usage: icebox check [flags] URL...

Checks STUN/TURN servers (icebox, coturn, eturnal...) from this machine, as a
client: STUN binding, then for TURN URLs authenticate, allocate, create a
permission and relay a burst of packets relay to relay, with RTT and loss.
Exit 0 only if every URL passes, 1 if one fails, 2 on a bad command line.

URLs (RFC 7064/7065):  stun:HOST[:PORT]  turn:HOST[:PORT][?transport=udp|tcp]
                       turns:HOST[:PORT] (TLS)     default ports 3478 and 5349
Credentials: --secret (TURN REST shared secret), --config (icebox's keyring),
--username/--password, or --ice-servers-url with --token (checks the URLs and
credentials icebox's API gives clients).

flags:
`

// checkCmd is `icebox check`.
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	fs := newFlagSet("check", stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(stderr, checkUsage)
		fs.PrintDefaults()
	}
	secret := fs.String("secret", "", "TURN REST shared secret to mint credentials with (default: $ICEBOX_CHECK_SECRET)")
	secretFile := fs.String("secret-file", "", "file holding the shared secret")
	kid := fs.String("kid", "", "icebox key id to name in minted usernames (default: none, for a compat secret or coturn)")
	user := fs.String("user", probe.DefaultUser, "user in minted usernames")
	ttl := fs.Duration("ttl", probe.DefaultTTL, "lifetime of minted credentials")
	cfgPath := fs.String("config", "", "mint credentials from this icebox configuration's keyring (on the server itself)")
	username := fs.String("username", "", "TURN username (static or already minted)")
	password := fs.String("password", "", "TURN password (default: $ICEBOX_CHECK_PASSWORD)")
	iceURL := fs.String("ice-servers-url", "", "icebox's https://HOST/calls/ice_servers: check what it gives clients")
	token := fs.String("token", "", "bearer token for --ice-servers-url (default: $ICEBOX_CHECK_TOKEN)")
	caFile := fs.String("ca", "", "PEM file of CA certificates to verify TLS with (default: the system's)")
	insecure := fs.Bool("insecure", false, "report TLS certificate problems as warnings and go on")
	packets := fs.Int("packets", probe.DefaultPackets, "packets relayed per TURN URL")
	timeout := fs.Duration("timeout", probe.DefaultTimeout, "timeout of each step")
	jsonOut := fs.Bool("json", false, "print the report as JSON")

	// Flags and URLs may come in any order.
	var urls []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		if fs.NArg() == 0 {
			break
		}
		urls = append(urls, fs.Arg(0))
		rest = fs.Args()[1:]
	}

	if *secret == "" {
		*secret = lookupEnv(env, "ICEBOX_CHECK_SECRET", "")
	}
	if *password == "" {
		*password = lookupEnv(env, "ICEBOX_CHECK_PASSWORD", "")
	}
	if *token == "" {
		*token = lookupEnv(env, "ICEBOX_CHECK_TOKEN", "")
	}
	if *secretFile != "" {
		if *secret != "" {
			return usagef("check: --secret and --secret-file are exclusive")
		}
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return usagef("check: --secret-file: %v", err)
		}
		*secret = strings.TrimSpace(string(b))
		if *secret == "" {
			return usagef("check: --secret-file %s is empty", *secretFile)
		}
	}
	sources := 0
	for _, set := range []bool{*secret != "", *cfgPath != "", *username != "", *iceURL != ""} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return usagef("check: give one of --secret, --config, --username/--password, --ice-servers-url")
	}
	if (*username == "") != (*password == "") {
		return usagef("check: --username and --password go together")
	}
	if *iceURL == "" && len(urls) == 0 {
		fs.Usage()
		return usagef("check: no URL to check (give stun:/turn:/turns: URLs or --ice-servers-url)")
	}
	if *ttl < time.Second {
		return usagef("check: --ttl must be at least 1s")
	}
	if *packets < 1 || *packets > 10000 {
		return usagef("check: --packets must be 1-10000")
	}
	if *timeout < 100*time.Millisecond {
		return usagef("check: --timeout must be at least 100ms")
	}

	cfg := probe.Config{TTL: *ttl, Insecure: *insecure, Packets: *packets, Timeout: *timeout}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return usagef("check: --ca: %v", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return usagef("check: --ca %s holds no PEM certificate", *caFile)
		}
	}
	source := ""
	for _, u := range urls {
		t, err := probe.ParseURL(u)
		if err != nil {
			return usagef("check: %v", err)
		}
		t.Username, t.Password = *username, *password
		cfg.Targets = append(cfg.Targets, t)
	}
	switch {
	case *secret != "":
		cfg.Mint = probe.SecretMinter([]byte(*secret), *kid, *user, nil)
		source = "minted from the shared secret"
	case *cfgPath != "":
		m, err := keyringMinter(*cfgPath, *user, env)
		if err != nil {
			return err
		}
		cfg.Mint, source = m, "minted from the keyring of "+*cfgPath
	case *username != "":
		source = "given username and password"
	}

	var warnings []string
	if *iceURL != "" {
		if *token == "" {
			return usagef("check: --ice-servers-url needs --token (or $ICEBOX_CHECK_TOKEN)")
		}
		hc := &http.Client{Timeout: *timeout, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: cfg.RootCAs, InsecureSkipVerify: *insecure}, //nolint:gosec // --insecure asks for it
		}}
		fctx, cancel := context.WithTimeout(ctx, *timeout)
		ice, err := probe.FetchICEServers(fctx, hc, *iceURL, *token, time.Now)
		cancel()
		if err != nil {
			return fmt.Errorf("check: %w", err)
		}
		warnings = ice.Warnings
		if len(cfg.Targets) > 0 {
			// Only the given URLs, with the credentials the API handed out.
			cfg.Targets = withICECredentials(cfg.Targets, ice.Targets)
		} else {
			cfg.Targets = ice.Targets
		}
		source = "from " + *iceURL
	}

	rep := probe.Run(ctx, cfg)
	rep.Source = source
	rep.Warnings = append(warnings, rep.Warnings...)
	if *jsonOut {
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
