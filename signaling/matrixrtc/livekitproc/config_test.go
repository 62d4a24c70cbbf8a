package livekitproc_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// TestWriteConfig: the file is private, names the key file (never the
// secret), and carries icebox's ports, node IP, webhook and TURN servers
// under livekit-server's own key names.
func TestWriteConfig(t *testing.T) {
	dir := t.TempDir()
	c := serverConfig(t, dir, "http://127.0.0.1:8080"+livekitproc.WebhookPath)
	c.Port, c.TCPPort, c.UDPMin, c.UDPMax = 7880, 7881, 50100, 50200
	c.NodeIP = netip.MustParseAddr("2001:db8::7")
	c.TURNServers = []livekitproc.TURNServer{{Host: "turn.example.org", Port: 3478, Protocol: "udp", SecretFile: "/var/lib/icebox/sfu-turn", TTL: 3600}}
	path := writeConfig(t, dir, c)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %04o, want 0600", fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), c.Keys.APISecret) {
		t.Error("the config file holds the API secret")
	}
	var got map[string]any
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"port":           7880,
		"bind_addresses": []any{"127.0.0.1"},
		"key_file":       c.Keys.File,
		"room":           map[string]any{"auto_create": false},
		"webhook":        map[string]any{"api_key": c.Keys.APIKey, "urls": []any{"http://127.0.0.1:8080/_icebox/livekit/webhook"}},
		"logging":        map[string]any{"level": "info", "json": true},
		"rtc": map[string]any{
			"tcp_port": 7881, "port_range_start": 50100, "port_range_end": 50200,
			"node_ip": "2001:db8::7", "use_external_ip": false,
			"turn_servers": []any{map[string]any{"host": "turn.example.org", "port": 3478, "protocol": "udp", "secret_file": "/var/lib/icebox/sfu-turn", "ttl": 3600}},
		},
	}
	if gb, wb := mustYAML(t, got), mustYAML(t, want); gb != wb {
		t.Errorf("config file:\n%s\nwant:\n%s", gb, wb)
	}

	bad := c
	bad.TURNServers = []livekitproc.TURNServer{{Host: "turn.example.org", Port: 3478, Protocol: "sctp"}}
	if err := livekitproc.WriteConfig(filepath.Join(dir, "bad.yaml"), bad); err == nil || !strings.Contains(err.Error(), "turn server 0") {
		t.Errorf("a TURN server with protocol sctp: %v", err)
	}
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestLogRedacts: whatever the child prints, a Redact string never reaches
// the log; JSON lines stay JSON, others are text.
func TestLogRedacts(t *testing.T) {
	const secret = "a-secret-the-child-should-never-print-0123"
	dir := t.TempDir()
	script := filepath.Join(dir, "child.sh")
	// The third line is longer than the 16 KiB logged of a line, and the
	// secret straddles the cut: its first 10 bytes are in the part logged.
	body := "#!/bin/sh\necho '{\"msg\":\"key " + secret + "\"}'\necho 'plain " + secret + " text'\n" +
		"printf '%s' \"$(head -c 16374 /dev/zero | tr '\\0' a)\"; echo '" + secret + "'\nexec sleep 60\n"
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	log := &logBuffer{}
	sup, err := livekitproc.NewSupervisor(livekitproc.SupervisorConfig{
		Binary: script, ConfigPath: filepath.Join(dir, "unused.yaml"), HealthURL: "http://127.0.0.1:9/",
		Redact: []string{secret}, StopTimeout: 2 * time.Second, Logger: zerolog.New(log).Level(zerolog.DebugLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sup.Run(context.Background()) }()
	waitFor(t, 10*time.Second, "the child's lines logged", func() bool {
		return strings.Count(log.String(), `"message":"livekit-server"`) >= 3
	})
	if err := sup.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
	out := log.String()
	if strings.Contains(out, secret[:10]) {
		t.Errorf("the secret is in the log:\n%s", out)
	}
	if !strings.Contains(out, `"livekit":{"msg":"key [redacted]"}`) || !strings.Contains(out, `"line":"plain [redacted] text"`) {
		t.Errorf("log:\n%s", out)
	}
}
