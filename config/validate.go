package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Limits that Validate enforces, with the reason for each.
const (
	// maxUDPSockets bounds turn.udp_sockets: more sockets than this per
	// address buys nothing on any machine icebox targets, and each holds
	// socket_buffer bytes of kernel memory twice.
	maxUDPSockets = 64
	// maxRecvBatch bounds turn.recv_batch: a relay loop holds 256
	// datagrams between sends (turnserver's poolSlots).
	maxRecvBatch = 256
	// minDuration is the shortest allocation lifetime or credential TTL: a
	// TURN client refreshes an allocation every few minutes, so anything
	// shorter only breaks calls.
	minDuration = time.Minute
	// maxTTL is the longest credential TTL (30 days): credentials are
	// bearer tokens; a longer life is a leaked credential that keeps working.
	maxTTL = 720 * time.Hour
	// minSecretLen is the shortest secret accepted, in bytes: HMAC-SHA1 keys
	// shorter than this are guessable offline from one captured credential.
	minSecretLen = 16
	// minRelayPort keeps the relay out of the well-known ports.
	minRelayPort = 1024
	// minJWTSecretLen is the shortest JWT secret, in bytes: RFC 7518 §3.2
	// requires an HS256 key at least as long as the hash output (256 bits).
	minJWTSecretLen = 32
	// maxMatrixTokenCache bounds how long a revoked Matrix access token
	// keeps working; maxMatrixTokenNegativeCache how long a token that the
	// homeserver refused (perhaps during a hiccup) stays refused.
	maxMatrixTokenCache         = 10 * time.Minute
	maxMatrixTokenNegativeCache = time.Minute
	// minInviteLifetime and maxInviteLifetime bound invite lifetimes: under
	// 5s a callee's device cannot wake up and ring; a phone that rings for
	// more than 10 minutes is a call nobody is going to answer.
	minInviteLifetime = 5 * time.Second
	maxInviteLifetime = 10 * time.Minute
	// minBodyBytes and maxBodyBytes bound http.max_body_bytes: the smallest
	// SDP offer is a few hundred bytes, and a body above 64 MiB is memory
	// an unauthenticated client can make the server hold.
	minBodyBytes = 1 << 10
	maxBodyBytes = 64 << 20
	// maxInviteWait bounds matrix.invite_wait: POST /calls/initiate holds
	// the caller's request that long at most, and a client times out an
	// API call long before a homeserver that slow would answer.
	maxInviteWait = 10 * time.Second
	// maxUserIDLen is the longest Matrix user ID, in bytes (the spec's
	// limit, "@" and server name included).
	maxUserIDLen = 255
)

var (
	kidPattern    = regexp.MustCompile(`^[a-z0-9]{1,16}$`)
	sha256Pattern = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	// userIDPattern is a Matrix user ID, "@localpart:server_name". The
	// localpart takes the spec's historical grammar (any printable ASCII
	// but ":", upper case included), since servers still hold such users;
	// the server name is a DNS name, an IPv4 address or a bracketed IPv6
	// literal, with an optional port.
	userIDPattern = regexp.MustCompile(`^@[!-9;-~]+:(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]+)(:[0-9]{1,5})?$`)
)

