package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/credentials"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/node/nodetest"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

const testSecret = "node-test-secret-0123456789abcdef"

// TestNodeServesOnPortZero: a node started in-process on port 0 tells where
// it listens, is ready there, relays over UDP and TCP with a credential of
// its keyring, and stops cleanly (drain, then close).
func TestNodeServesOnPortZero(t *testing.T) {
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop()})
	a := n.Addrs
	for name, addr := range map[string]string{"http": a.HTTP, "turn udp": first(a.TURNUDP), "turn tcp": first(a.TURNTCP)} {
		if nodetest.Port(addr) == 0 {
			t.Fatalf("%s address %q: want a port the kernel picked", name, addr)
		}
	}
	resp, err := http.Get("http://" + a.HTTP + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %s", resp.Status)
	}

	kr, err := credentials.NewKeyring([]credentials.Secret{{KID: "k1", Key: []byte(testSecret), Compat: true}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := kr.Mint(credentials.Subject{User: "alice"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"udp", "tcp"} {
		addr := first(a.TURNUDP)
		if transport == "tcp" {
			addr = first(a.TURNTCP)
		}
		relay := allocate(t, transport, addr, cred.Username, cred.Password)
		if got := relay.LocalAddr().(*net.UDPAddr); !got.IP.Equal(net.IPv4(127, 0, 0, 1)) || got.Port < 40000 || got.Port > 40999 {
			t.Errorf("%s: relayed address %s, want 127.0.0.1:40000-40999", transport, got)
		}
		relay.Close()
	}

	if err := n.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if c, err := net.DialTimeout("tcp", a.HTTP, time.Second); err == nil {
		c.Close()
		t.Errorf("something still listens on %s after Stop", a.HTTP)
	}
}

// TestNodeBindsBeforeBuilding: a port another node holds fails New with the
// bind error, and releases what it had taken (its state directory's lock).
func TestNodeBindsBeforeBuilding(t *testing.T) {
	first := nodetest.Start(t, nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret), node.Options{Logger: zerolog.Nop()})
	for name, mod := range map[string]func(cfg *config.Config){
		"http":     func(c *config.Config) { c.HTTP.Listen = first.Addrs.HTTP },
		"turn udp": func(c *config.Config) { c.TURN.Listen.UDP = first.Addrs.TURNUDP },
		"turn tcp": func(c *config.Config) { c.TURN.Listen.TCP = first.Addrs.TURNTCP },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
			mod(&cfg)
			auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{})
			if err != nil {
				t.Fatal(err)
			}
			opts := node.Options{Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(), Auth: auth}
			n, err := node.New(context.Background(), cfg, opts)
			if err == nil {
				n.Close()
				t.Fatal("New on a taken port: want an error")
			}
			if !strings.Contains(err.Error(), "address already in use") {
				t.Errorf("New on a taken port: %v, want address already in use", err)
			}
			// The state directory was released: a node on it starts.
			cfg = nodetest.Config(cfg.StateDir, testSecret)
			nodetest.Start(t, cfg, node.Options{Logger: zerolog.Nop()})
		})
	}
}

func first(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}

// allocate makes a UDP relay allocation over transport with pion's client;
// it is closed at cleanup.
func allocate(t *testing.T, transport, server, user, pass string) net.PacketConn {
	t.Helper()
	var conn net.PacketConn
	if transport == "udp" {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = pc
	} else {
		c, err := net.DialTimeout("tcp4", server, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	}
	t.Cleanup(func() { conn.Close() })
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: server, TURNServerAddr: server, Conn: conn,
		Username: user, Password: pass, LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	relay, err := client.AllocateWithContext(ctx)
	if err != nil {
		t.Fatalf("allocate over %s: %v", transport, err)
	}
	return relay
}

// TestNodeStoppedAtOnce: a node whose Run starts with its context already
// done stops cleanly, though its components are stopped while they start
// (the calls service loading its ringing calls).
func TestNodeStoppedAtOnce(t *testing.T) {
	for i := range 5 {
		cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
		auth, err := httpapi.NewAuthenticator(httpapi.AuthConfig{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := node.New(context.Background(), cfg, node.Options{Logger: zerolog.Nop(), Registry: prometheus.NewRegistry(), Auth: auth})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := errors.Join(n.Run(ctx), n.Close()); err != nil {
			t.Errorf("run %d: a node stopped at once: %v, want nil", i, err)
		}
	}
}

// TestNodeReadyLineNamesSetAddresses: the ready log line names the
// listeners and relay addresses that are set, and leaves out a listener
// turned off (TURN over TCP here) and the IPv6 relay address a node on
// 127.0.0.1 has none of — it printed "turn_tcp":[] and "relay_ipv6":"invalid IP".
func TestNodeReadyLineNamesSetAddresses(t *testing.T) {
	cfg := nodetest.Config(filepath.Join(t.TempDir(), "state"), testSecret)
	cfg.TURN.Listen.TCP = nil
	logs := &syncBuffer{}
	n := nodetest.Start(t, cfg, node.Options{Logger: zerolog.New(logs)})
	var ready map[string]any
	for _, line := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["message"] == "ready" {
			ready = m
		}
	}
	if ready == nil {
		t.Fatalf("no ready line in %s", logs.String())
	}
	for _, key := range []string{"turn_tcp", "turn_tls", "mux", "relay_ipv6"} {
		if v, ok := ready[key]; ok {
			t.Errorf("ready line has %s = %v; want it left out (not set)", key, v)
		}
	}
	if ready["http"] != n.Addrs.HTTP || ready["relay_ipv4"] != "127.0.0.1" || fmt.Sprint(ready["turn_udp"]) != fmt.Sprint([]any{first(n.Addrs.TURNUDP)}) {
		t.Errorf("ready line %v; want http %s, relay_ipv4 127.0.0.1, turn_udp [%s]", ready, n.Addrs.HTTP, first(n.Addrs.TURNUDP))
	}
}
