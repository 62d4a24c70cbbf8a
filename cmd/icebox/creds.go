package main

import (
	"encoding/json"
	"io"
	"time"

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

// credsCmd mints a credential from the configured keyring, as the HTTP API
// would, for scripts and for testing a deployment by hand.
func credsCmd(args []string, stdout, stderr io.Writer, env []string) error {
	fs := newFlagSet("creds", "Mints a TURN credential from the configured keyring and prints it as JSON.", stdout, stderr)
	path := fs.String("config", "", "configuration file (default "+defaultConfigPath+" if it exists)")
	user := fs.String("user", "icebox-cli", "user the credential is for")
	call := fs.String("call", "", "call ID, for a per-call credential")
	ttl := fs.Duration("ttl", 0, "lifetime (default: credentials.ttl)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, _, err := loadConfig(*path, env)
	if err != nil {
		return err
	}
	if *ttl == 0 {
		*ttl = cfg.Credentials.TTL
	}
	if *ttl < time.Second {
		return usagef("creds: --ttl must be at least 1s")
	}
	kr, err := keystore.Read(cfg)
	if err != nil {
		return usageError{err}
	}
	cred, err := kr.Mint(credentials.Subject{User: *user, CallID: *call}, *ttl)
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
