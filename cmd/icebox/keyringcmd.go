package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
)

// keyringCommand administers the keyring of a running icebox through its
// admin API: `icebox keyring list` and `icebox keyring rotate`.
func keyringCommand(a *cli) *cobra.Command {
	sub := func(name, short, long string) (*cobra.Command, *keyringOptions) {
		o := &keyringOptions{sub: name}
		c := &cobra.Command{
			Use:   name,
			Short: short,
			Long:  long,
			Args:  noArgs,
			RunE:  func(c *cobra.Command, _ []string) error { return keyring(c.Context(), *o, a.stdout, a.env) },
		}
		apiFlags(c.Flags(), &o.url, &o.token)
		return c, o
	}
	list, _ := sub("list", "show a running icebox's keyring (admin token)",
		"Shows a running icebox's keyring (admin token).")
	rotate, ro := sub("rotate", "make a new secret sign; the old ones retire once unused",
		"Makes a new secret sign; the old ones retire once unused (admin token).")
	rotate.Flags().BoolVar(&ro.compat, "compat", false, "the new secret also takes over the compat role (usernames without a kid); give it to your homeserver/coturn first")
	return group("keyring", "show or rotate a running icebox's keyring",
		`Shows a running icebox's keyring, or makes a new secret sign (the old ones
retire once unused), through its admin API. Both need the admin token.`, list, rotate)
}

// keyringOptions are keyring's flags.
type keyringOptions struct {
	sub, url, token string
	compat          bool
}

func keyring(ctx context.Context, o keyringOptions, stdout io.Writer, env []string) error {
	sub := o.sub
	base, err := apiBase("keyring "+sub, o.url, env)
	if err != nil {
		return err
	}
	token := o.token
	if token == "" {
		token = lookupEnv(env, "ICEBOX_ADMIN_TOKEN", "")
	}
	if token == "" {
		return usagef("keyring: an admin token is required (--token or ICEBOX_ADMIN_TOKEN)")
	}
	method, path := http.MethodGet, "/admin/keyring"
	if sub == "rotate" {
		method, path = http.MethodPost, "/admin/keyring/rotate"
		if o.compat {
			path += "?compat=true"
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return usagef("keyring: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
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
