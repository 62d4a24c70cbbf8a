package livekitproc_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/livekitproc"
)

// TestRecovery: rooms are recreated once, in order, bounded by MaxRooms
// (the rest skipped) and by Timeout (the rest failed); a failure is
// counted and logged; rooms not reached because the child stopped again
// wait for the next one. The real livekit-server's side is
// node's TestNodeManagedLiveKitRoomsRecreated.
func TestRecovery(t *testing.T) {
	reg := prometheus.NewRegistry()
	log := &logBuffer{}
	var (
		mu      sync.Mutex
		created []string
		create  func(ctx context.Context, room string) error // the current behaviour
	)
	r, err := livekitproc.NewRecovery(livekitproc.RecoveryConfig{
		Create: func(ctx context.Context, room string) error {
			mu.Lock()
			f := create
			mu.Unlock()
			if err := f(ctx, room); err != nil {
				return err
			}
			mu.Lock()
			created = append(created, room)
			mu.Unlock()
			return nil
		},
		MaxRooms: 3, Timeout: 200 * time.Millisecond, Registerer: reg, Logger: zerolog.New(log),
	})
	if err != nil {
		t.Fatal(err)
	}
	set := func(f func(ctx context.Context, room string) error) {
		mu.Lock()
		create, created = f, nil
		mu.Unlock()
	}
	result := func(l string) float64 {
		return metricValue(t, reg, "icebox_livekit_rooms_recreated_total", "result", l)
	}
	ok := func(context.Context, string) error { return nil }

	// Nothing remembered: nothing created.
	set(ok)
	r.Recreate(context.Background())
	if len(created) != 0 || result("recreated") != 0 {
		t.Fatalf("created %q with nothing remembered", created)
	}

	// Bounded: a, b, c kept (a duplicate counts once), d and e skipped.
	r.Remember([]string{"a", "b"})
	r.Remember([]string{"b", "c", "d", "e"})
	if got := result("skipped"); got != 2 {
		t.Errorf("skipped = %v, want 2", got)
	}
	set(func(_ context.Context, room string) error {
		if room == "b" {
			return errors.New("livekit room service refused: status 500")
		}
		return nil
	})
	r.Recreate(context.Background())
	if !slices.Equal(created, []string{"a", "c"}) || result("recreated") != 2 || result("failed") != 1 {
		t.Errorf("created %q, recreated %v, failed %v; want [a c], 2, 1", created, result("recreated"), result("failed"))
	}
	if !strings.Contains(log.String(), `"room":"b"`) || !strings.Contains(log.String(), `"recreated":2,"failed":1`) {
		t.Errorf("log: %s", log.String())
	}
	// Once only.
	set(ok)
	r.Recreate(context.Background())
	if len(created) != 0 {
		t.Errorf("recreated %q a second time", created)
	}

	// Timeout: a LiveKit that does not answer; every room fails in time.
	r.Remember([]string{"x", "y"})
	set(func(ctx context.Context, _ string) error { <-ctx.Done(); return ctx.Err() })
	r.Recreate(context.Background()) // returns: Timeout bounds it
	if got := result("failed"); got != 3 {
		t.Errorf("failed = %v after a timeout of two rooms, want 3", got)
	}

	// The child stops during the recreation: the rest wait for the next.
	r.Remember([]string{"p", "q"})
	ctx, cancel := context.WithCancel(context.Background())
	set(func(c context.Context, room string) error {
		if room == "p" {
			cancel() // the child died
			<-c.Done()
			return c.Err()
		}
		return nil
	})
	r.Recreate(ctx)
	set(ok)
	r.Recreate(context.Background())
	if !slices.Equal(created, []string{"p", "q"}) || result("failed") != 3 {
		t.Errorf("after an interrupted recreation the next child got %q (failed %v); want [p q] (3)", created, result("failed"))
	}

	if _, err := livekitproc.NewRecovery(livekitproc.RecoveryConfig{}); err == nil {
		t.Error("NewRecovery without Create succeeded")
	}
}
