package node_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/internal/acmecert/acmetest"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
)

// TestNodeMuxACMETLSALPN: with the shared port (turn.mux) and ACME
// tls-alpn-01, the CA's validation handshake (ALPN acme-tls/1) reaches the
// certificate source through the port mux; TURN over TLS (no ALPN: the
// first decrypted bytes decide) and HTTPS then share the port with the
// issued certificate.
func TestNodeMuxACMETLSALPN(t *testing.T) {
	p := acmetest.New(t)
	muxPort, apiPort := freePort(t), freePort(t)
	p.Start(t, acmetest.Options{HTTPPort: 1, TLSPort: muxPort})
	const name = "turn.mux.node.icebox.test"
	cfg := acmeConfig(t, p, config.ChallengeTLSALPN01, 0, muxPort, apiPort, false, name)
	cfg.TURN.Mux.Listen, cfg.TURN.Listen.TLS = cfg.TURN.Listen.TLS, nil
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	pollUntil(t, 30*time.Second, "/readyz 200", func() bool {
		resp, err := http.Get("http://" + n.Addrs.HTTP + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	kr, err := credentials.NewKeyring([]credentials.Secret{{KID: "k1", Key: []byte(testSecret), Compat: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := kr.Mint(credentials.Subject{User: "carol"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", muxPort)
	_, relay, leaf := turnOverTLS(t, addr, name, p.IssuerRoots(t), cred.Username, cred.Password)
	relayRoundTrip(t, relay, "mux")
	code, apiLeaf, err := httpsStatus(fmt.Sprintf("https://%s/healthz", addr), name, p.IssuerRoots(t))
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /healthz over the shared port: %d, %v", code, err)
	}
	if !apiLeaf.Equal(leaf) {
		t.Error("HTTPS and TURN over TLS on the shared port serve different certificates")
	}
}
