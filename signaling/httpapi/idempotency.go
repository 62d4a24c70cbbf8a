package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/icebox-voip/icebox/signaling"
)

// Idempotent retries (signaling/callsidempotency.go): a call operation sent
// with a key, REST's Idempotency-Key header (the name of the IETF httpapi
// draft) or a command's "idempotency_key", is run at most once per user and
// key. The key's record is committed with the operation's transition; a
// retry that finds it is answered as the operation would answer now (the
// same status, the call's current view), without running it again. The
// same key with another request (another operation, call or body) is 422
// idempotency_key_reused: the client has a bug, and answering with the
// first request's result would hide it.

// headerIdempotencyKey is the request header; headerIdempotentReplayed
// marks a REST answer that came from a recorded key.
const (
	headerIdempotencyKey     = "Idempotency-Key"
	headerIdempotentReplayed = "Idempotent-Replayed"
	maxIdempotencyKey        = 255
)

// checkIdempotencyKey accepts 1-255 printable ASCII characters (the
// draft's key is a structured-field string, which holds just these).
func checkIdempotencyKey(key string) error {
	if key == "" || len(key) > maxIdempotencyKey {
		return invalidIdempotencyKey()
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return invalidIdempotencyKey()
		}
	}
	return nil
}

func invalidIdempotencyKey() *Error {
	return apiError(http.StatusBadRequest, "invalid_idempotency_key",
		fmt.Sprintf("an idempotency key is 1-%d printable ASCII characters", maxIdempotencyKey))
}

func idempotencyKeyReused() *Error {
	return apiError(http.StatusUnprocessableEntity, "idempotency_key_reused",
		"this idempotency key was used for another request (operation, call or body); use a new key for a new request")
}

// replayed is the error with which prepare stops an operation whose key
// has a record: the operation is not run; its answer is the record's.
type replayed struct{ rec signaling.IdempotencyRecord }

func (r *replayed) Error() string { return "httpapi: idempotency key already used" }

// idempotency is one request's key and what it learned.
type idempotency struct {
	calls             *signaling.Service
	user, key, callID string
	op                callOp
	hash              string
}

// requestHash is the hex SHA-256 of the operation, the call ID and the
// decoded request re-encoded: the same request hashes the same whether it
// came as a REST body or a command, whatever its spacing or field order.
func requestHash(op, callID string, req any) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", fmt.Errorf("httpapi: hash request: %w", err)
	}
	h := sha256.New()
	h.Write([]byte(op))
	h.Write([]byte{0})
	h.Write([]byte(callID))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// prepare runs after the request was decoded and before the operation: it
// answers a retry from its record (replayed), refuses a key reused for
// another request, and otherwise gives the operation a context whose
// transition records the key.
func (id *idempotency) prepare(ctx context.Context, req any) (context.Context, error) {
	hash, err := requestHash(id.op.name, id.callID, req)
	if err != nil {
		return nil, err
	}
	id.hash = hash
	rec, err := id.calls.IdempotencyRecordOf(ctx, id.user, id.key)
	switch {
	case errors.Is(err, signaling.ErrNotFound):
	case err != nil:
		return nil, err
	case rec.Hash != hash:
		return nil, idempotencyKeyReused()
	default:
		return nil, &replayed{rec: rec}
	}
	return signaling.WithIdempotency(ctx, id.calls.NewIdempotencyRecord(id.user, id.key, id.op.name, hash, id.callID)), nil
}

// runOp runs op for the request, under its key if it has one (key ""
// runs it as is). It returns the call to answer with (nil for replySent)
// and whether it came from an earlier request's record.
func (s *Server) runOp(ctx context.Context, op callOp, user, callID, key string, decode func(any) error) (*signaling.Call, bool, error) {
	if key == "" || op.body == bodyNone { // a read is idempotent as it is
		call, err := op.run(ctx, s.cfg.Calls, user, callID, opInput{decode: decode})
		return call, false, err
	}
	id := &idempotency{calls: s.cfg.Calls, user: user, key: key, callID: callID, op: op}
	unlock := s.cfg.Calls.LockIdempotencyKey(user, key)
	call, err := op.run(ctx, s.cfg.Calls, user, callID, opInput{decode: decode, prepare: id.prepare})
	unlock()
	var rp *replayed
	switch {
	case err == nil:
		return call, false, nil
	case errors.As(err, &rp):
	case errors.Is(err, signaling.ErrIdempotencyReplay):
		// A retry running at the same time committed first (its record
		// was found inside this one's transaction, which wrote nothing).
		rec, lerr := s.cfg.Calls.IdempotencyRecordOf(ctx, user, key)
		if lerr != nil {
			return nil, false, lerr
		}
		if rec.Hash != id.hash {
			return nil, false, idempotencyKeyReused()
		}
		rp = &replayed{rec: rec}
	default:
		return nil, false, err
	}
	// Rare, and a sign of nodes dying or connections breaking mid-request.
	// The key itself is the client's and stays out of the log.
	s.log.Info().Str("operation", op.name).Str("call_id", rp.rec.CallID).Str("user", user).
		Time("first_at", rp.rec.CreatedAt).Msg("retry answered from its idempotency key")
	if op.reply == replySent {
		return nil, true, nil
	}
	c, err := s.cfg.Calls.Get(ctx, user, rp.rec.CallID)
	if err != nil {
		return nil, false, err
	}
	return &c, true, nil
}
