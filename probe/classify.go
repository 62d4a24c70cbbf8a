package probe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/pion/stun/v4"
)

// netVerdict classifies an error from reaching the server.
func netVerdict(err error, target Target, server string) (Verdict, string, string) {
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dnsErr):
		return VerdictResolve, fmt.Sprintf("cannot resolve %s: %v", target.Host, err),
			"check the host name in the URL and this machine's DNS"
	case errors.Is(err, syscall.ECONNREFUSED):
		return VerdictRefused, fmt.Sprintf("connection refused by %s over %s: nothing listens on that port", server, target.Transport),
			"check that the server runs and listens on this address, port and transport " +
				"(icebox: turn.listen." + listenKey(target.Transport) + "; coturn: listening-port/tls-listening-port)"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return VerdictUnreachable, fmt.Sprintf("%s is unreachable from here: %v", server, err),
			"check the routes between this machine and the server"
	case errors.As(err, &ne) && ne.Timeout():
		return VerdictUnreachable, fmt.Sprintf("no answer from %s over %s (timed out)", server, target.Transport),
			"a firewall may drop the traffic, the address may be wrong, or the server is down; " +
				"open " + target.Transport + " port " + fmt.Sprint(target.Port) + " on the server and in its cloud firewall"
	default:
		return VerdictUnreachable, fmt.Sprintf("cannot reach %s over %s: %v", server, target.Transport, err), ""
	}
}

func listenKey(transport string) string {
	if transport == TLS {
		return "tls"
	}
	return transport
}

// turnCode returns the STUN error code of a TURN client error, or 0.
func turnCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	return 0
}

// isTimeout reports whether err is a timeout (pion's retransmissions ran
// out, or a context deadline).
func isTimeout(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, errTimeout) || errors.Is(err, syscall.ETIMEDOUT)
}

var errTimeout = errors.New("timed out")

// authVerdict explains a 401 on an authenticated Allocate.
//
// expires is the credential's expiry read from its username (zero if it has
// none); longOK reports the retry with a long-lived credential from the same
// secret: nil if none was made.
func authVerdict(expires, now time.Time, longOK *bool) (Verdict, string, string) {
	switch {
	case !expires.IsZero() && !now.Before(expires):
		return VerdictExpired,
			fmt.Sprintf("the server refused the credential (401): it expired at %s, %s ago",
				expires.UTC().Format(time.RFC3339), now.Sub(expires).Round(time.Second)),
			"mint a fresh credential (icebox creds, or GET /calls/ice_servers); if the API hands out expired ones, " +
				"its clock is behind or credentials.ttl is too short"
	case longOK != nil && *longOK:
		return VerdictClockSkew,
			fmt.Sprintf("the server refused a credential valid until %s (%s from now) but accepted one valid for %s: "+
				"its clock is ahead of this machine's by more than %s",
				expires.UTC().Format(time.RFC3339), expires.Sub(now).Round(time.Second), skewProbeName, expires.Sub(now).Round(time.Second)),
			"synchronise both clocks (NTP: timedatectl set-ntp true)"
	case longOK != nil:
		return VerdictAuth,
			"the server refused the credential (401 after authenticating), and a long-lived one from the same secret too: the secret is wrong",
			"use the server's secret (icebox: credentials.secrets with compat: true, or --kid for another key; coturn: static-auth-secret)"
	case !expires.IsZero():
		return VerdictAuth,
			fmt.Sprintf("the server refused the credential (401 after authenticating); it is valid until %s by this machine's clock",
				expires.UTC().Format(time.RFC3339)),
			"the password or the secret it was minted from is wrong, or the server's clock is ahead by more than " +
				expires.Sub(now).Round(time.Second).String()
	default:
		return VerdictAuth, "the server refused the username and password (401 after authenticating)",
			"check the username and password (or the server's realm and user database)"
	}
}

// Address classes that mean "not reachable from the Internet".
var privatePrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"), // carrier-grade NAT
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::/128"),
}

// isPrivate reports whether ip cannot be reached from the public Internet.
func isPrivate(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range privatePrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// relayPrivate reports the NAT external-IP mistake: the relay address is
// private while the server was reached on an address that is not.
func relayPrivate(relay, server netip.Addr) bool {
	return relay.IsValid() && server.IsValid() && isPrivate(relay) && !isPrivate(server) && relay.Unmap() != server.Unmap()
}

// relayPrivateMessage is the verdict's message and hint.
func relayPrivateMessage(relay, server string) (string, string) {
	return fmt.Sprintf("the server advertises relay address %s, a private address, but was reached at %s: "+
			"clients outside its network cannot send media to the relay", relay, server),
		"the server is behind NAT and does not know its public address: set it — icebox: turn.relay.public_ip " +
			"(ICEBOX_TURN_RELAY_PUBLIC_IP); coturn: external-ip=PUBLIC/PRIVATE; eturnal: relay_ipv4_addr"
}

func addrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
