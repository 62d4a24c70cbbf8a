package probe

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"

	"github.com/icebox-voip/icebox/credentials"
)

// Defaults of Config.
const (
	DefaultUser     = "icebox-check"
	DefaultTTL      = time.Hour
	DefaultPackets  = 50
	DefaultInterval = 10 * time.Millisecond
	DefaultTimeout  = 5 * time.Second
	// skewProbeTTL is the lifetime of the credential made to tell a server
	// whose clock is ahead from a wrong secret.
	skewProbeTTL  = 30 * 24 * time.Hour
	skewProbeName = "30 days"
	// maxLoss is the burst loss above which a relay fails; any loss warns.
	maxLoss = 0.10
	// drainWait is how long the burst waits for echoes after its last send.
	drainWait = 2 * time.Second
)

// Config says what to check and how.
type Config struct {
	Targets []Target
	// Mint, if set, makes a credential valid for ttl for every TURN target
	// that has no username (SecretMinter makes TURN REST ones), and lets a
	// refused credential be told apart from a server clock that runs ahead.
	Mint Minter
	TTL  time.Duration // of minted credentials; default DefaultTTL
	// RootCAs verifies TLS certificates (nil: the system's). Insecure
	// reports verification failures as warnings and goes on.
	RootCAs  *x509.CertPool
	Insecure bool
	Packets  int           // relayed per burst; default DefaultPackets
	Interval time.Duration // between them; default DefaultInterval
	Timeout  time.Duration // per step; default DefaultTimeout
	Now      func() time.Time
	// Logger for pion's TURN client (default: errors only, to stderr).
	Logger logging.LoggerFactory
}

func (c *Config) defaults() {
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.Packets <= 0 {
		c.Packets = DefaultPackets
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		f := logging.NewDefaultLoggerFactory()
		f.DefaultLogLevel = logging.LogLevelError
		c.Logger = f
	}
}

// Run checks every target in turn and returns the report. It is bounded:
// every step has Config.Timeout, the burst Packets×Interval plus a drain.
func Run(ctx context.Context, cfg Config) *Report {
	cfg.defaults()
	rep := &Report{Started: cfg.Now()}
	for _, t := range cfg.Targets {
		p := &prober{cfg: &cfg, t: t}
		rep.Results = append(rep.Results, p.check(ctx))
	}
	rep.OK = len(rep.Results) > 0
	for _, r := range rep.Results {
		rep.OK = rep.OK && r.OK()
	}
	rep.Duration = cfg.Now().Sub(rep.Started)
	return rep
}

// prober checks one target.
type prober struct {
	cfg    *Config
	t      Target
	server netip.AddrPort
	r      *Result
}

func (p *prober) check(ctx context.Context) *Result {
	p.r = &Result{URL: p.t.URL, Transport: p.t.Transport}
	r := p.r
	if !p.resolve(ctx) {
		return r
	}
	first, ok := p.connect(ctx, true)
	if !ok {
		return r
	}
	defer first.close()
	if !p.binding(first) {
		return r
	}
	if !p.t.TURN() {
		r.Verdict = VerdictOK
		return r
	}
	cred, ok := p.credential()
	if !ok {
		return r
	}
	a, ok := p.allocate(ctx, first, cred)
	if !ok {
		return r
	}
	defer a.close()
	if relayPrivate(addrOf(a.relay.LocalAddr()), p.server.Addr()) {
		// Relay to relay on the same server may well work (the server
		// reaches its own private address), so this is judged last: it is
		// the verdict unless something else failed first.
		defer func() {
			msg, hint := relayPrivateMessage(r.Relay, p.server.Addr().String())
			if r.Verdict == VerdictOK || r.Verdict == VerdictNoData {
				r.Verdict, r.Message, r.Hint = VerdictRelayPrivate, msg, hint
			} else {
				r.Warnings = append(r.Warnings, msg)
			}
		}()
	}

	// The peer: a second allocation on the same server, over the same
	// transport, as a client on the other side of a call would make.
	start := time.Now()
	second, ok := p.connect(ctx, false)
	if !ok {
		return r
	}
	defer second.close()
	b, err := p.newAllocation(ctx, second, cred)
	if err != nil {
		p.allocateFailed("peer allocation", time.Since(start), err, cred)
		return r
	}
	defer b.close()
	r.PeerRelay = b.relay.LocalAddr().String()
	r.step("peer allocation", StatusOK, time.Since(start), "second allocation (the peer): relay "+r.PeerRelay)

	if !p.permissions(a, b) {
		return r
	}
	p.burst(a, b)
	return r
}

