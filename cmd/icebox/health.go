package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// healthCommand asks a running icebox whether it is ready: exit 0 if
// /readyz answers 200, 1 otherwise. It is the Docker HEALTHCHECK, so it
// needs no shell or curl in the image.
func healthCommand(a *cli) *cobra.Command {
	var o healthOptions
	c := &cobra.Command{
		Use:   "health",
		Short: "exit 0 if a running icebox is ready (Docker HEALTHCHECK)",
		Long: `Exits 0 if a running icebox is ready (GET /readyz answers 200), 1 otherwise:
the Docker HEALTHCHECK, which needs no shell or curl in the image.`,
		Example: "  icebox health --insecure --url https://127.0.0.1:8080",
		Args:    noArgs,
		RunE:    func(c *cobra.Command, _ []string) error { return health(c.Context(), o, a.stdout, a.env) },
	}
	c.Flags().StringVar(&o.url, "url", "", urlFlagHelp+"; /readyz is asked (a URL ending in /readyz is taken as it is)")
	c.Flags().DurationVar(&o.timeout, "timeout", 3*time.Second, "give up after this long")
	c.Flags().BoolVar(&o.insecure, "insecure", false, "with an https URL, do not verify the certificate (a probe of the local process)")
	return c
}

// healthOptions are health's flags.
type healthOptions struct {
	url      string
	timeout  time.Duration
	insecure bool
}

func health(ctx context.Context, o healthOptions, stdout io.Writer, env []string) error {
	base, err := apiBase("health", o.url, env)
	if err != nil {
		return err
	}
	// --url is the API's base URL, as for every command; a full readiness
	// URL, which --url meant before, still works.
	readyURL := base
	if !strings.HasSuffix(readyURL, "/readyz") {
		readyURL += "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
	if err != nil {
		return usagef("health: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: o.insecure}, //nolint:gosec // opt-in, for probing our own loopback listener
	}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096)) // best effort: the status decides
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health: %s: %s %s", readyURL, resp.Status, body)
	}
	_, err = fmt.Fprintf(stdout, "ready\n")
	return err
}

// localAddr turns a listen address into one to connect to: a wildcard
// host becomes loopback.
func localAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

func lookupEnv(env []string, key, def string) string {
	for _, kv := range env {
		if k, v, ok := cut(kv); ok && k == key && v != "" {
			return v
		}
	}
	return def
}
