//go:build linux

package matrixtest

import (
	"net/http"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// checkAttachNamespace: a namespace of another bed attached to the
// federation's bridge reaches every client API at LANURLs.
func checkAttachNamespace(t *testing.T, fed *Federation) {
	t.Helper()
	guest := netbed.New(t).Namespace("guest")
	fed.AttachNamespace(t, guest, "eth0", "198.18.0.10/24")
	tr := &http.Transport{DialContext: guest.DialContext}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	for _, u := range fed.LANURLs {
		resp, err := hc.Get(u + "/_matrix/client/versions")
		if err != nil {
			t.Fatalf("from an attached namespace: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s/_matrix/client/versions from an attached namespace: %s", u, resp.Status)
		}
	}
}
