package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// certExpirySoon is when a certificate's coming expiry becomes a warning.
const certExpirySoon = 14 * 24 * time.Hour

// tlsHandshake runs a TLS handshake on conn and verifies the server's
// certificate against host itself, so that a failure can be explained with
// what the certificate says (names, validity) instead of only refused.
// verr is the verification error, or nil; err is a handshake failure.
func tlsHandshake(ctx context.Context, conn net.Conn, host string, roots *x509.CertPool, now time.Time) (tc *tls.Conn, info *TLSInfo, verr, err error) {
	conf := &tls.Config{
		// Verified below, by hand, to report what the certificate says.
		InsecureSkipVerify: true, //nolint:gosec
		MinVersion:         tls.VersionTLS12,
	}
	if net.ParseIP(host) == nil {
		conf.ServerName = host // SNI
	}
	tc = tls.Client(conn, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, nil, nil, err
	}
	cs := tc.ConnectionState()
	if len(cs.PeerCertificates) == 0 {
		return tc, nil, nil, errors.New("the server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	info = &TLSInfo{
		Version:   tls.VersionName(cs.Version),
		Subject:   leaf.Subject.String(),
		Issuer:    leaf.Issuer.String(),
		NotBefore: leaf.NotBefore,
		NotAfter:  leaf.NotAfter,
	}
	info.Names = append(info.Names, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		info.Names = append(info.Names, ip.String())
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	// The name and the chain separately, so that both problems are told.
	var errs []error
	if err := leaf.VerifyHostname(host); err != nil {
		errs = append(errs, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots, // nil = the system's
		Intermediates: inter,
		CurrentTime:   now,
	}); err != nil {
		errs = append(errs, err)
	}
	verr = errors.Join(errs...)
	if verr != nil {
		info.Error = strings.ReplaceAll(verr.Error(), "\n", "; ")
	}
	info.Verified = verr == nil
	return tc, info, verr, nil
}

// tlsVerdict explains a verification error: the most specific problem is
// the verdict, and the message tells the others too.
func tlsVerdict(verr error, host string, info *TLSInfo, now time.Time) (Verdict, string, string) {
	var unknown x509.UnknownAuthorityError
	v, msg, hint := tlsVerdict1(verr, host, info, now)
	if v != VerdictTLSUntrusted && errors.As(verr, &unknown) {
		msg += ", and it is signed by an unknown authority (issuer " + info.Issuer + ")"
	}
	return v, msg, hint
}

func tlsVerdict1(verr error, host string, info *TLSInfo, now time.Time) (Verdict, string, string) {
	names := strings.Join(info.Names, ", ")
	if names == "" {
		names = "no subject alternative names"
	}
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(verr, &hostErr):
		return VerdictTLSName,
			fmt.Sprintf("the TLS certificate is for %s, not %s", names, host),
			"use a URL with a name the certificate holds (icebox: ice_servers.hostname), or get a certificate for " + host
	case errors.As(verr, &invalid) && invalid.Reason == x509.Expired:
		if now.After(info.NotAfter) {
			return VerdictTLSExpired,
				fmt.Sprintf("the TLS certificate (%s) expired %s (%s ago)", names, info.NotAfter.UTC().Format(time.RFC3339), now.Sub(info.NotAfter).Round(time.Second)),
				"renew the certificate; icebox reloads it on SIGHUP or when the file changes"
		}
		return VerdictTLSExpired,
			fmt.Sprintf("the TLS certificate (%s) is not valid before %s", names, info.NotBefore.UTC().Format(time.RFC3339)),
			"check the clock of this machine and the server"
	case errors.As(verr, &unknown):
		return VerdictTLSUntrusted,
			fmt.Sprintf("the TLS certificate (%s, issuer %s) is signed by an unknown authority", names, info.Issuer),
			"use a certificate from a public CA (clients will refuse this one), or pass --ca with the issuing CA to check anyway, or --insecure"
	default:
		return VerdictTLSUntrusted,
			fmt.Sprintf("the TLS certificate (%s) does not verify: %v", names, verr),
			"fix the certificate chain, or pass --insecure to check the rest anyway"
	}
}
