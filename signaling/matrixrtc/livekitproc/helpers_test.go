package livekitproc_test

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/icebox-voip/icebox/internal/syncbuf"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// requireBinary returns the installed livekit-server, or ends the test:
// a failure under CI=true (CI runs the install script first), a skip
// elsewhere saying what to run.
func requireBinary(t testing.TB) string {
	t.Helper()
	bin, err := livekitproc.FindBinary("")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%v; CI must run scripts/install-livekit.sh first (make test-deps)", err)
	}
	t.Skipf("%v", err)
	return ""
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serverConfig is a loopback livekit-server config in dir, with fresh keys,
// posting webhooks to webhookURL. Nothing listens beyond loopback: the
// signal port is on 127.0.0.1, ICE/TCP is off, and ICE/UDP ports are
// bound only for peer connections (none here).
func serverConfig(t testing.TB, dir, webhookURL string) livekitproc.ServerConfig {
	t.Helper()
	keys, err := livekitproc.LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	return livekitproc.ServerConfig{
		Bind:       netip.MustParseAddr("127.0.0.1"),
		Port:       freePort(t),
		NodeIP:     netip.MustParseAddr("127.0.0.1"),
		TCPPort:    0, // no ICE/TCP: LiveKit would listen on every interface
		UDPMin:     41000,
		UDPMax:     41099,
		Keys:       keys,
		WebhookURL: webhookURL,
		LogLevel:   "info",
	}
}

func writeConfig(t testing.TB, dir string, c livekitproc.ServerConfig) string {
	t.Helper()
	path := filepath.Join(dir, livekitproc.ConfigFile)
	if err := livekitproc.WriteConfig(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

// metricValue returns the value of the metric name whose labels include
// every pair in labels ("k", "v", ...), or -1 if there is none.
func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return -1
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
}

// logBuffer is a zerolog writer that tests read while goroutines write.
type logBuffer = syncbuf.Buffer
