//go:build linux

package matrixtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// maxFederation bounds n: StartFederation takes one of the machine's
// maxDendrites slots per homeserver.
const maxFederation = maxDendrites

// StartFederation starts n (2 to 4) Dendrite homeservers that federate with
// each other over TLS, each in a network namespace of its own (see
// Federation for the bed). It needs what netbed needs (root, iproute2,
// iptables) and skips or fails as netbed.Require says. opts apply to every
// homeserver, after the federation's own settings. Everything is stopped and
// removed when the test ends; a failed test prints each homeserver's log.
func StartFederation(t testing.TB, n int, opts ...Option) *Federation {
	t.Helper()
	if n < 2 || n > maxFederation {
		t.Fatalf("matrixtest: StartFederation(%d): want 2 to %d homeservers", n, maxFederation)
	}
	requireBinaries(t) // before the bed, so a missing install says so first
	begin := time.Now()
	bed := netbed.New(t)
	lan := bed.Namespace("lan")
	const bridge = "br0"
	lan.Bridge(bridge)

	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	if err := os.Mkdir(caDir, 0o700); err != nil {
		t.Fatalf("matrixtest: %v", err)
	}
	ca, err := newTestCA(caDir)
	if err != nil {
		t.Fatalf("matrixtest: %v", err)
	}
	_, lanNet, _ := net.ParseCIDR(federationLAN)
	prefix, _ := lanNet.Mask.Size()

	fed := &Federation{LANNamespace: lan.Name, LANBridge: bridge, CAFile: ca.file, lan: lan}
	for i := range n {
		ip := federationIP(i)
		ns := bed.Namespace(fmt.Sprintf("hs%d", i+1))
		ns.Attach("eth0", fmt.Sprintf("%s/%d", ip, prefix), lan, bridge)
		hsDir := filepath.Join(dir, ip.String())
		if err := os.Mkdir(hsDir, 0o700); err != nil {
			t.Fatalf("matrixtest: %v", err)
		}
		certFile, keyFile, err := ca.issue(hsDir, ip)
		if err != nil {
			t.Fatalf("matrixtest: %v", err)
		}
		clientAddr := net.JoinHostPort(ip.String(), clientPort)
		place := placement{
			wrap: []string{"ip", "netns", "exec", ns.Name},
			addr: clientAddr,
			args: []string{
				"-https-bind-address", net.JoinHostPort(ip.String(), federationPort),
				"-tls-cert", certFile, "-tls-key", keyFile,
			},
			env: federationEnv(ca),
			url: "http://" + ns.Forward(clientAddr),
		}
		fed.Homeservers = append(fed.Homeservers, startDendrite(t, ip.String(), place, append(federationSettings(), opts...)))
		fed.LANURLs = append(fed.LANURLs, "http://"+clientAddr)
		fed.dialFrom = append(fed.dialFrom, ns.DialContext)
	}
	t.Logf("matrixtest: federation of %d homeservers ready in %v", n, time.Since(begin).Round(time.Millisecond))
	return fed
}

// AttachNamespace connects ns, a namespace of another bed (a browser's,
// and the services it talks to), to the federation's bridge: interface
// ifName in ns with addr, an address of the bed's 198.18.0.0/24 that no
// homeserver has (198.18.0.1 to .n are theirs; .10 and up stay free).
// From there the client APIs answer at LANURLs and the federation ports at
// 198.18.0.N:8448, and the homeservers reach what listens on addr (a TURN
// server their /voip/turnServer names, say). The link goes with ns.
func (f *Federation) AttachNamespace(t testing.TB, ns *netbed.NS, ifName, addr string) {
	t.Helper()
	ip, sub, err := net.ParseCIDR(addr)
	_, lanNet, _ := net.ParseCIDR(federationLAN)
	if err != nil || sub.String() != lanNet.String() {
		t.Fatalf("matrixtest: AttachNamespace(%q): want an address of %s", addr, federationLAN)
	}
	for i := range f.Homeservers {
		if ip.Equal(federationIP(i)) {
			t.Fatalf("matrixtest: AttachNamespace(%q): homeserver %d has that address", addr, i+1)
		}
	}
	lan, ok := f.lan.(*netbed.NS)
	if !ok {
		t.Fatal("matrixtest: AttachNamespace on a Federation StartFederation did not make")
	}
	ns.Attach(ifName, addr, lan, f.LANBridge)
}

// federationEnv makes a homeserver trust the test CA and nothing else, and
// talk to its peers directly.
func federationEnv(ca *testCA) []string {
	return []string{
		// Go's crypto/x509 reads its roots from these on Linux: the CA file,
		// and a directory holding only that file (instead of /etc/ssl/certs).
		"SSL_CERT_FILE=" + ca.file,
		"SSL_CERT_DIR=" + filepath.Dir(ca.file),
		// gomatrixserverlib's federation client honours the proxy variables;
		// a proxy of the test's environment is unreachable from the
		// namespace. Later entries win in exec.Cmd.Env; empty means none.
		"HTTPS_PROXY=", "https_proxy=", "HTTP_PROXY=", "http_proxy=", "ALL_PROXY=", "all_proxy=",
	}
}

// federationSettings turn StartDendrite's closed test server into one that
// federates.
func federationSettings() []Option {
	return []Option{
		WithConfig("global.disable_federation", false),
		// Validate peers' certificates (against the test CA): the default,
		// written out so a change of default cannot turn the check off.
		WithConfig("federation_api.disable_tls_validation", false),
	}
}
