package main

import (
	"net/url"
	"strings"
)

// urlFlagHelp is the --url flag's help, the same for every command that
// talks to a running icebox.
const urlFlagHelp = "base URL of icebox's HTTP API, e.g. http://127.0.0.1:8080 or https://icebox.example.org/prefix " +
	"(default: $ICEBOX_URL, else http:// and ICEBOX_HTTP_LISTEN or 127.0.0.1:8080)"

// apiBase returns the base URL of a running icebox's API, without a final
// slash: flag (--url) if given, else ICEBOX_URL, else http:// and the local
// address of ICEBOX_HTTP_LISTEN or the default listen address. A URL
// without a scheme gets a sentence rather than url.Parse's error, since
// "127.0.0.1:8080" is the first thing people type.
func apiBase(cmd, flag string, env []string) (string, error) {
	base, from := flag, "--url"
	if base == "" {
		base, from = lookupEnv(env, "ICEBOX_URL", ""), "ICEBOX_URL"
	}
	if base == "" {
		return "http://" + localAddr(lookupEnv(env, "ICEBOX_HTTP_LISTEN", "127.0.0.1:8080")), nil
	}
	if !strings.Contains(base, "://") {
		return "", usagef("%s: %s %q has no scheme: use http://%s", cmd, from, base, base)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", usagef("%s: %s %q is not a URL: %v", cmd, from, base, unwrapURLError(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", usagef("%s: %s %q: the scheme must be http or https, not %q", cmd, from, base, u.Scheme)
	}
	if u.Host == "" {
		return "", usagef("%s: %s %q has no host", cmd, from, base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", usagef("%s: %s %q: a base URL takes no query or fragment", cmd, from, base)
	}
	return strings.TrimSuffix(base, "/"), nil
}

// unwrapURLError drops url.Error's repetition of the operation and the URL,
// which the caller's message already names.
func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
