package main

import (
	"encoding/json"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/credentials/keystore"
	"github.com/icebox-voip/icebox/turnserver"
	"github.com/icebox-voip/icebox/turnserver/relayplan"
)

// credsOutput is what `icebox creds` prints.
type credsOutput struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

// credsCommand mints a credential from the configured keyring, as the HTTP
// API would, for scripts and for testing a deployment by hand.
func credsCommand(a *cli) *cobra.Command {
	var o credsOptions
	c := &cobra.Command{
		Use:   "creds",
		Short: "mint TURN credentials from the configured keyring",
		Long: `Mints a TURN credential from the configured keyring, as the HTTP API would,
and prints it as JSON: {"username", "password", "ttl", "uris"}.`,
		Example: "  icebox creds --config /etc/icebox/icebox.yaml --user test --ttl 1h",
		Args:    noArgs,
		RunE:    func(*cobra.Command, []string) error { return creds(o, a.stdout, a.env) },
	}
	configFlag(c.Flags(), &o.path, "")
	c.Flags().StringVar(&o.user, "user", "icebox-cli", "user the credential is for")
	c.Flags().StringVar(&o.call, "call", "", "call ID, for a per-call credential")
	c.Flags().DurationVar(&o.ttl, "ttl", 0, "lifetime (default: credentials.ttl)")
	return c
}

// credsOptions are creds' flags.
type credsOptions struct {
	path, user, call string
	ttl              time.Duration
}

func creds(o credsOptions, stdout io.Writer, env []string) error {
	cfg, _, err := loadConfig(o.path, env)
	if err != nil {
		return err
	}
	ttl := o.ttl
	if ttl == 0 {
		ttl = cfg.Credentials.TTL
	}
	if ttl < time.Second {
		return usagef("creds: --ttl must be at least 1s")
	}
	kr, err := keystore.Read(cfg)
	if err != nil {
		return usageError{err}
	}
	cred, err := kr.Mint(credentials.Subject{User: o.user, CallID: o.call}, ttl)
	if err != nil {
		return usageError{err}
	}
	local, err := turnserver.ListHostAddrs()
	if err != nil {
		return err
	}
	plan, err := relayplan.New(cfg.TURN.Relay.BindIP, cfg.TURN.Relay.PublicIP, local)
	if err != nil {
		return usageError{err}
	}
	l := cfg.TURN.Listen
	host := relayplan.ICEHost(cfg.ICEServers.Hostname, cfg.TURN.Relay.PublicIP, plan, relayplan.First(l.UDP, l.TCP, l.TLS))
	_, turnURIs := relayplan.ICEURIs(host, l.UDP, l.TCP, l.TLS)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(credsOutput{
		Username: cred.Username,
		Password: cred.Password,
		TTL:      int64(cred.TTL / time.Second),
		URIs:     turnURIs,
	})
}
