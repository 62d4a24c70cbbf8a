package main

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node/nodetest"
)

// The ports written into an in-process node's config file. The file must
// pass validation (which wants a real port) and is what `icebox creds
// --config` reads; the node itself binds port 0 instead (inProcessPorts).
const (
	fileTURNPort = "3478"
	fileTLSPort  = "5349"
	fileHTTPPort = "8080"
)

// startIcebox starts icebox in-process, as `icebox serve --config` would
// with the extra environment variables env ("KEY=value"), but with every
// listener on port 0: no port is hunted, none can be taken meanwhile. It
// returns when the node serves; at cleanup the node is stopped as by
// SIGTERM and must stop cleanly; if the test failed its log is shown.
//
// The config file is written (with placeholder ports, see fileTURNPort) for
// commands the test runs against it, such as `icebox creds`.
func startIcebox(t *testing.T, cfgYAML string, env ...string) *instance {
	t.Helper()
	in := &instance{cfgPath: filepath.Join(t.TempDir(), "icebox.yaml")}
	file := strings.NewReplacer(phTURNPort, fileTURNPort, phTLSPort, fileTLSPort, phHTTPPort, fileHTTPPort).Replace(cfgYAML)
	if err := os.WriteFile(in.cfgPath, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(iceboxEnv(), env...)
	cfg, _, err := loadConfig(in.cfgPath, env)
	if err != nil {
		t.Fatalf("start icebox in-process: %v", err)
	}
	inProcessPorts(&cfg)
	logs := &syncBuffer{}
	// Registered before the node's own cleanup, so it runs after the stop.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("icebox node (config %s) log:\n%s", in.cfgPath, logs.String())
		}
	})
	log, logLevel := newLogger(cfg.Log, logs)
	opts, err := nodeOptions(newSignals(context.Background()), cfg, serveEnv{configPath: in.cfgPath, env: env, logLevel: logLevel}, log)
	if err != nil {
		t.Fatalf("start icebox in-process: %v", err)
	}
	in.node = nodetest.Start(t, cfg, opts)
	a := in.node.Addrs
	in.turnPort, in.turnTCPPort = nodetest.Port(first(a.TURNUDP)), nodetest.Port(first(a.TURNTCP))
	in.tlsPort, in.httpPort = nodetest.Port(first(a.TURNTLS)), nodetest.Port(a.HTTP)
	return in
}

// inProcessPorts moves every listener of cfg to port 0.
func inProcessPorts(cfg *config.Config) {
	zero := func(addrs []string) {
		for i, a := range addrs {
			if host, _, err := net.SplitHostPort(a); err == nil {
				addrs[i] = net.JoinHostPort(host, "0")
			}
		}
	}
	zero(cfg.TURN.Listen.UDP)
	zero(cfg.TURN.Listen.TCP)
	zero(cfg.TURN.Listen.TLS)
	http := []string{cfg.HTTP.Listen}
	zero(http)
	cfg.HTTP.Listen = http[0]
}

func first(l []string) string {
	if len(l) == 0 {
		return ""
	}
	return l[0]
}
