package probe

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Transports a target is reached over.
const (
	UDP = "udp"
	TCP = "tcp"
	TLS = "tls"
)

// Default ports of RFC 7064 and RFC 7065.
const (
	defaultPort    = 3478
	defaultTLSPort = 5349
)

// Target is one server and transport to check, parsed from a stun:, stuns:,
// turn: or turns: URL.
type Target struct {
	URL       string // as given
	Scheme    string // stun, stuns, turn, turns
	Host      string // name or IP, without brackets
	Port      int
	Transport string // UDP, TCP or TLS
	// Username and Password authenticate TURN targets; Password is never
	// reported.
	Username string
	Password string
}

// TURN reports whether the target is a TURN server (else STUN only).
func (t Target) TURN() bool { return t.Scheme == "turn" || t.Scheme == "turns" }

// Addr is host:port.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// ParseURL parses a STUN or TURN URL (RFC 7064, RFC 7065):
//
//	stun:host[:port]   stuns:host[:port]
//	turn:host[:port][?transport=udp|tcp]   turns:host[:port][?transport=tcp]
//
// A turn: URL without transport is UDP; turns: is TLS over TCP. IPv6
// literals are bracketed. DTLS (turns: with transport=udp) is not supported.
func ParseURL(s string) (Target, error) {
	t := Target{URL: s}
	scheme, rest, ok := strings.Cut(s, ":")
	if !ok {
		return t, fmt.Errorf("%q: not a stun:, stuns:, turn: or turns: URL", s)
	}
	t.Scheme = strings.ToLower(scheme)
	switch t.Scheme {
	case "stun", "turn":
		t.Transport, t.Port = UDP, defaultPort
	case "stuns", "turns":
		t.Transport, t.Port = TLS, defaultTLSPort
	default:
		return t, fmt.Errorf("%q: scheme %q is not stun, stuns, turn or turns", s, scheme)
	}
	if strings.HasPrefix(rest, "//") {
		return t, fmt.Errorf("%q: no \"//\" after the scheme in a %s: URL", s, t.Scheme)
	}
	hostport, query, hasQuery := strings.Cut(rest, "?")
	if hasQuery {
		if t.Scheme == "stun" || t.Scheme == "stuns" {
			return t, fmt.Errorf("%q: a %s: URL takes no query", s, t.Scheme)
		}
		q, err := url.ParseQuery(query)
		if err != nil {
			return t, fmt.Errorf("%q: query: %w", s, err)
		}
		for k := range q {
			if k != "transport" {
				return t, fmt.Errorf("%q: unknown parameter %q (only transport)", s, k)
			}
		}
		switch tr := strings.ToLower(q.Get("transport")); {
		case tr == "udp" && t.Scheme == "turn":
			t.Transport = UDP
		case tr == "tcp" && t.Scheme == "turn":
			t.Transport = TCP
		case tr == "tcp" && t.Scheme == "turns":
			t.Transport = TLS
		case tr == "udp" && t.Scheme == "turns":
			return t, fmt.Errorf("%q: turns: over UDP (DTLS) is not supported", s)
		default:
			return t, fmt.Errorf("%q: transport %q is not udp or tcp", s, q.Get("transport"))
		}
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return t, fmt.Errorf("%q: %w", s, err)
	}
	t.Host = host
	if port != 0 {
		t.Port = port
	}
	return t, nil
}

// splitHostPort splits host[:port], where host may be a bracketed IPv6
// literal; port 0 means none was given.
func splitHostPort(s string) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("no host")
	}
	host, portStr := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("unclosed '[' in the host")
		}
		host, portStr = s[1:end], s[end+1:]
		if net.ParseIP(host) == nil || !strings.Contains(host, ":") {
			return "", 0, fmt.Errorf("%q is not an IPv6 address", host)
		}
		if portStr != "" {
			if portStr[0] != ':' {
				return "", 0, fmt.Errorf("unexpected %q after the host", portStr)
			}
			portStr = portStr[1:]
		} else {
			return host, 0, nil
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		if strings.Count(s, ":") > 1 {
			return "", 0, errors.New("an IPv6 address must be in brackets")
		}
		host, portStr = s[:i], s[i+1:]
	} else {
		return checkHost(s)
	}
	if _, _, err := checkHost(host); err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not 1-65535", portStr)
	}
	return host, port, nil
}

func checkHost(h string) (string, int, error) {
	if h == "" {
		return "", 0, errors.New("no host")
	}
	if strings.ContainsAny(h, "/@ \t[]") {
		return "", 0, fmt.Errorf("%q is not a host name or address", h)
	}
	return h, 0, nil
}
