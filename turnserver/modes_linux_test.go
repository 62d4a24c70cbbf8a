//go:build linux

package turnserver

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/icebox-voip/icebox/internal/netbed"
)

// modeBedEnv names, inside the veth bed's relay namespace, the namespace
// of the clients and peers.
const modeBedEnv = "TURNSERVER_TEST_MODE_BED"

// forModes runs body in user space on loopback, then builds the veth bed
// (root; skipped outside CI without it, failed in CI) and runs this test
// binary again inside its relay namespace, where body runs in user space
// and with the kernel path required, at tc and at XDP: the program attaches to every
// interface of the namespace it runs in, which must not be the machine's.
func forModes(t *testing.T, body func(*testing.T, testMode)) {
	if other := os.Getenv(modeBedEnv); other != "" {
		ns := &netbed.NS{Name: other}
		for _, m := range []testMode{
			{name: "veth-user", in: ns.Do}, {name: "veth-kernel", kernel: true, in: ns.Do},
			{name: "veth-xdp", kernel: true, hooks: KernelModeXDP, in: ns.Do},
		} {
			t.Run(m.name, func(t *testing.T) { body(t, m) })
		}
		return
	}
	t.Run(loopbackMode.name, func(t *testing.T) { body(t, loopbackMode) })
	t.Run("veth", func(t *testing.T) { runInModeBed(t, strings.TrimSuffix(t.Name(), "/veth")) })
}

func runInModeBed(t *testing.T, test string) {
	nb := netbed.New(t)
	o, r := nb.Namespace("o"), nb.Namespace("r")
	netbed.Link(o, "vo", vethPeerIP+"/24", r, "vr", vethRelayIP+"/24")
	r.Run("ip", "link", "set", "lo", "up")
	xdpBed(t, r, []string{"vr"}, nsIf{o, "vo"})
	var pattern []string
	for _, part := range strings.Split(test, "/") {
		pattern = append(pattern, "^"+regexp.QuoteMeta(part)+"$")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := r.Command(ctx, os.Args[0], "-test.run="+strings.Join(pattern, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), modeBedEnv+"="+o.Name)
	out, err := cmd.CombinedOutput()
	res := string(out)
	for _, line := range strings.Split(res, "\n") {
		if strings.Contains(line, "_test.go:") {
			t.Log(strings.TrimSpace(line))
		}
	}
	for _, mode := range []string{"veth-user", "veth-kernel", "veth-xdp"} {
		if !strings.Contains(res, "--- PASS: "+test+"/"+mode+" ") {
			t.Errorf("%s did not pass in the bed", mode)
		}
	}
	if err != nil || t.Failed() {
		t.Fatalf("in the relay's namespace: %v\n%s", err, tailLines(res, 60))
	}
}
