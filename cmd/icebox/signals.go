package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// signals turns process signals into what serve needs: the first SIGTERM or
// SIGINT starts a graceful drain (ctx is cancelled), a second one forces
// the exit (force is closed), SIGHUP asks for a reload.
type signals struct {
	ctx    context.Context // cancelled by the first SIGTERM/SIGINT
	force  <-chan struct{} // closed by the second
	reload <-chan struct{} // one value per SIGHUP (coalesced)
	stop   func()
}

func watchSignals() *signals {
	ctx, cancel := context.WithCancel(context.Background())
	force := make(chan struct{})
	reload := make(chan struct{}, 1)
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		terms := 0
		for {
			select {
			case <-done:
				return
			case s := <-ch:
				if s == syscall.SIGHUP {
					select {
					case reload <- struct{}{}:
					default: // one pending reload is enough
					}
					continue
				}
				terms++
				switch terms {
				case 1:
					cancel()
				case 2:
					close(force)
				}
			}
		}
	}()
	return &signals{ctx: ctx, force: force, reload: reload, stop: func() {
		signal.Stop(ch)
		close(done)
		cancel()
	}}
}

// newSignals returns signals driven by a context alone (tests, embedding):
// cancelling ctx drains, and nothing forces or reloads.
func newSignals(ctx context.Context) *signals {
	return &signals{ctx: ctx, force: make(chan struct{}), reload: make(chan struct{}), stop: func() {}}
}
