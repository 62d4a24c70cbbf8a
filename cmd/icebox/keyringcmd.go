package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

const keyringUsage = `usage:
  icebox keyring list [--url URL] [--token T]
  icebox keyring rotate [--compat] [--url URL] [--token T]

list shows a running icebox's keyring; rotate makes a new secret sign (the
old ones retire once unused). Both need the admin token.
Run "icebox keyring <subcommand> -h" for its flags.
`

var keyringSynopsis = map[string]string{
	"list":   "Shows a running icebox's keyring (admin token).",
	"rotate": "Makes a new secret sign; the old ones retire once unused (admin token).",
}

// keyringCmd administers the keyring of a running icebox through its admin
// API: `icebox keyring list` and `icebox keyring rotate`.
func keyringCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		_, err := io.WriteString(stdout, keyringUsage)
		return err
	}
	if len(args) == 0 || (args[0] != "list" && args[0] != "rotate") {
		_, _ = io.WriteString(stderr, keyringUsage)
		return usagef("keyring: want a subcommand: list | rotate")
	}
	sub := args[0]
	fs := newFlagSet("keyring "+sub, keyringSynopsis[sub], stdout, stderr)
	urlFlag := fs.String("url", "", urlFlagHelp)
	token := fs.String("token", "", "admin bearer token (default: $ICEBOX_ADMIN_TOKEN)")
	compat := fs.Bool("compat", false, "rotate: the new secret also takes over the compat role (usernames without a kid); give it to your homeserver/coturn first")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	base, err := apiBase("keyring "+sub, *urlFlag, env)
	if err != nil {
		return err
	}
	if *token == "" {
		*token = lookupEnv(env, "ICEBOX_ADMIN_TOKEN", "")
	}
	if *token == "" {
		return usagef("keyring: an admin token is required (--token or ICEBOX_ADMIN_TOKEN)")
	}
	method, path := http.MethodGet, "/admin/keyring"
	if sub == "rotate" {
		method, path = http.MethodPost, "/admin/keyring/rotate"
		if *compat {
			path += "?compat=true"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return usagef("keyring: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+*token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("keyring %s: %w", sub, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("keyring %s: %w", sub, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("keyring %s: %s: %s", sub, e.Error.Code, e.Error.Message)
		}
		return fmt.Errorf("keyring %s: %s", sub, resp.Status)
	}
	_, err = stdout.Write(body)
	return err
}
