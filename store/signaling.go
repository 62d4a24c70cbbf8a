package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/icebox-voip/icebox/signaling"
)

// Store keeps the calls service's conversations, calls, revocations and
// Matrix outbox (conversations.go, calls.go, revocations.go, outbox.go). Every write is one
// db.Update, which fsyncs before it returns; db.Batch is not used because it
// may run a callback twice (UpdateCall's fn has side effects in its callers)
// and the service writes one call at a time, so there is nothing to batch.
var _ signaling.Store = (*Store)(nil)

// checkCtx returns ctx's error, prefixed with op, if ctx is done. bbolt
// cannot be interrupted once a transaction has started (a writer waiting for
// the file's single write lock waits), so this is checked before each one.
func checkCtx(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return nil
}

// checkKey rejects IDs that cannot be keys: bbolt refuses empty keys, and a
// NUL would make the calls_by_conversation prefix of one conversation match
// another's.
func checkKey(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", signaling.ErrInvalid, what)
	}
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %s contains NUL", signaling.ErrInvalid, what)
	}
	return nil
}

// decode unmarshals a stored value; a value that does not decode means the
// file is corrupt.
func decode(what string, key, raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: decode %s %q: %w", ErrCorrupt, what, key, err)
	}
	return nil
}

// encode marshals a value to store. HTML escaping is off: encoding/json
// would write each '<', '>' and '&' of an SDP or a Matrix event's content
// as a six-byte \u003c, so an SDP made of them took six times its size in
// the file (issue 13). The file is never served to a browser; decode reads
// both forms, so records written before stay readable.
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