// resolve finds the server's address, preferring IPv4.
func (p *prober) resolve(ctx context.Context) bool {
	start := time.Now()
	if ip, err := netip.ParseAddr(p.t.Host); err == nil {
		p.server = netip.AddrPortFrom(ip.Unmap(), uint16(p.t.Port))
		p.r.Server = p.server.String()
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", p.t.Host)
	if err == nil && len(ips) == 0 {
		err = &net.DNSError{Err: "no addresses", Name: p.t.Host, IsNotFound: true}
	}
	if err != nil {
		v, msg, hint := netVerdict(err, p.t, p.t.Addr())
		p.r.fail("resolve", time.Since(start), v, msg, hint)
		return false
	}
	ip := ips[0]
	for _, a := range ips {
		if a.Unmap().Is4() {
			ip = a
			break
		}
	}
	p.server = netip.AddrPortFrom(ip.Unmap(), uint16(p.t.Port))
	p.r.Server = p.server.String()
	p.r.step("resolve", StatusOK, time.Since(start), p.t.Host+" is "+ip.Unmap().String())
	return true
}

// conn is a connection to the server, as the TURN client wants it.
type conn struct {
	udp    *net.UDPConn // connected, for UDP
	stream net.Conn     // TCP or TLS
	pc     net.PacketConn
}

func (c *conn) close() {
	if c.pc != nil {
		c.pc.Close()
	}
	if c.stream != nil {
		c.stream.Close()
	}
	if c.udp != nil {
		c.udp.Close()
	}
}

func (c *conn) localAddr() net.Addr {
	if c.udp != nil {
		return c.udp.LocalAddr()
	}
	return c.stream.LocalAddr()
}

// connect opens a connection to the server over the target's transport; the
// first one records its steps (connect, TLS), the peer's only failures.
func (p *prober) connect(ctx context.Context, first bool) (*conn, bool) {
	start := time.Now()
	server := net.UDPAddrFromAddrPort(p.server)
	var c conn
	if p.t.Transport == UDP {
		// Connected, so that ICMP port unreachable comes back as
		// ECONNREFUSED instead of a timeout.
		u, err := net.DialUDP("udp", nil, server)
		if err != nil {
			v, msg, hint := netVerdict(err, p.t, p.r.Server)
			p.r.fail("connect", time.Since(start), v, msg, hint)
			return nil, false
		}
		c.udp = u
		c.pc = connectedPacketConn{u}
		if first {
			p.r.Local = u.LocalAddr().String()
		}
		return &c, true
	}
	d := net.Dialer{Timeout: p.cfg.Timeout}
	s, err := d.DialContext(ctx, "tcp", p.server.String())
	if err != nil {
		v, msg, hint := netVerdict(err, p.t, p.r.Server)
		p.r.fail("connect", time.Since(start), v, msg, hint)
		return nil, false
	}
	c.stream = s
	if first {
		p.r.Local = s.LocalAddr().String()
		p.r.step("connect", StatusOK, time.Since(start), "TCP connected from "+p.r.Local)
	}
	if p.t.Transport == TLS {
		start = time.Now()
		hctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
		tc, info, verr, err := tlsHandshake(hctx, s, p.t.Host, p.cfg.RootCAs, p.cfg.Now())
		cancel()
		if err != nil {
			s.Close()
			v, msg, hint := VerdictTLSHandshake, fmt.Sprintf("TLS handshake with %s failed: %v", p.r.Server, err),
				"check that the port speaks TLS (icebox: turn.listen.tls; coturn: tls-listening-port) and its certificate and key"
			if isTimeout(err) {
				v, msg, hint = netVerdict(timeoutError{"TLS handshake"}, p.t, p.r.Server)
			}
			p.r.fail("tls", time.Since(start), v, msg, hint)
			return nil, false
		}
		c.stream = tc
		if first {
			p.r.TLS = info
			if !p.tlsStep(time.Since(start), info, verr) {
				tc.Close()
				return nil, false
			}
		}
	}
	c.pc = turn.NewSTUNConn(c.stream)
	return &c, true
}

// tlsStep records the certificate check; false means stop.
func (p *prober) tlsStep(d time.Duration, info *TLSInfo, verr error) bool {
	now := p.cfg.Now()
	desc := fmt.Sprintf("%s, certificate for %s, valid until %s", info.Version, strings.Join(info.Names, ", "), info.NotAfter.UTC().Format(time.RFC3339))
	if verr != nil {
		v, msg, hint := tlsVerdict(verr, p.t.Host, info, now)
		if !p.cfg.Insecure {
			p.r.fail("tls", d, v, msg, hint)
			return false
		}
		p.r.Warnings = append(p.r.Warnings, msg+" (ignored: --insecure)")
		p.r.step("tls", StatusWarn, d, desc+"; not verified: "+msg)
		return true
	}
	if left := info.NotAfter.Sub(now); left < certExpirySoon {
		w := fmt.Sprintf("the TLS certificate expires in %s", left.Round(time.Hour))
		p.r.Warnings = append(p.r.Warnings, w)
		p.r.step("tls", StatusWarn, d, desc+"; "+w)
		return true
	}
	p.r.step("tls", StatusOK, d, desc+"; verified")
	return true
}

// binding asks the server for our mapped address.
func (p *prober) binding(c *conn) bool {
	start := time.Now()
	deadline := start.Add(p.cfg.Timeout)
	var mapped *net.UDPAddr
	var err error
	if c.udp != nil {
		mapped, err = bindingUDP(c.udp, deadline)
	} else {
		mapped, err = bindingStream(c.stream, deadline)
	}
	d := time.Since(start)
	if err != nil {
		var ne net.Error // a socket error or a timeout, as opposed to a bad answer
		if errors.As(err, &ne) {
			v, msg, hint := netVerdict(err, p.t, p.r.Server)
			p.r.fail("binding", d, v, msg, hint)
			return false
		}
		p.r.fail("binding", d, VerdictBinding, fmt.Sprintf("STUN binding with %s failed: %v", p.r.Server, err),
			"the port answers but not with STUN: check that it is the STUN/TURN port")
		return false
	}
	p.r.Mapped = mapped.String()
	local := addrOf(c.localAddr())
	m := addrOf(mapped)
	nat := m != local
	p.r.BehindNAT = &nat
	detail := "mapped address " + p.r.Mapped
	if nat {
		detail += " (behind NAT: local address " + c.localAddr().String() + ")"
	} else {
		detail += " (no NAT)"
	}
	p.r.step("binding", StatusOK, d, detail)
	return true
}

// cred is the TURN credential of a target.
type cred struct {
	username, password string
	expires            time.Time // zero if the username carries none
	minted             bool      // made from Config.Secret
}

// credential picks or mints the target's credential.
func (p *prober) credential() (cred, bool) {
	if p.t.Username != "" {
		c := cred{username: p.t.Username, password: p.t.Password, expires: usernameExpiry(p.t.Username)}
		p.r.Username = c.username
		return c, true
	}
	if p.cfg.Mint == nil {
		p.r.fail("allocate", 0, VerdictNoCredentials, "a TURN URL needs credentials",
			"pass --secret (TURN REST shared secret), --username and --password, or --ice-servers-url with --token")
		return cred{}, false
	}
	c, err := p.mint(p.cfg.TTL)
	if err != nil {
		p.r.fail("allocate", 0, VerdictNoCredentials, "cannot mint a credential: "+err.Error(), "")
		return cred{}, false
	}
	p.r.Username = c.username
	return c, true
}

// mint makes a credential with Config.Mint, valid for ttl.
func (p *prober) mint(ttl time.Duration) (cred, error) {
	u, pass, exp, err := p.cfg.Mint(ttl)
	if err != nil {
		return cred{}, err
	}
	return cred{username: u, password: pass, expires: exp, minted: true}, nil
}

// Minter makes a TURN credential valid for ttl and returns its expiry.
type Minter func(ttl time.Duration) (username, password string, expires time.Time, err error)

// SecretMinter mints TURN REST credentials from a shared secret: username
// "<expiry>[.<kid>]:<user>", password base64(HMAC-SHA1(secret, username)),
// as coturn's use-auth-secret, eturnal and icebox's compat secret expect
// (kid "" for those; an icebox key id otherwise).
func SecretMinter(secret []byte, kid, user string, now func() time.Time) Minter {
	if user == "" {
		user = DefaultUser
	}
	if now == nil {
		now = time.Now
	}
	return func(ttl time.Duration) (string, string, time.Time, error) {
		exp := now().Add(ttl).Truncate(time.Second)
		u := credentials.Claims{Expires: exp, KID: kid, User: user}.Username()
		return u, credentials.Password(secret, u), exp, nil
	}
}

// usernameExpiry reads the expiry of a REST username the way coturn does
// (the digits before the first '.' or ':'); zero if there is none.
func usernameExpiry(u string) time.Time {
	if c, err := credentials.ParseUsername(u); err == nil {
		return c.Expires
	}
	i := strings.IndexAny(u, ".:")
	if i < 1 || i > 12 {
		return time.Time{}
	}
	n, err := strconv.ParseInt(u[:i], 10, 64)
	if err != nil || n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0).UTC()
}

