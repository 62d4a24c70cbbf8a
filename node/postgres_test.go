package node_test

import (
	"crypto/sha256"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
	"github.com/icebox-voip/icebox/signaling/matrix/matrixtest"
	"github.com/icebox-voip/icebox/store/postgres/pgtest"
)

// TestNodeOnPostgres: a node with store.driver: postgres keeps its state
// in the database; while the database is stopped /readyz answers 503 and
// API requests that need it answer 503 store_unavailable; once it is back
// /readyz is 200 again and what was written before is there.
func TestNodeOnPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	const adminToken = "node-test-admin-token"
	auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{StaticTokens: []httpapi.StaticToken{
		{SHA256: sha256.Sum256([]byte(adminToken)), User: "admin", Admin: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.Store.Driver = config.StoreDriverPostgres
	cfg.Store.Postgres.DSN = srv.NewDatabase(t)
	cfg.Store.Postgres.StatementTimeout = 2 * time.Second
	reg := prometheus.NewRegistry()
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), Auth: auth, Registry: reg})
	base := "http://" + n.Addrs.HTTP

	if code, body := doReq(t, adminToken, http.MethodPut, base+"/admin/conversations/c1", `{"participants":["alice","bob"]}`); code/100 != 2 {
		t.Fatalf("PUT conversation: %d %s", code, body)
	}
	if code, body := doReq(t, "", http.MethodGet, base+"/readyz", ""); code != http.StatusOK {
		t.Fatalf("/readyz with the database up: %d %s", code, body)
	}
	if mf, err := reg.Gather(); err != nil || !hasMetric(mf, "icebox_store_pool_max_connections") {
		t.Errorf("pool metrics not registered (%v)", err)
	}

	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	pollUntil(t, 10*time.Second, "/readyz 503 with the database stopped", func() bool {
		code, _ := doReq(t, "", http.MethodGet, base+"/readyz", "")
		return code == http.StatusServiceUnavailable
	})
	t.Logf("/readyz turned 503 %s after the database stopped", time.Since(stopped).Round(time.Millisecond))
	code, body := doReq(t, adminToken, http.MethodGet, base+"/admin/conversations/c1", "")
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "store_unavailable") {
		t.Errorf("GET conversation with the database stopped: %d %s; want 503 store_unavailable", code, body)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 15*time.Second, "/readyz 200 with the database back", func() bool {
		code, _ := doReq(t, "", http.MethodGet, base+"/readyz", "")
		return code == http.StatusOK
	})
	if code, body := doReq(t, adminToken, http.MethodGet, base+"/admin/conversations/c1", ""); code != http.StatusOK || !strings.Contains(string(body), `"c1"`) {
		t.Errorf("GET conversation after the database came back: %d %s", code, body)
	}
}

// TestNodePostgresRefused: a DSN that reaches no server is a configuration
// error (`icebox serve` exits 2), named clearly, and nothing starts.
func TestNodePostgresRefused(t *testing.T) {
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.Store.Driver = config.StoreDriverPostgres
	cfg.Store.Postgres.DSN = "host=" + t.TempDir() + " port=5432 user=icebox dbname=icebox connect_timeout=2"
	auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = node.New(t.Context(), cfg, node.Options{Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(), Auth: auth})
	var ce node.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "store.postgres: store: postgres: database unreachable") {
		t.Fatalf("got %v, want a ConfigError saying the database is unreachable", err)
	}
	t.Logf("error: %v", err)
}

func hasMetric(mf []*dto.MetricFamily, name string) bool {
	for _, f := range mf {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

// TestNodeOneMatrixBridgePerDatabase: with Matrix on, a second node on the
// same database is refused at start (two bridges would each sync and send
// every event); once the first node stops, a node starts again.
func TestNodeOneMatrixBridgePerDatabase(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.NewDatabase(t)
	hs := matrixtest.StartDendrite(t)
	svcID, _, _ := hs.Register(t, "icebox", "icebox-password", false)
	cfg := func() config.Config {
		token, device := hs.Login(t, svcID, "icebox-password")
		c := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
		c.Store.Driver = config.StoreDriverPostgres
		c.Store.Postgres.DSN = dsn
		c.Matrix.Enabled = true
		c.Matrix.HomeserverURL = hs.URL()
		c.Matrix.ServiceUser = svcID
		c.Matrix.AccessToken = token
		c.Matrix.DeviceID = device
		c.Matrix.InviteWait = 0
		return c
	}
	first := nodetest.Start(t, cfg(), node.Options{Logger: zerolog.Nop()})
	auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	second, err := node.New(t.Context(), cfg(), node.Options{Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(), Auth: auth})
	var ce node.ConfigError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "another icebox node runs the Matrix bridge on this database") {
		if second != nil {
			_ = second.Close()
		}
		t.Fatalf("second node with Matrix on: got %v, want a ConfigError naming the other bridge", err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	nodetest.Start(t, cfg(), node.Options{Logger: zerolog.Nop()})
}
