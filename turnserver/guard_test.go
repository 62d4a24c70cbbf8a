package turnserver

import (
	"net"
	"os"
	"testing"
	"time"
)

// TestTLSHandshakeBounded: a client that opens a TLS connection and never
// completes the handshake is disconnected after tlsHandshakeTimeout. pion
// bounds the handshake of a *tls.Conn only; the stream guard hands it
// another type, so it bounds the handshake itself.
func TestTLSHandshakeBounded(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("waits for the 10 s handshake timeout (runs without -short, and always under CI=true)")
	}
	r := startRelay(t, relayOptions{})
	c, err := net.Dial("tcp4", r.tls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	requireClosedByServer(t, c, tlsHandshakeTimeout+5*time.Second)
}
