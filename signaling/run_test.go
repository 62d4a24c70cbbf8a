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
	newService := func(t *testing.T, st signaling.Store) *signaling.Service {
		svc, err := signaling.NewService(signaling.ServiceConfig{Store: st, Logger: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	run := func(t *testing.T, svc *signaling.Service, ctx context.Context) error {
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
		if err := run(t, newService(t, openStore(t)), ctx); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("cancelled while loading ringing calls", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := run(t, newService(t, cancelOnLoad{Store: openStore(t), cancel: cancel}), ctx); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	// A failed start stops the invite timers armed before it too.
	t.Run("store fails", func(t *testing.T) {
		st := openStore(t)
		svc := newService(t, st)
		ctx := context.Background()
		if _, err := svc.PutConversation(ctx, "conv1", []string{"alice", "bob"}, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Initiate(ctx, "alice", signaling.InitiateRequest{ConversationID: "conv1", SDPOffer: "v=0 offer"}); err != nil {
			t.Fatal(err)
		}
		if got := svc.ActiveTimers(); got != 1 {
			t.Fatalf("ActiveTimers after Initiate: got %d, want 1", got)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		err := run(t, svc, ctx)
		if err == nil || !strings.HasPrefix(err.Error(), "signaling: load ringing calls: ") {
			t.Errorf("got %v, want the error of loading ringing calls", err)
		}
		if got := svc.ActiveTimers(); got != 0 {
			t.Errorf("ActiveTimers after the failed Run: got %d, want 0", got)
		}
	})
}
