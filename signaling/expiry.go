package signaling

import (
	"context"
	"sync"
	"time"
)

// inviteTimers holds the expiry timer of each ringing call. Once closed it
// arms no more, and wait returns when the callbacks in flight are done.
type inviteTimers struct {
	mu     sync.Mutex
	timers map[string]*time.Timer
	closed bool
	wg     sync.WaitGroup // expiry callbacks in flight
}

// arm (re)starts id's timer: fire runs after delay.
func (t *inviteTimers) arm(id string, delay time.Duration, fire func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if t.timers == nil {
		t.timers = make(map[string]*time.Timer)
	}
	if old, ok := t.timers[id]; ok {
		old.Stop()
	}
	t.timers[id] = time.AfterFunc(max(delay, 0), fire)
}

// stop cancels id's timer, if any.
func (t *inviteTimers) stop(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tm, ok := t.timers[id]; ok {
		tm.Stop()
		delete(t.timers, id)
	}
}

// fired forgets id's timer as its callback starts and counts the callback
// in flight; the callback calls done when it ends. It is false, and the
// callback must not go on, once the timers are closed.
func (t *inviteTimers) fired(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	delete(t.timers, id)
	t.wg.Add(1)
	return true
}

func (t *inviteTimers) done() { t.wg.Done() }

// close stops every timer; later arm calls do nothing.
func (t *inviteTimers) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	for id, tm := range t.timers {
		tm.Stop()
		delete(t.timers, id)
	}
}

// wait waits for the callbacks in flight.
func (t *inviteTimers) wait() { t.wg.Wait() }

// count is how many invites are waiting to expire.
func (t *inviteTimers) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.timers)
}

// armExpiry expires c when its invite's lifetime has passed.
func (s *Service) armExpiry(c Call) {
	s.timers.arm(c.ID, c.InviteDeadline().Sub(s.cfg.Now()), func() { s.expire(c.ID) })
}

func (s *Service) stopExpiry(callID string) { s.timers.stop(callID) }

// expire ends callID's invite if it is still ringing past its lifetime.
func (s *Service) expire(callID string) {
	if !s.timers.fired(callID) {
		return
	}
	defer s.timers.done()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conv, err := s.conversationOfCall(ctx, callID)
	if err != nil {
		s.log.Error().Err(err).Str("call_id", callID).Msg("expiring an invite")
		return
	}
	var expired bool
	c, ev, err := s.commit(ctx, callID, func(c *Call) error {
		expired = applyExpire(c, s.cfg.Now().UTC(), s.cfg.CredentialTTL)
		return nil
	}, func(c Call) (Event, bool) {
		return endEvent(conv, c, EventCallHangup, "", ""), expired
	})
	switch {
	case err != nil:
		s.log.Error().Err(err).Str("call_id", callID).Msg("expiring an invite")
		return
	case !expired:
		if c.Status == StatusRinging { // not due yet (clock skew): look again later
			s.armExpiry(c)
		}
		return
	}
	s.ended(c, ev)
}