// emptySHA256 is the SHA-256 of no bytes: what `echo -n | sha256sum` prints
// when the token variable was empty.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// exampleSHA256 is the SHA-256 of "test", the example file's static token.
const exampleSHA256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// Validate reports every problem with c, joined (errors.Join), one per line
// as "field.path: problem". It does not change c. It reads the secret and
// TLS files the config names, to check that they exist, are readable and,
// for secrets, are private. Every error it returns matches ErrInvalid.
func (c *Config) Validate() error {
	v := &validator{}
	if c.DrainTimeout < 0 || c.DrainTimeout > 10*time.Minute {
		v.add("drain_timeout", "must be between 0s and 10m")
	}
	if c.StateDir == "" {
		v.add("state_dir", "must not be empty")
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "auto", "json", "console")
	listenPorts := v.turn(&c.TURN)
	if tf := c.HTTP.TLS; !tf.ACME && (tf.CertFile != "" || tf.KeyFile != "") {
		v.requiredFile("http.tls.cert_file", tf.CertFile, "http.tls")
		v.requiredFile("http.tls.key_file", tf.KeyFile, "http.tls")
	}
	if port, ok := v.hostPort("http.listen", c.HTTP.Listen, false); ok {
		listenPorts = append(listenPorts, portUse{"http.listen", port})
	}
	if n := c.HTTP.MaxBodyBytes; n < minBodyBytes || n > maxBodyBytes {
		v.add("http.max_body_bytes", "must be between %d (1 KiB) and %d (64 MiB) (got %d)", minBodyBytes, maxBodyBytes, n)
	}
	v.cors(&c.HTTP.CORS)
	v.proxyProtocol("http.proxy_protocol", c.HTTP.ProxyProtocol, c.HTTP.Listen != "", "http.listen is empty")
	v.relayOverlap(&c.TURN.Relay, listenPorts)
	v.credentials(&c.Credentials)
	v.iceServers(&c.ICEServers)
	v.auth(&c.Auth)
	v.calls(&c.Calls)
	v.matrix(&c.Matrix)
	v.matrixRTC(&c.MatrixRTC)
	v.matrixRTCDiscovery(&c.MatrixRTC, &c.Matrix)
	v.gateway(c)
	v.liveKitTURN(c)
	v.liveKitManaged(c, listenPorts)
	v.acme(c)
	v.bandwidth(&c.TURN.Quotas)
	v.store(&c.Store)
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, invalid(path+": "+fmt.Sprintf(format, args...)))
}

func (v *validator) oneOf(path, value string, allowed ...string) {
	if !slices.Contains(allowed, value) {
		v.add(path, "%q is not one of %s", value, strings.Join(allowed, ", "))
	}
}

// portUse is a port some listener uses, and the key it came from.
type portUse struct {
	path string
	port int
}

// turn checks the turn section and returns the ports of its listeners.
func (v *validator) turn(t *TURN) []portUse {
	if t.Realm == "" {
		v.add("turn.realm", "must not be empty")
	}
	var ports []portUse
	for _, l := range []struct {
		path  string
		addrs []string
	}{{"turn.listen.udp", t.Listen.UDP}, {"turn.listen.tcp", t.Listen.TCP}, {"turn.listen.tls", t.Listen.TLS}} {
		for i, addr := range l.addrs {
			path := fmt.Sprintf("%s[%d]", l.path, i)
			if port, ok := v.hostPort(path, addr, true); ok {
				ports = append(ports, portUse{path, port})
			}
		}
	}
	ports = append(ports, v.mux(t)...)
	if len(t.Listen.UDP)+len(t.Listen.TCP)+len(t.Listen.TLS)+len(t.Mux.Listen) == 0 {
		v.add("turn.listen", "no TURN listener: udp, tcp and tls are all empty")
	}
	if len(t.Listen.TLS) > 0 && !t.TLS.ACME {
		v.requiredFile("turn.tls.cert_file", t.TLS.CertFile, "turn.listen.tls")
		v.requiredFile("turn.tls.key_file", t.TLS.KeyFile, "turn.listen.tls")
	}
	if t.UDPSockets < 0 || t.UDPSockets > maxUDPSockets {
		v.add("turn.udp_sockets", "must be 0..%d (got %d); 0 means one per CPU", maxUDPSockets, t.UDPSockets)
	}
	if t.SocketBuffer < 0 {
		v.add("turn.socket_buffer", "must be >= 0 (got %d); 0 means the kernel's default", t.SocketBuffer)
	}
	if t.RecvBatch < 1 || t.RecvBatch > maxRecvBatch {
		v.add("turn.recv_batch", "must be 1..%d (got %d); 1 reads one datagram per system call", maxRecvBatch, t.RecvBatch)
	}
	switch t.KernelPath {
	case "off", "auto", "required":
	default:
		v.add("turn.kernel_path", "must be off, auto or required (got %q)", t.KernelPath)
	}
	switch t.KernelPathMode {
	case "auto", "xdp", "tc":
	default:
		v.add("turn.kernel_path_mode", "must be auto, xdp or tc (got %q)", t.KernelPathMode)
	}
	switch t.UDPGRO {
	case "off", "on", "auto":
	default:
		v.add("turn.udp_gro", "must be off, on or auto (got %q)", t.UDPGRO)
	}
	v.relay(&t.Relay)
	v.peers("turn.allowed_peers", t.AllowedPeers)
	v.peers("turn.denied_peers", t.DeniedPeers)
	if t.ErrorRate < 0 || math.IsNaN(t.ErrorRate) || math.IsInf(t.ErrorRate, 0) {
		v.add("turn.error_rate", "must be a finite number >= 0")
	}
	if t.ErrorRate > 0 && t.ErrorBurst < 1 {
		v.add("turn.error_burst", "must be >= 1 when turn.error_rate is set")
	}
	if t.BindingRate < 0 || math.IsNaN(t.BindingRate) || math.IsInf(t.BindingRate, 0) {
		v.add("turn.binding_rate", "must be a finite number >= 0")
	}
	if t.BindingRate > 0 && t.BindingBurst < 1 {
		v.add("turn.binding_burst", "must be >= 1 when turn.binding_rate is set")
	}
	if t.MaxAllocationDuration < minDuration {
		v.add("turn.max_allocation_duration", "must be at least 1m (got %s)", t.MaxAllocationDuration)
	}
	for _, q := range []struct {
		path string
		n    int
	}{{"turn.quotas.per_user", t.Quotas.PerUser}, {"turn.quotas.per_call", t.Quotas.PerCall}, {"turn.quotas.total", t.Quotas.Total}} {
		if q.n <= 0 {
			v.add(q.path, "must be > 0 (got %d)", q.n)
		}
	}
	return ports
}

