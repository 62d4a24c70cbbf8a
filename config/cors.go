package config

import (
	"net/url"
	"strings"
)

// CORS lets browser pages of other origins use the API: the CORS headers
// (preflight answered without a token) and the WebSocket's Origin check.
//
// "*" allows every origin. The API authenticates with bearer tokens in a
// header (or the WebSocket's query/subprotocol), never with cookies, so
// Access-Control-Allow-Credentials is never sent and "*" cannot lend a
// visitor's ambient credentials to a foreign page; it still lets any page
// that holds a token call the API.
type CORS struct {
	// AllowedOrigins are exact origins, "scheme://host[:port]" (no path,
	// no trailing slash), or ["*"] alone. Default: none (same-origin only)
	AllowedOrigins []string `yaml:"allowed_origins"`
}

// cors checks http.cors: each origin is "*" alone or an http(s) origin.
func (v *validator) cors(c *CORS) {
	const path = "http.cors.allowed_origins"
	for i, o := range c.AllowedOrigins {
		if o == "*" {
			if len(c.AllowedOrigins) > 1 {
				v.add(path, `"*" allows every origin and must be the only entry`)
			}
			continue
		}
		if msg := originProblem(o); msg != "" {
			v.add(path, "[%d] %q: %s", i, o, msg)
		}
	}
}

// originProblem says why o is not a browser origin ("" if it is one).
func originProblem(o string) string {
	u, err := url.Parse(o)
	switch {
	case err != nil || u.Host == "":
		return `not an origin: want scheme://host[:port], e.g. "https://app.example.org"`
	case u.Scheme != "http" && u.Scheme != "https":
		return "scheme must be http or https"
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#"):
		return `an origin has no path, query or user (drop the trailing "/" too)`
	case o != strings.ToLower(o):
		return "browsers send origins in lower case; write it so"
	case strings.Contains(u.Hostname(), "*"):
		return `wildcards are not supported: list each origin, or "*" alone`
	}
	return ""
}
