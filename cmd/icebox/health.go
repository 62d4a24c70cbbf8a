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
)

// healthCmd asks a running icebox whether it is ready: exit 0 if /readyz
// answers 200, 1 otherwise. It is the Docker HEALTHCHECK, so it needs no
// shell or curl in the image.
func healthCmd(ctx context.Context, args []string, stdout, stderr io.Writer, env []string) error {
	fs := newFlagSet("health", "Exits 0 if a running icebox is ready (GET /readyz answers 200), 1 otherwise.", stdout, stderr)
	urlFlag := fs.String("url", "", urlFlagHelp+"; /readyz is asked (a URL ending in /readyz is taken as it is)")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	insecure := fs.Bool("insecure", false, "with an https URL, do not verify the certificate (a probe of the local process)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base, err := apiBase("health", *urlFlag, env)
	if err != nil {
		return err
	}
	// --url is the API's base URL, as for every command; a full readiness
	// URL, which --url meant before, still works.
	readyURL := base
	if !strings.HasSuffix(readyURL, "/readyz") {
		readyURL += "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, readyURL, nil)
	if err != nil {
		return usagef("health: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: *insecure}, //nolint:gosec // opt-in, for probing our own loopback listener
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