// hostPort checks a listen address, "host:port" with port 1..65535 and a
// host that is empty, an IP, or (unless ipOnly) a hostname.
func (v *validator) hostPort(path, addr string, ipOnly bool) (int, bool) {
	if addr == "" {
		v.add(path, "must not be empty (host:port)")
		return 0, false
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		if strings.Count(addr, ":") > 1 && !strings.HasPrefix(addr, "[") {
			v.add(path, "%q is not host:port (write IPv6 as [::1]:3478)", addr)
		} else {
			v.add(path, "%q is not host:port", addr)
		}
		return 0, false
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port > 65535 {
		v.add(path, "bad port %q", portText)
		return 0, false
	}
	if host == "" {
		return port, true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return port, true
	}
	if ipOnly {
		v.add(path, "host %q is not an IP address", host)
		return 0, false
	}
	if !validHostname(host) {
		v.add(path, "host %q is not an IP address or hostname", host)
		return 0, false
	}
	return port, true
}

func (v *validator) relay(r *Relay) {
	bind, err := netip.ParseAddr(r.BindIP)
	switch {
	case r.BindIP == "":
		v.add("turn.relay.bind_ip", "must not be empty (0.0.0.0 binds every IPv4 address)")
	case err != nil:
		v.add("turn.relay.bind_ip", "invalid IP %q", r.BindIP)
	}
	if r.PublicIP != "" {
		pub, perr := netip.ParseAddr(r.PublicIP)
		switch {
		case perr != nil:
			v.add("turn.relay.public_ip", "invalid IP %q", r.PublicIP)
		case pub.IsUnspecified():
			v.add("turn.relay.public_ip", "%s is unspecified; leave it empty or give the address clients reach", pub)
		case isDocumentationIP(pub):
			v.add("turn.relay.public_ip", "%s is a documentation address (the example's placeholder); give this host's public IP", pub)
		case err == nil && bind.Unmap().Is4() && !pub.Unmap().Is4():
			v.add("turn.relay.public_ip", "IPv6 address %s, but turn.relay.bind_ip %s is IPv4", pub, bind)
		case err == nil && !bind.Unmap().Is4() && !bind.IsUnspecified() && pub.Unmap().Is4():
			v.add("turn.relay.public_ip", "IPv4 address %s, but turn.relay.bind_ip %s is IPv6", pub, bind)
		}
	}
	minOK := v.relayPort("turn.relay.min_port", r.MinPort)
	maxOK := v.relayPort("turn.relay.max_port", r.MaxPort)
	if minOK && maxOK && r.MinPort > r.MaxPort {
		v.add("turn.relay.min_port", "must be <= turn.relay.max_port (%d > %d)", r.MinPort, r.MaxPort)
	}
}

func (v *validator) relayPort(path string, port int) bool {
	if port < minRelayPort || port > 65535 {
		v.add(path, "%d is outside %d..65535", port, minRelayPort)
		return false
	}
	return true
}

// relayOverlap refuses a relay port range that contains a listen port: a
// relay socket could take the port before the listener binds it, and the
// peer policy could no longer tell relay traffic from the server's own
// ports.
func (v *validator) relayOverlap(r *Relay, listeners []portUse) {
	if r.MinPort < minRelayPort || r.MaxPort > 65535 || r.MinPort > r.MaxPort {
		return // already reported
	}
	for _, l := range listeners {
		if l.port >= r.MinPort && l.port <= r.MaxPort {
			v.add("turn.relay.min_port..max_port", "range %d-%d contains port %d of %s", r.MinPort, r.MaxPort, l.port, l.path)
		}
	}
}

func (v *validator) peers(path string, list []string) {
	for i, s := range list {
		if _, err := ParsePeer(s); err != nil {
			v.add(fmt.Sprintf("%s[%d]", path, i), "%v", err)
		}
	}
}

// ParsePeer parses an entry of turn.allowed_peers or turn.denied_peers: a
// CIDR, or a bare IP taken as a single-address prefix. A CIDR with host bits
// set ("10.0.0.1/8") is refused, as it is usually a typo.
func ParsePeer(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("CIDR %q has host bits set (did you mean %q?)", s, m.String())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid IP or CIDR %q", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (v *validator) credentials(c *Credentials) {
	if c.TTL < minDuration || c.TTL > maxTTL {
		v.add("credentials.ttl", "must be between 1m and 720h (got %s)", c.TTL)
	}
	if len(c.Secrets) == 0 {
		v.add("credentials.secrets", "at least one secret is required")
	}
	kids := map[string]int{}
	compat := -1
	for i, s := range c.Secrets {
		path := fmt.Sprintf("credentials.secrets[%d]", i)
		switch j, dup := kids[s.KID]; {
		case s.KID == "":
			v.add(path+".kid", "must not be empty")
		case !kidPattern.MatchString(s.KID):
			v.add(path+".kid", "%q must be 1-16 characters of a-z and 0-9", s.KID)
		case dup:
			v.add(path+".kid", "duplicate %q (also credentials.secrets[%d].kid)", s.KID, j)
		default:
			kids[s.KID] = i
		}
		if s.Compat {
			if compat >= 0 {
				v.add(path+".compat", "only one secret may be compat (credentials.secrets[%d] already is)", compat)
			} else {
				compat = i
			}
		}
		switch {
		case s.Secret != "" && s.SecretFile != "":
			v.add(path, "secret and secret_file are both set; keep one")
		case s.Secret != "":
			v.secretValue(path+".secret", "is", []byte(s.Secret), minSecretLen)
		case s.SecretFile != "":
			v.secretFile(path+".secret_file", s.SecretFile, minSecretLen)
		}
	}
}

// secretValue checks a secret's bytes; subject says where they came from
// ("is", or "/etc/icebox/secret holds"), minLen the fewest bytes it must
// have. It never echoes them.
func (v *validator) secretValue(path, subject string, b []byte, minLen int) {
	switch {
	case isPlaceholder(string(b)):
		v.add(path, "%s the example's placeholder; set a real secret (e.g. openssl rand -hex 32)", subject)
	case len(b) < minLen:
		v.add(path, "%s %d bytes; use at least %d random bytes", subject, len(b), minLen)
	}
}

func (v *validator) auth(a *Auth) {
	hashes := map[string]int{}
	for i, t := range a.StaticTokens {
		path := fmt.Sprintf("auth.static_tokens[%d]", i)
		hash := strings.ToLower(t.SHA256)
		switch j, dup := hashes[hash]; {
		case !sha256Pattern.MatchString(t.SHA256):
			// Not echoed: a value that is not a hash may be the token itself.
			v.add(path+".sha256", "must be 64 hex characters (sha256sum of the token)")
		case hash == emptySHA256:
			v.add(path+".sha256", "is the SHA-256 of the empty string; hash the token itself (printf %%s \"$TOKEN\" | sha256sum)")
		case hash == exampleSHA256:
			v.add(path+".sha256", "is the example's placeholder (the SHA-256 of \"test\"); hash a random token")
		case dup:
			v.add(path+".sha256", "duplicate of auth.static_tokens[%d].sha256", j)
		default:
			hashes[hash] = i
		}
		switch {
		case t.User == "":
			v.add(path+".user", "must not be empty")
		case strings.ContainsFunc(t.User, unicode.IsControl):
			v.add(path+".user", "%q contains a control character", t.User)
		}
	}
	j := &a.JWT
	switch {
	case j.HS256Secret != "" && j.HS256SecretFile != "":
		v.add("auth.jwt", "hs256_secret and hs256_secret_file are both set; keep one")
	case j.HS256Secret != "":
		v.secretValue("auth.jwt.hs256_secret", "is", []byte(j.HS256Secret), minJWTSecretLen)
	case j.HS256SecretFile != "":
		v.secretFile("auth.jwt.hs256_secret_file", j.HS256SecretFile, minJWTSecretLen)
	}
	if j.MaxTTL < 0 {
		v.add("auth.jwt.max_ttl", "must be >= 0 (got %s); 0 means no limit", j.MaxTTL)
	}
	m := &a.MatrixTokens
	if m.Cache < 0 || m.Cache > maxMatrixTokenCache {
		v.add("auth.matrix_tokens.cache", "must be in 0..%s (got %s)", maxMatrixTokenCache, m.Cache)
	}
	if m.NegativeCache < 0 || m.NegativeCache > maxMatrixTokenNegativeCache {
		v.add("auth.matrix_tokens.negative_cache", "must be in 0..%s (got %s)", maxMatrixTokenNegativeCache, m.NegativeCache)
	}
}

func (v *validator) calls(c *Calls) {
	lifeOK := v.inviteLifetime("calls.invite_lifetime", c.InviteLifetime)
	maxOK := v.inviteLifetime("calls.max_invite_lifetime", c.MaxInviteLifetime)
	if lifeOK && maxOK && c.InviteLifetime > c.MaxInviteLifetime {
		v.add("calls.invite_lifetime", "must be <= calls.max_invite_lifetime (%s > %s)", c.InviteLifetime, c.MaxInviteLifetime)
	}
	// NaN fails "> 0"; +Inf would mean no limit at all (rate.Inf).
	if r := c.InitiateRate; !(r > 0) || math.IsInf(r, 1) {
		v.add("calls.initiate_rate", "must be a finite number > 0 (got %v)", r)
	}
	if c.InitiateBurst < 1 {
		v.add("calls.initiate_burst", "must be >= 1 (got %d)", c.InitiateBurst)
	}
	// Below a minute a call could vanish while its client still reads it;
	// above a year the file grows without a useful bound.
	if c.Retention < time.Minute || c.Retention > 8760*time.Hour {
		v.add("calls.retention", "must be between 1m and 8760h (got %s)", c.Retention)
	}
}

func (v *validator) inviteLifetime(path string, d time.Duration) bool {
	if d < minInviteLifetime || d > maxInviteLifetime {
		v.add(path, "must be between 5s and 10m (got %s)", d)
		return false
	}
	return true
}

// matrix checks the matrix section. A disabled bridge needs nothing, but
// the values that have defaults are still range-checked, so that turning
// it on later does not surface old mistakes.
func (v *validator) matrix(m *Matrix) {
	if m.VoIP.Version != "1" {
		v.add("matrix.voip.version", "%q is not supported; icebox speaks Matrix VoIP version \"1\"", m.VoIP.Version)
	}
	if m.InviteWait < 0 || m.InviteWait > maxInviteWait {
		v.add("matrix.invite_wait", "must be between 0s and 10s (got %s)", m.InviteWait)
	}
	switch m.CallProtocol {
	case CallProtocolLegacy, CallProtocolMatrixRTC, CallProtocolAuto:
	default:
		v.add("matrix.call_protocol", "%q is not one of legacy, matrixrtc, auto", m.CallProtocol)
	}
	if !m.Enabled {
		return
	}
	v.homeserverURL("matrix.homeserver_url", m.HomeserverURL)
	v.userID("matrix.service_user", m.ServiceUser)
	switch {
	case m.hasToken() && m.hasPassword():
		v.add("matrix", "%s and %s are both set; log in with an access token or a password, not both", m.tokenKey(), m.passwordKey())
	case m.hasToken():
		v.matrixToken(m)
	case m.hasPassword():
		v.matrixPassword(m)
	default:
		v.add("matrix.access_token", "required when matrix.enabled is true (or matrix.access_token_file, matrix.password, matrix.password_file): log the service user in as its own device")
	}
	if strings.ContainsFunc(m.DeviceID, isSpaceOrControl) {
		v.add("matrix.device_id", "%q contains a space or a control character", m.DeviceID)
	}
}

// matrixToken checks the access token login: one of access_token and
// access_token_file.
func (v *validator) matrixToken(m *Matrix) {
	switch {
	case m.AccessToken != "" && m.AccessTokenFile != "":
		v.add("matrix", "access_token and access_token_file are both set; keep one")
	case m.AccessToken != "":
		v.accessToken("matrix.access_token", "is", m.AccessToken)
	default:
		if b, ok := v.privateFile("matrix.access_token_file", m.AccessTokenFile); ok {
			v.accessToken("matrix.access_token_file", m.AccessTokenFile+" holds", string(bytes.TrimSpace(b)))
		}
	}
}

// matrixPassword checks the password login: one of password and
// password_file.
func (v *validator) matrixPassword(m *Matrix) {
	switch {
	case m.Password != "" && m.PasswordFile != "":
		v.add("matrix", "password and password_file are both set; keep one")
	case m.Password != "":
		v.password("matrix.password", "is", m.Password)
	default:
		if b, ok := v.privateFile("matrix.password_file", m.PasswordFile); ok {
			v.password("matrix.password_file", m.PasswordFile+" holds", string(bytes.TrimSpace(b)))
		}
	}
}

// tokenKey and passwordKey name the key a login of that kind is set by,
// for errors that must not show its value.
func (m Matrix) tokenKey() string {
	if m.AccessToken != "" {
		return "access_token"
	}
	return "access_token_file"
}

func (m Matrix) passwordKey() string {
	if m.Password != "" {
		return "password"
	}
	return "password_file"
}

// homeserverURL checks a homeserver's base URL: http or https, a host, and
// no path, query or credentials (the client appends /_matrix/... itself).
func (v *validator) homeserverURL(path, s string) {
	if s == "" {
		v.add(path, "required when matrix.enabled is true (e.g. https://matrix.your.domain)")
		return
	}
	u, err := url.Parse(s)
	switch {
	case err != nil && strings.Contains(s, "@"):
		// Unparsed, it cannot be redacted, and may hold a password.
		v.add(path, "is not a URL (not shown: it may hold credentials)")
		return
	case err != nil:
		v.add(path, "%q is not a URL", s)
		return
	}
	s = u.Redacted() // a password in the URL is not echoed
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		v.add(path, "%q must start with http:// or https://", s)
	case u.Host == "" || u.Hostname() == "":
		v.add(path, "%q has no host", s)
	case u.User != nil:
		v.add(path, "must not hold credentials; give the token in matrix.access_token_file or the password in matrix.password_file")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		v.add(path, "%q must be the base URL alone, without a path, query or fragment (e.g. https://matrix.your.domain)", s)
	case isExampleHost(u.Hostname()) || isPlaceholder(s):
		v.add(path, "%q is the example's placeholder; give your homeserver's URL", s)
	default:
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				v.add(path, "%q has a bad port %q", s, p)
			}
		}
	}
}

