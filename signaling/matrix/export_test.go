package matrix

import "time"

// Test hooks, visible to package matrix_test only.

// NewTestEncoder returns an Encoder with a fixed clock and no sender.
func NewTestEncoder(now func() time.Time) *Encoder { return &Encoder{now: now} }

// Timing shortens the sender's intervals (zero keeps a value). Call it
// before Run.
type Timing struct {
	Poll, MinBackoff, MaxBackoff time.Duration
	PermanentAttempts, PageSize  int
}

func SetTiming(b *Bridge, t Timing) {
	s := b.send
	if t.Poll != 0 {
		s.poll = t.Poll
	}
	if t.MinBackoff != 0 {
		s.minBackoff = t.MinBackoff
	}
	if t.MaxBackoff != 0 {
		s.maxBackoff = t.MaxBackoff
	}
	if t.PageSize != 0 {
		s.pageSize = t.PageSize
	}
	if t.PermanentAttempts != 0 {
		s.permanentAttempts = t.PermanentAttempts
	}
}

// Waiters counts the WaitInviteSent calls in progress.
func Waiters(b *Bridge) int { return b.waiters.len() }

// EncryptionUp reports whether Run brought end-to-end encryption up.
func EncryptionUp(b *Bridge) bool { return b.crypto.ready() }
