package livekitproc_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// Environment of the helper process TestNoOrphan starts (this test binary
// again, running TestOrphanHelper).
const (
	envHelperConfig = "LIVEKITPROC_HELPER_CONFIG"
	envHelperHealth = "LIVEKITPROC_HELPER_HEALTH"
)

// TestNoOrphan: when the process running the supervisor is killed with
// SIGKILL (no cleanup runs), the kernel kills livekit-server too
// (Pdeathsig): no orphan is left listening on LiveKit's ports.
func TestNoOrphan(t *testing.T) {
	requireBinary(t)
	dir := t.TempDir()
	c := serverConfig(t, dir, "http://127.0.0.1:9/webhook")
	path := writeConfig(t, dir, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	helper := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestOrphanHelper$", "-test.count=1")
	helper.Env = append(os.Environ(), envHelperConfig+"="+path,
		envHelperHealth+"=http://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port))+"/")
	out, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = helper.Wait() }()
	var pid int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "LIVEKIT_PID %d", &pid); err == nil {
			break
		}
	}
	if pid == 0 {
		_ = helper.Process.Kill()
		t.Fatalf("the helper reported no livekit-server PID: %v", sc.Err())
	}
	t.Cleanup(func() {
		if !gone(pid) { // the failure below: do not leave it running
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if err := helper.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "livekit-server gone with the process that ran it", func() bool { return gone(pid) })
}

// TestOrphanHelper runs a supervisor for TestNoOrphan, prints the child's
// PID once it is ready, and waits to be killed. Outside that it skips.
func TestOrphanHelper(t *testing.T) {
	path := os.Getenv(envHelperConfig)
	if path == "" {
		t.Skip("helper of TestNoOrphan")
	}
	bin, err := livekitproc.FindBinary("")
	if err != nil {
		t.Fatal(err)
	}
	sup, err := livekitproc.NewSupervisor(livekitproc.SupervisorConfig{
		Binary: bin, ConfigPath: path, HealthURL: os.Getenv(envHelperHealth), Logger: zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = sup.Run(context.Background()) }()
	deadline := time.Now().Add(30 * time.Second)
	for sup.Ready() != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling a condition, with a deadline
	}
	fmt.Printf("LIVEKIT_PID %d\n", sup.State().PID)
	select {} // until TestNoOrphan kills this process
}