// userID checks a Matrix user ID (@localpart:server_name).
func (v *validator) userID(path, s string) {
	_, server, _ := strings.Cut(s, ":")
	host, hostOK := serverHost(server)
	switch {
	case s == "":
		v.add(path, "required when matrix.enabled is true (the bot's user ID, e.g. @icebox:your.domain)")
	case len(s) > maxUserIDLen:
		v.add(path, "is %d bytes; a Matrix user ID has at most %d", len(s), maxUserIDLen)
	case !userIDPattern.MatchString(s), !hostOK:
		v.add(path, "%q is not a Matrix user ID (@localpart:server_name, e.g. @icebox:your.domain)", s)
	case isExampleHost(host) || isPlaceholder(s):
		v.add(path, "%q is the example's placeholder; give the bot's user ID", s)
	}
}

// serverHost returns the host of a Matrix server name (host[:port]) and
// whether it is a DNS name, an IPv4 address or a bracketed IPv6 address.
func serverHost(server string) (string, bool) {
	if rest, ok := strings.CutPrefix(server, "["); ok {
		host, _, ok := strings.Cut(rest, "]")
		a, err := netip.ParseAddr(host)
		return host, ok && err == nil && a.Is6() && a.Zone() == ""
	}
	host, _, _ := strings.Cut(server, ":")
	return host, validHostname(host)
}