// alloc is a TURN allocation.
type alloc struct {
	client *turn.Client
	relay  net.PacketConn
}

func (a *alloc) close() {
	a.relay.Close() // deallocates (Refresh with lifetime 0)
	a.client.Close()
}

// newAllocation authenticates and allocates a UDP relay on c.
func (p *prober) newAllocation(ctx context.Context, c *conn, cr cred) (*alloc, error) {
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: p.server.String(),
		TURNServerAddr: p.server.String(),
		Conn:           c.pc,
		Username:       cr.username,
		Password:       cr.password,
		LoggerFactory:  p.cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	if err := client.Listen(); err != nil {
		client.Close()
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	relay, err := client.AllocateWithContext(actx)
	if err != nil {
		client.Close()
		if actx.Err() != nil {
			return nil, fmt.Errorf("%w: no allocate response within %s", errTimeout, p.cfg.Timeout)
		}
		return nil, err
	}
	return &alloc{client: client, relay: relay}, nil
}

// allocate makes the first allocation and explains a refusal.
func (p *prober) allocate(ctx context.Context, c *conn, cr cred) (*alloc, bool) {
	start := time.Now()
	a, err := p.newAllocation(ctx, c, cr)
	d := time.Since(start)
	if err != nil {
		p.allocateFailed("allocate", d, err, cr)
		return nil, false
	}
	p.r.Relay = a.relay.LocalAddr().String()
	detail := "relay " + p.r.Relay
	if !cr.expires.IsZero() {
		detail += ", credential valid until " + cr.expires.UTC().Format(time.RFC3339)
	}
	p.r.step("allocate", StatusOK, d, detail)
	return a, true
}

// allocateFailed records why an allocation failed.
func (p *prober) allocateFailed(step string, d time.Duration, err error, cr cred) {
	switch code := turnCode(err); {
	case code == 401:
		var longOK *bool
		var check *Step
		if cr.minted && cr.expires.After(p.cfg.Now()) {
			ok, st := p.tryLongCredential()
			longOK, check = &ok, &st
		}
		v, msg, hint := authVerdict(cr.expires, p.cfg.Now(), longOK)
		p.r.fail(step, d, v, "401 Unauthorized", hint)
		p.r.Message = msg
		if check != nil {
			p.r.Steps = append(p.r.Steps, *check)
		}
	case code == 486:
		p.r.fail(step, d, VerdictQuota, "the server refused the allocation: allocation quota reached (486)",
			"too many allocations for this user or in total; wait for old ones to expire, or raise the quota (icebox: turn.quotas; coturn: user-quota/total-quota)")
	case code == 403:
		p.r.fail(step, d, VerdictAllocate, "the server refused the allocation (403 Forbidden)",
			"the server may refuse this client's address or this user")
	case code != 0:
		p.r.fail(step, d, VerdictAllocate, fmt.Sprintf("the server refused the allocation: %v", err), "")
	case isTimeout(err):
		p.r.fail(step, d, VerdictUnreachable, fmt.Sprintf("no answer to Allocate from %s over %s (timed out)", p.r.Server, p.t.Transport),
			"the server answers STUN binding but not TURN: is it a STUN-only server, or does it drop the request?")
	default:
		p.r.fail(step, d, VerdictAllocate, fmt.Sprintf("allocate failed: %v", err), "")
	}
}

// tryLongCredential allocates with a credential from the same secret that
// is valid for skewProbeTTL: success means the secret is right and the
// server's clock is ahead.
func (p *prober) tryLongCredential() (bool, Step) {
	start := time.Now()
	st := Step{Name: "auth check", Status: StatusFail}
	long, err := p.mint(skewProbeTTL)
	if err != nil {
		st.Detail = "cannot mint: " + err.Error()
		return false, st
	}
	c, ok := (&prober{cfg: p.cfg, t: p.t, server: p.server, r: &Result{}}).connect(context.Background(), false)
	if !ok {
		st.Detail = "cannot connect again"
		return false, st
	}
	defer c.close()
	a, err := p.newAllocation(context.Background(), c, long)
	st.Duration = time.Since(start)
	if err != nil {
		st.Detail = "a credential from the same secret valid for " + skewProbeName + " is refused too"
		return false, st
	}
	a.close()
	st.Status, st.Detail = StatusOK, "a credential from the same secret valid for "+skewProbeName+" is accepted"
	return true, st
}

// permissions lets each relay receive from the other.
func (p *prober) permissions(a, b *alloc) bool {
	start := time.Now()
	err := a.client.CreatePermission(b.relay.LocalAddr())
	if err == nil {
		err = b.client.CreatePermission(a.relay.LocalAddr())
	}
	d := time.Since(start)
	switch code := turnCode(err); {
	case err == nil:
		p.r.step("permission", StatusOK, d, "each relay may receive from the other")
		return true
	case code == 403:
		p.r.fail("permission", d, VerdictPeerRefused,
			fmt.Sprintf("the server refused a permission for its own relay address %s (403 Forbidden): its peer policy forbids relay to relay, "+
				"so two clients that can only use relays (symmetric NAT, relay-only policy) cannot reach each other", p.r.PeerRelay),
			"icebox allows its own relay addresses unless turn.denied_peers covers them; coturn: allow the relay address "+
				"(allowed-peer-ip, or remove the denied-peer-ip that covers it; allow-loopback-peers for 127.0.0.1)")
	case code != 0:
		p.r.fail("permission", d, VerdictPermission, fmt.Sprintf("CreatePermission refused: %v", err), "")
	default:
		p.r.fail("permission", d, VerdictPermission, fmt.Sprintf("CreatePermission failed: %v", err), "")
	}
	return false
}
