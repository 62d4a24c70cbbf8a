package postgres

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/icebox-voip/icebox/signaling"
)

// Records is the call record codec (package store's store.Records): the
// same JSON record on every driver.
type Records interface {
	EncodeCall(signaling.Call) ([]byte, error)
	DecodeCall(id string, raw []byte) (signaling.Call, error)
}

// eventCallInvite is the event type whose sending gives a call its
// MatrixInviteEventID (CompleteOutbox).
const eventCallInvite = "m.call.invite"

// checkKey rejects IDs that cannot be keys, as package store does (the
// same messages whatever the driver).
func checkKey(what, id string) error {
	if id == "" {
		return fmt.Errorf("%w: %s is empty", signaling.ErrInvalid, what)
	}
	if strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: %s contains NUL", signaling.ErrInvalid, what)
	}
	return nil
}

// checkEntry rejects an outbox entry the worker could not send.
func checkEntry(e signaling.OutboxEntry) error {
	for _, f := range []struct{ what, v string }{
		{"call ID", e.CallID}, {"room ID", e.RoomID}, {"event type", e.EventType},
	} {
		if f.v == "" {
			return fmt.Errorf("%w: %s is empty", signaling.ErrInvalid, f.what)
		}
	}
	if c := bytes.TrimLeft(e.Content, " \t\r\n"); len(c) == 0 || c[0] != '{' || !json.Valid(c) {
		return fmt.Errorf("%w: %s content is not a JSON object", signaling.ErrInvalid, e.EventType)
	}
	return nil
}

// decode unmarshals a stored value; one that does not decode is ErrCorrupt.
func decode(what, key string, raw []byte, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: decode %s %q: %w", ErrCorrupt, what, key, err)
	}
	return nil
}

// encode marshals a value to store, without HTML escaping (as package
// store does: the bytes are the same on both drivers).
func encode(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
