package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestURLWithoutScheme: each command that talks to a running icebox says
// what to type when --url (or ICEBOX_URL) has no scheme, instead of Go's
// URL parser error, and exits 2.
func TestURLWithoutScheme(t *testing.T) {
	sig := newSignals(context.Background())
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"health", "--url", "127.0.0.1:8080"}, nil, `health: --url "127.0.0.1:8080" has no scheme: use http://127.0.0.1:8080`},
		{[]string{"keyring", "list", "--url", "127.0.0.1:8080", "--token", "t"}, nil, `keyring list: --url "127.0.0.1:8080" has no scheme: use http://127.0.0.1:8080`},
		{[]string{"keyring", "rotate", "--url", "localhost:8080", "--token", "t"}, nil, `--url "localhost:8080" has no scheme: use http://localhost:8080`},
		{[]string{"sessions", "list", "--url", "[::1]:8080", "--token", "t"}, nil, `sessions list: --url "[::1]:8080" has no scheme: use http://[::1]:8080`},
		{[]string{"sessions", "kill", "a1", "--url", "icebox.example.org", "--token", "t"}, nil, `--url "icebox.example.org" has no scheme: use http://icebox.example.org`},
		{[]string{"sessions", "bandwidth", "alice", "--token", "t"}, []string{"ICEBOX_URL=127.0.0.1:9"}, `ICEBOX_URL "127.0.0.1:9" has no scheme: use http://127.0.0.1:9`},
		{[]string{"health", "--url", "ftp://127.0.0.1:8080"}, nil, `the scheme must be http or https, not "ftp"`},
		{[]string{"health", "--url", "http://"}, nil, `has no host`},
		{[]string{"health", "--url", "http://127.0.0.1:8080/?x=1"}, nil, `a base URL takes no query or fragment`},
		{[]string{"check", "--ice-servers-url", "127.0.0.1:8080/calls/ice_servers", "--token", "t"}, nil, `--ice-servers-url "127.0.0.1:8080/calls/ice_servers" has no scheme: use https://127.0.0.1:8080/calls/ice_servers`},
	} {
		var stdout, stderr bytes.Buffer
		err := run(sig, tc.args, &stdout, &stderr, tc.env)
		if code := exitCode(err); code != exitConfig || err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: exit %d, error %v; want exit 2 and %q", tc.args, code, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "first path segment") || strings.Contains(err.Error(), "parse ") {
			t.Errorf("%v: Go's parser error leaks: %v", tc.args, err)
		}
	}
}

// TestURLSameBase: --url is the API's base URL for every command, with or
// without a final slash and under a path prefix (a reverse proxy); health
// asks base/readyz (and still takes a full readiness URL), keyring
// base/admin/keyring, sessions base/admin/allocations. ICEBOX_URL is the
// default of all of them. A real HTTP server on loopback records the paths.
func TestURLSameBase(t *testing.T) {
	// paths is written by the server's goroutine before the response the
	// command waits for, and read after the command returns.
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.Method+" "+r.URL.Path)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasSuffix(r.URL.Path, "/readyz"):
			_, _ = w.Write([]byte(`{"status":"ready"}`))
		case strings.HasSuffix(r.URL.Path, "/admin/allocations"):
			_, _ = w.Write([]byte(`{"allocations":[]}`))
		default:
			_, _ = w.Write([]byte(`{}`))
		}
	}))
	t.Cleanup(srv.Close)
	sig := newSignals(context.Background())
	for _, base := range []string{srv.URL, srv.URL + "/", srv.URL + "/prefix"} {
		prefix := strings.TrimSuffix(strings.TrimPrefix(base, srv.URL), "/")
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"health", "--url", base}, "GET " + prefix + "/readyz"},
			{[]string{"keyring", "list", "--url", base, "--token", "t"}, "GET " + prefix + "/admin/keyring"},
			{[]string{"keyring", "rotate", "--url", base, "--token", "t"}, "POST " + prefix + "/admin/keyring/rotate"},
			{[]string{"sessions", "list", "--url", base, "--token", "t"}, "GET " + prefix + "/admin/allocations"},
		} {
			paths = nil
			var stdout, stderr bytes.Buffer
			if err := run(sig, tc.args, &stdout, &stderr, nil); err != nil {
				t.Errorf("%v: %v (%s)", tc.args, err, stderr.String())
				continue
			}
			if len(paths) != 1 || paths[0] != tc.want {
				t.Errorf("%v: requests %v, want [%s]", tc.args, paths, tc.want)
			}
			// The same through ICEBOX_URL.
			args := []string{}
			for i := 0; i < len(tc.args); i++ {
				if tc.args[i] == "--url" {
					i++
					continue
				}
				args = append(args, tc.args[i])
			}
			paths = nil
			if err := run(sig, args, &stdout, &stderr, []string{"ICEBOX_URL=" + base}); err != nil {
				t.Errorf("%v with ICEBOX_URL: %v", args, err)
				continue
			}
			if len(paths) != 1 || paths[0] != tc.want {
				t.Errorf("%v with ICEBOX_URL=%s: requests %v, want [%s]", args, base, paths, tc.want)
			}
		}
	}
	// A full readiness URL, as --url meant for health before.
	paths = nil
	var stdout, stderr bytes.Buffer
	if err := run(sig, []string{"health", "--url", srv.URL + "/readyz"}, &stdout, &stderr, nil); err != nil || len(paths) != 1 || paths[0] != "GET /readyz" {
		t.Errorf("health --url .../readyz: %v, requests %v", err, paths)
	}
}