// accessToken checks a Matrix access token; subject says where it came
// from. It never echoes the token.
func (v *validator) accessToken(path, subject, tok string) {
	switch {
	case tok == "":
		v.add(path, "%s an empty token", subject)
	case isPlaceholder(tok) || strings.Contains(tok, "..."):
		v.add(path, "%s the example's placeholder; log the service user in and use its token", subject)
	case strings.ContainsFunc(tok, isSpaceOrControl):
		v.add(path, "%s a token with a space or control character in it", subject)
	}
}

// password checks the service user's password; subject says where it came
// from. It never echoes the password. Unlike a token, a password may hold
// any character, "..." included; only one that is nothing but dots reads as
// elided.
func (v *validator) password(path, subject, pw string) {
	switch {
	case pw == "":
		v.add(path, "%s an empty password", subject)
	case isPlaceholder(pw) || strings.Trim(pw, ".…") == "":
		v.add(path, "%s the example's placeholder; set the service user's password", subject)
	}
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

func (v *validator) iceServers(s *ICEServers) {
	if h := s.Hostname; h != "" {
		if a, err := netip.ParseAddr(h); err == nil {
			if a.IsUnspecified() {
				v.add("ice_servers.hostname", "%s is unspecified; give the address clients reach", a)
			}
		} else if !validHostname(h) {
			v.add("ice_servers.hostname", "%q must be a bare hostname or IP, without scheme or port", h)
		} else if isExampleHost(h) {
			v.add("ice_servers.hostname", "%q is the example's placeholder; give this server's name", h)
		}
	}
	for i, e := range s.External {
		path := fmt.Sprintf("ice_servers.external[%d]", i)
		if len(e.URLs) == 0 {
			v.add(path+".urls", "at least one URL is required")
		}
		needsAuth := false
		for j, u := range e.URLs {
			upath := fmt.Sprintf("%s.urls[%d]", path, j)
			scheme, rest, _ := strings.Cut(u, ":")
			switch strings.ToLower(scheme) {
			case "stun", "stuns":
			case "turn", "turns":
				needsAuth = true
			default:
				v.add(upath, "%q must start with stun:, stuns:, turn: or turns:", u)
				continue
			}
			hostport, _, _ := strings.Cut(rest, "?")
			host := hostport
			if h, _, err := net.SplitHostPort(hostport); err == nil {
				host = h
			}
			switch {
			case host == "" || strings.HasPrefix(host, "/"):
				v.add(upath, "%q has no host (write %s:host:port, without //)", u, strings.ToLower(scheme))
			case isExampleHost(host):
				v.add(upath, "%q is the example's placeholder", u)
			}
		}
		if needsAuth && (e.Username == "" || e.Credential == "") {
			v.add(path, "turn: and turns: URLs need a username and a credential")
		}
		if isPlaceholder(e.Username) {
			v.add(path+".username", "is the example's placeholder")
		}
		if isPlaceholder(e.Credential) {
			v.add(path+".credential", "is the example's placeholder")
		}
	}
}

// isPlaceholder reports whether s is, or contains, a placeholder such as
// icebox.example.yaml's "CHANGE-ME".
func isPlaceholder(s string) bool {
	s = strings.ToLower(s)
	for _, p := range []string{"change-me", "changeme", "change_me"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

// isExampleHost reports whether host is in a domain reserved for examples
// (RFC 2606), as the example file's "turn.example.com" is, or is
// example.localhost, the placeholder mautrix bridges' examples use.
func isExampleHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, d := range []string{"example.com", "example.net", "example.org", "example", "example.localhost"} {
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

var documentationNets = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// isDocumentationIP reports whether a is reserved for documentation, as the
// example file's public_ip is.
func isDocumentationIP(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range documentationNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// validHostname reports whether h is a DNS name: dot-separated labels of
// 1-63 letters, digits and hyphens, not starting or ending with a hyphen.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
