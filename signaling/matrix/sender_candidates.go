package matrix

import (
	"encoding/json"
	"time"

	"github.com/icebox-voip/icebox/signaling"
)

// Candidates batching: ICE candidates trickle in one outbox entry at a
// time; the sender sends a burst of them as one m.call.candidates event.

// batch merges the m.call.candidates entries at the head of q that follow
// each other with the same party into one event of at most
// maxCandidatesPerEvent candidates. It holds them (hold non-zero: until
// then) while the first is younger than the batch window, unless a later
// entry of the call is already there or the event is full.
//
// An entry that failed before is merged only with the entries it was
// merged with then (same Attempts and NextAttempt): the retry must carry
// the same transaction ID with the same candidates, or the homeserver,
// deduplicating by transaction ID, would swallow the new ones.
func (s *sender) batch(q []signaling.OutboxEntry, now time.Time) (group []signaling.OutboxEntry, content json.RawMessage, hold time.Time) {
	first := q[0]
	var fc wireCandidates
	if json.Unmarshal(first.Content, &fc) != nil {
		return q[:1], first.Content, time.Time{} // sent as stored; the homeserver judges it
	}
	merged := fc.Candidates
	n, full := 1, len(merged) >= maxCandidatesPerEvent
	for ; n < len(q) && !full; n++ {
		e := q[n]
		if e.EventType != TypeCandidates || e.RoomID != first.RoomID || e.Attempts != first.Attempts ||
			!e.NextAttempt.Equal(first.NextAttempt) {
			break
		}
		var ec wireCandidates
		if json.Unmarshal(e.Content, &ec) != nil || ec.callBase != fc.callBase {
			break
		}
		if len(merged)+len(ec.Candidates) > maxCandidatesPerEvent {
			full = true
			break
		}
		merged = append(merged[:len(merged):len(merged)], ec.Candidates...)
		full = len(merged) >= maxCandidatesPerEvent
	}
	if n == len(q) && !full && first.Attempts == 0 {
		if until := first.CreatedAt.Add(s.batchWindow); now.Before(until) {
			return nil, nil, until
		}
	}
	if n == 1 {
		return q[:1], first.Content, time.Time{}
	}
	raw, err := json.Marshal(wireCandidates{callBase: fc.callBase, Candidates: merged})
	if err != nil { // cannot happen: merged holds valid JSON values
		return q[:1], first.Content, time.Time{}
	}
	return q[:n], raw, time.Time{}
}

// countCandidates counts real candidates, not end-of-candidates markers.
func countCandidates(content json.RawMessage) int {
	var c candidatesContent
	if json.Unmarshal(content, &c) != nil {
		return 0
	}
	n := 0
	for _, cand := range c.Candidates {
		if cand.Candidate != "" {
			n++
		}
	}
	return n
}
