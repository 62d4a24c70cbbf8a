package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/icebox-voip/icebox/node"
)

// notifier speaks systemd's notify protocol (sd_notify(3)): datagrams of
// "KEY=VALUE" lines to the unix socket named by $NOTIFY_SOCKET. Without
// that variable (not under systemd, or Docker) every call is a no-op.
type notifier struct {
	addr     *net.UnixAddr
	watchdog time.Duration // 0 = no watchdog requested
}

var _ node.Notifier = (*notifier)(nil)

// newNotifier reads the systemd environment from env ("K=V" entries).
func newNotifier(env []string) (*notifier, error) {
	n := &notifier{}
	var socket, usec, pid string
	for _, kv := range env {
		k, v, _ := cut(kv)
		switch k {
		case "NOTIFY_SOCKET":
			socket = v
		case "WATCHDOG_USEC":
			usec = v
		case "WATCHDOG_PID":
			pid = v
		}
	}
	if socket == "" {
		return n, nil
	}
	if socket[0] == '@' { // abstract namespace
		socket = "\x00" + socket[1:]
	}
	n.addr = &net.UnixAddr{Name: socket, Net: "unixgram"}
	// The watchdog is for us only if WATCHDOG_PID is unset or names us.
	if usec != "" && (pid == "" || pid == strconv.Itoa(os.Getpid())) {
		us, err := strconv.ParseInt(usec, 10, 64)
		if err != nil || us <= 0 {
			return nil, fmt.Errorf("sdnotify: bad WATCHDOG_USEC %q", usec)
		}
		n.watchdog = time.Duration(us) * time.Microsecond
	}
	return n, nil
}

func cut(kv string) (k, v string, ok bool) {
	for i := 0; i < len(kv); i++ {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

// Notify sends one state message, e.g. "READY=1".
func (n *notifier) Notify(state string) error {
	if n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	_, werr := conn.Write([]byte(state))
	return errors.Join(werr, conn.Close())
}

// RunWatchdog pings the watchdog at half its interval until ctx is done;
// healthy is asked before each ping, so a stuck process stops pinging and
// systemd restarts it.
func (n *notifier) RunWatchdog(ctx context.Context, healthy func() bool) error { //nolint:unparam // an errgroup member
	if n.addr == nil || n.watchdog == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if !healthy() {
				continue
			}
			// A failed ping is systemd's to judge (it restarts us when
			// pings stop); it must not end the process by itself.
			_ = n.Notify("WATCHDOG=1")
		}
	}
}
