package authservice_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

// TestDiscoveryOverTLS resolves a server name with an explicit port, as
// federation discovery does, and asks over TLS with the CA the test hands
// in; the homeserver is the real Dendrite behind a TLS front. Dendrite names
// its users @…:localhost, so the answer is a user of another server than
// the one asked: refused (a homeserver vouches for its own users only).
// With the system roots instead, the certificate is not trusted: the
// homeserver counts as unreachable. With an address policy that refuses
// loopback (node's: the relay's deny-list and the host's own addresses),
// the service does not even connect: a request cannot aim it at the host.
func TestDiscoveryOverTLS(t *testing.T) {
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, aliceTok, _ := hs.Register(t, "alice", "alice-password-1", false)
	target, _ := url.Parse(hs.URL())
	var asked atomic.Int64 // requests that reached the front
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	serverName := strings.TrimPrefix(front.URL, "https://") // 127.0.0.1:PORT
	roots := x509.NewCertPool()
	roots.AddCert(front.Certificate())

	denyLoopback := func(a netip.Addr) bool { return !a.IsLoopback() }
	for _, tc := range []struct {
		name      string
		roots     *x509.CertPool
		allow     func(netip.Addr) bool
		reason    string
		connected bool
	}{
		{"test CA", roots, nil, "foreign_user", true},
		{"untrusted", nil, nil, "homeserver_unreachable", true},
		{"denied address", roots, denyLoopback, "homeserver_unreachable", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := asked.Load()
			reg := prometheus.NewRegistry()
			svc, err := authservice.New(authservice.Config{
				LiveKitURL: lkURL, APIKey: lkKey, APISecret: lkSecret,
				FullAccessHomeservers: []string{serverName},
				VerifyTimeout:         3 * time.Second,
				RootCAs:               tc.roots,
				AllowAddr:             tc.allow,
				Rooms:                 &rooms{},
				Registerer:            reg,
				Logger:                zerolog.Nop(),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = svc.Close() })
			srv := httptest.NewServer(svc.Handler(""))
			defer srv.Close()
			tok := requestOpenID(t, hs, alice, aliceTok)
			tok.MatrixServerName = serverName
			js, _ := json.Marshal(map[string]any{"room": "!r:localhost", "openid_token": tok, "device_id": "D"})
			resp, err := http.Post(srv.URL+"/sfu/get", "application/json", strings.NewReader(string(js)))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			// A homeserver not asked (untrusted, denied) is 503 naming it;
			// one that answered about a user not its own, 401.
			wantStatus, wantCode := 401, "M_UNAUTHORIZED"
			if tc.reason == "homeserver_unreachable" {
				wantStatus, wantCode = 503, serverName
			}
			if resp.StatusCode != wantStatus || !strings.Contains(string(body), wantCode) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, wantStatus, wantCode)
			}
			if got := metricValue(t, reg, "icebox_matrixrtc_openid_verify_failures_total", serverName, tc.reason); got != 1 {
				t.Errorf("verify failures{%s,%s} = %v, want 1", serverName, tc.reason, got)
			}
			// An untrusted certificate is refused after the TLS handshake:
			// no request reaches the front either way; a denied address is
			// refused before connecting, so nothing is asked. The first
			// case must have asked, or the other two prove nothing.
			if got := asked.Load() - before; (got > 0) != (tc.connected && tc.roots != nil) {
				t.Errorf("requests that reached the homeserver: %d", got)
			}
		})
	}
}

// TestTwirpRoomCreation checks the default room creator against a stand-in
// for LiveKit's RoomService (the real livekit-server is the managed mode, a
// later step): the Twirp path, a token with roomCreate signed by the
// configured key, lk-jwt-service's room timeouts.
func TestTwirpRoomCreation(t *testing.T) {
	hs := matrixtest.StartDendrite(t, matrixtest.WithConfig("global.disable_federation", false))
	alice, aliceTok, _ := hs.Register(t, "alice", "alice-password-1", false)
	got := make(chan map[string]any, 1)
	lk := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/twirp/livekit.RoomService/CreateRoom" || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "wrong path or type", http.StatusNotFound)
			return
		}
		v, err := auth.ParseAPIToken(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		_, grants, err := v.Verify(lkSecret)
		if err != nil || grants.Video == nil || !grants.Video.RoomCreate {
			http.Error(w, "no roomCreate", http.StatusUnauthorized)
			return
		}
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- body
		_, _ = w.Write([]byte(`{"name":"x"}`))
	}))
	defer lk.Close()
	svc, err := authservice.New(authservice.Config{
		LiveKitURL: "ws" + strings.TrimPrefix(lk.URL, "http"), APIKey: lkKey, APISecret: lkSecret,
		FullAccessHomeservers: []string{"*"},
		HomeserverURLs:        map[string]string{hs.ServerName(): hs.URL()},
		Registerer:            prometheus.NewRegistry(),
		Logger:                zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	srv := httptest.NewServer(svc.Handler(""))
	defer srv.Close()
	tok := requestOpenID(t, hs, alice, aliceTok)
	js, _ := json.Marshal(map[string]any{"room": "!r:localhost", "openid_token": tok, "device_id": "D"})
	resp, err := http.Post(srv.URL+"/sfu/get", "application/json", strings.NewReader(string(js)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case body := <-got:
		want := authservice.RoomAlias("!r:localhost", authservice.LegacySlot)
		if body["name"] != want || body["empty_timeout"] != float64(300) || body["departure_timeout"] != float64(20) {
			t.Errorf("CreateRoom body %v, want name %q, empty_timeout 300, departure_timeout 20", body, want)
		}
	case <-ctx.Done():
		t.Fatal("no CreateRoom call")
	}
}
