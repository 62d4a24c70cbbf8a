package signaling

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Idempotent retries of the call operations. A client that sent a request
// and got no answer (the node died between the commit and the response,
// the connection broke) cannot tell whether it took effect; sending it
// again must not start a second call, ring the callee twice or queue a
// second Matrix event. So a request may carry a key, chosen by the client
// (REST: the Idempotency-Key header; WebSocket: "idempotency_key"), and the
// store records the key, the operation, a hash of the request and the
// call in the SAME transaction as the transition: either both are
// committed or neither is. A retry with the key finds the record and is
// answered from the call as it is now, without running the operation
// again.
//
// The record travels into the store transaction in the context, like
// TxEvents (txevents.go): the store interfaces' methods predate it, and a
// store method that commits a transition (CreateCallOutbox,
// UpdateCallOutbox, AppendOutbox) looks for it with IdempotencyFrom.

// IdempotencyTTL is how long a key is remembered. A client retries within
// seconds or minutes; a day covers a phone that was offline overnight
// (the IETF httpapi draft leaves the window to the server; 24 h is the
// common choice).
const IdempotencyTTL = 24 * time.Hour

// IdempotencyMaxPerUser bounds the keys kept per user: recording one more
// deletes that user's oldest. A user cannot grow the store without bound
// by sending new keys; at the initiate rate limit, a day of calls with a
// handful of keyed operations each stays well under it.
const IdempotencyMaxPerUser = 1000

// ErrIdempotencyReplay: the key was recorded by an earlier request that
// committed (found inside the transaction of a concurrent retry, which
// wrote nothing). The caller answers from the recorded call.
var ErrIdempotencyReplay = errors.New("idempotency key already used")

// IdempotencyRecord is what a key remembers.
type IdempotencyRecord struct {
	User      string    `json:"user"`
	Key       string    `json:"key"`
	Op        string    `json:"op"`   // the operation's name (initiate, answer…)
	Hash      string    `json:"hash"` // hex SHA-256 of the operation, call ID and request
	CallID    string    `json:"call_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// IdempotencyStore is the part of a store that keeps the records (package
// store, both drivers). Records are written by the transition methods of
// OutboxStore when the context carries a claim (WithIdempotency).
type IdempotencyStore interface {
	// IdempotencyRecord returns the record of user's key that has not
	// expired at now; ErrNotFound if there is none.
	IdempotencyRecord(ctx context.Context, user, key string, now time.Time) (IdempotencyRecord, error)
	// PruneIdempotency deletes up to limit records that expired before
	// now and returns how many it deleted.
	PruneIdempotency(ctx context.Context, now time.Time, limit int) (int, error)
}

// IdempotencyClaim is a record to write with the first transition of a
// request. The store calls Record inside its transaction (no record: the
// request has no key, or an earlier transition of the same request wrote
// it already) and Committed once that transaction committed.
type IdempotencyClaim struct {
	mu   sync.Mutex
	rec  IdempotencyRecord
	max  int
	done bool
}

type idempotencyKey struct{}

// WithIdempotency returns a context whose first committed transition also
// records rec (CallID, when empty, becomes the transition's call).
func WithIdempotency(ctx context.Context, rec IdempotencyRecord) context.Context {
	return WithIdempotencyBound(ctx, rec, IdempotencyMaxPerUser)
}

// WithIdempotencyBound is WithIdempotency keeping at most maxPerUser
// records of the user (the stores' tests use a small bound).
func WithIdempotencyBound(ctx context.Context, rec IdempotencyRecord, maxPerUser int) context.Context {
	return context.WithValue(ctx, idempotencyKey{}, &IdempotencyClaim{rec: rec, max: max(maxPerUser, 1)})
}

// IdempotencyFrom returns the claim ctx carries, or nil.
func IdempotencyFrom(ctx context.Context) *IdempotencyClaim {
	c, _ := ctx.Value(idempotencyKey{}).(*IdempotencyClaim)
	return c
}

// Record returns the record to write in a transition of callID, with the
// per-user bound, or ok false if there is none to write. A store calls it
// inside the transaction and, once that committed, calls Committed.
func (c *IdempotencyClaim) Record(callID string) (rec IdempotencyRecord, maxPerUser int, ok bool) {
	if c == nil {
		return IdempotencyRecord{}, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return IdempotencyRecord{}, 0, false
	}
	rec = c.rec
	if rec.CallID == "" {
		rec.CallID = callID
	}
	return rec, c.max, true
}

// Committed records that the transaction that wrote the record committed:
// a later transition of the same request writes no other.
func (c *IdempotencyClaim) Committed() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.done = true
	c.mu.Unlock()
}

// IdempotencyReplayError is the error a store returns when the record's key is taken by a
// record that has not expired: nothing was written.
func IdempotencyReplayError(user, key string) error {
	return fmt.Errorf("%w: key of user %q", ErrIdempotencyReplay, user)
}

// IdempotencyRecordOf returns user's record of key, ErrNotFound if there
// is none (or the store keeps none).
func (s *Service) IdempotencyRecordOf(ctx context.Context, user, key string) (IdempotencyRecord, error) {
	st, ok := s.cfg.Store.(IdempotencyStore)
	if !ok {
		return IdempotencyRecord{}, ErrNotFound
	}
	return st.IdempotencyRecord(ctx, user, key, s.cfg.Now())
}

// LockIdempotencyKey serialises this node's requests under one user's key
// and returns the unlock: a copy sent while the first still runs waits,
// then finds the first's record, instead of racing it past the check
// (where it could be refused by the initiate rate limit that the first
// already counted). Nodes sharing a database need no such lock: the
// second transaction waits on the first's record in the store. A key is
// printable ASCII, so the NUL keeps (user, key) pairs apart.
func (s *Service) LockIdempotencyKey(user, key string) (unlock func()) {
	return s.idemLocks.lock(user + "\x00" + key)
}

// NewIdempotencyRecord is the record of user's key for op, stamped now.
func (s *Service) NewIdempotencyRecord(user, key, op, hash, callID string) IdempotencyRecord {
	now := s.cfg.Now().UTC()
	return IdempotencyRecord{User: user, Key: key, Op: op, Hash: hash, CallID: callID,
		CreatedAt: now, ExpiresAt: now.Add(IdempotencyTTL)}
}

// pruneIdempotency deletes expired idempotency records, in bounded
// batches, as prune (sweep.go) deletes ended calls.
func (s *Service) pruneIdempotency(ctx context.Context) {
	st, ok := s.cfg.Store.(IdempotencyStore)
	if !ok {
		return
	}
	now := s.cfg.Now()
	total := 0
	for ctx.Err() == nil {
		n, err := st.PruneIdempotency(ctx, now, pruneBatch)
		total += n
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error().Err(err).Msg("pruning expired idempotency keys")
			}
			break
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		s.log.Debug().Int("pruned", total).Msg("deleted expired idempotency keys")
	}
}
