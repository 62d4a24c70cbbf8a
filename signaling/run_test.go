package signaling_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/store"
)

// cancelOnLoad is a real store whose RingingCalls first cancels Run's
// context: Run is stopped while it loads the ringing calls.
type cancelOnLoad struct {
	*store.Store
	cancel context.CancelFunc
}

func (s cancelOnLoad) RingingCalls(ctx context.Context) ([]signaling.Call, error) {
	s.cancel()
	return s.Store.RingingCalls(ctx)
}

// TestRunStoppedWhileStarting: Run returns nil when its context ends before
// or while it loads the ringing calls (a node stopped right after it
// started stopped cleanly), and still reports a store that fails.
func TestRunStoppedWhileStarting(t *testing.T) {
	openStore := func(t *testing.T) *store.Store {
		st, err := store.Open(t.TempDir(), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	run := func(t *testing.T, st signaling.Store, ctx context.Context) error {
		svc, err := signaling.NewService(signaling.ServiceConfig{Store: st, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
			return nil
		}
	}

	t.Run("cancelled before Run", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := run(t, openStore(t), ctx); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("cancelled while loading ringing calls", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := run(t, cancelOnLoad{Store: openStore(t), cancel: cancel}, ctx); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("store fails", func(t *testing.T) {
		st := openStore(t)
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err := run(t, st, ctx)
		if err == nil || !strings.HasPrefix(err.Error(), "signaling: load ringing calls: ") {
			t.Errorf("got %v, want the error of loading ringing calls", err)
		}
	})
}
