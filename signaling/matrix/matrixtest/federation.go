package matrixtest

import (
	"context"
	"net"
)

// Federation is a set of Dendrites that federate with each other, each in a
// network namespace of its own, as StartFederation starts them.
//
// The bed: a namespace "lan" holds a bridge; each homeserver's namespace is
// attached to it with the address 198.18.0.N/24 (RFC 2544's benchmarking
// range, N = 1, 2, …) and runs Dendrite with the server name "198.18.0.N":
// an IP literal, which the spec resolves to port 8448 with no .well-known
// and no SRV lookup, so no name service is involved. Dendrite serves
// federation there over TLS (-https-bind-address 198.18.0.N:8448) with a
// certificate for that IP from a test CA made for the federation, and
// validates its peers' certificates against that CA only (SSL_CERT_FILE and
// SSL_CERT_DIR name the CA; disable_tls_validation stays false). The client
// API listens on 198.18.0.N:8008 inside the namespace, and the test reaches
// it at Homeserver.URL(), a TCP forwarder on 127.0.0.1 in the test's own
// namespace: the test's network is left as it is (no interface, route or
// sysctl of the host's changes).
type Federation struct {
	// Homeservers in the order started; Homeservers[i] has the server name
	// 198.18.0.<i+1>.
	Homeservers []*Homeserver
	// LANNamespace is the network namespace (ip netns) with the bridge
	// LANBridge every homeserver's namespace is attached to. Another
	// namespace attached there (a browser's) reaches the client APIs at
	// LANURLs.
	LANNamespace, LANBridge string
	// LANURLs are the client APIs as seen on the bridge,
	// http://198.18.0.<i+1>:8008.
	LANURLs []string
	// CAFile is the test CA's certificate (PEM), the only one the
	// homeservers trust for federation.
	CAFile string

	// dialFrom[i] dials from inside homeserver i's namespace (tests of this
	// package).
	dialFrom []func(ctx context.Context, network, addr string) (net.Conn, error)
	// lan is the *netbed.NS of LANBridge, for AttachNamespace (any: netbed
	// builds on Linux only, and so does everything that sets this).
	lan any
}

const (
	// federationLAN is the bed's subnet; homeserver i has .i+1.
	federationLAN = "198.18.0.0/24"
	// federationPort is the spec's default federation port, which an IP
	// literal server name without a port resolves to.
	federationPort = "8448"
	// clientPort is where the client API listens inside a namespace (the
	// namespace is the test's own, so a fixed port cannot be taken).
	clientPort = "8008"
)

// federationIP is homeserver i's address (and server name).
func federationIP(i int) net.IP { return net.IPv4(198, 18, 0, byte(i+1)).To4() }
