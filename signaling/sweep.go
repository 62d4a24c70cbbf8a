package signaling

import (
	"context"
	"errors"
	"time"
)

// The sweeps Run starts: answered calls past MaxCallDuration are ended, and
// calls ended longer ago than CallRetention are deleted, with the
// revocations whose credentials have expired.

// ReasonCallTimeout is the end_reason of an answered call ended because it
// outlived ServiceConfig.MaxCallDuration.
const ReasonCallTimeout = "call_timeout"

// sweepInterval is the default ServiceConfig.SweepInterval.
var sweepInterval = 5 * time.Minute

// pruneBatch is how many ended calls one prune transaction deletes: a
// backlog is worked off in many short transactions, so bbolt's single
// writer is never held long away from live calls.
const pruneBatch = 200

// errNotDue aborts a sweep transition that no longer applies (the call is
// no longer answered, or not past its maximum duration): nothing is written.
var errNotDue = errors.New("signaling: call not due for the sweep")

// sweepLoop sweeps at once, then every SweepInterval until ctx is done.
func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		s.sweep(ctx)
		s.prune(ctx)
		s.pruneIdempotency(ctx) // callsidempotency.go
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep ends every answered call whose answer is older than
// MaxCallDuration: its clients are presumably gone, and its TURN
// credentials must not live on.
func (s *Service) sweep(ctx context.Context) {
	active, err := s.cfg.Store.ActiveCalls(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error().Err(err).Msg("sweeping answered calls")
		}
		return
	}
	for _, c := range active {
		if ctx.Err() != nil {
			return
		}
		if s.overdue(c, s.cfg.Now()) {
			s.timeout(c.ID)
		}
		// An invite past its lifetime that is still ringing had its
		// timer on a node that is gone (several nodes on one database)
		// or lost it: expire it now. Nodes racing on it make one
		// transition (each one's expire is conditional, under the
		// call's lock).
		if c.Status == StatusRinging && !s.cfg.Now().Before(c.InviteDeadline()) {
			s.armExpiry(c)
		}
	}
}

// prune deletes the calls that ended more than CallRetention ago, one
// bounded batch per transaction, until none is left or ctx is done.
func (s *Service) prune(ctx context.Context) {
	before := s.cfg.Now().Add(-s.cfg.CallRetention)
	total := 0
	for ctx.Err() == nil {
		n, err := s.cfg.Store.PruneEndedCalls(ctx, before, pruneBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error().Err(err).Msg("pruning ended calls")
			}
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		s.log.Info().Int("pruned", total).Dur("retention", s.cfg.CallRetention).Msg("deleted calls that ended before the retention period")
	}
	// Revocations outlive their calls until the credentials would have
	// expired; Revocations deletes the expired ones. Without this they
	// were only pruned at start-up, one left behind per call ended.
	if _, err := s.cfg.Store.Revocations(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
		s.log.Error().Err(err).Msg("pruning expired revocations")
	}
}

// overdue reports whether c is answered and was answered more than
// MaxCallDuration before now (CreatedAt stands in for a missing AnsweredAt).
func (s *Service) overdue(c Call, now time.Time) bool {
	if c.Status != StatusAnswered {
		return false
	}
	since := c.CreatedAt
	if c.AnsweredAt != nil {
		since = *c.AnsweredAt
	}
	return now.Sub(since) > s.cfg.MaxCallDuration
}

// timeout ends one answered call past MaxCallDuration, as expire does for
// invites. Its own context lets a sweep in progress finish its call when
// Run stops.
func (s *Service) timeout(callID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		s.log.Error().Err(err).Str("call_id", callID).Msg("ending a call past its maximum duration")
		return
	}
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		now := s.cfg.Now().UTC()
		if !s.overdue(*c, now) {
			return errNotDue
		}
		end(c, StatusEnded, ReasonCallTimeout, "", now, s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		return endEvent(conv, c, EventCallHangup, "", ""), true
	})
	switch {
	case errors.Is(err, errNotDue):
		return
	case err != nil:
		s.log.Error().Err(err).Str("call_id", callID).Msg("ending a call past its maximum duration")
		return
	}
	s.log.Info().Str("call_id", c.ID).Dur("max_call_duration", s.cfg.MaxCallDuration).
		Msg("ending an answered call past its maximum duration")
	s.ended(c, ev)
}
