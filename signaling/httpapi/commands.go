package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"

	"github.com/icebox-voip/icebox/internal/crashpoint"
)

// The WebSocket face of the call operations (ops.go): a command is one JSON
// object, {"type":"<operation>","ref":…,"call_id":…} and the fields of the
// operation's request beside them.

// wsCommand is the envelope of a command sent over the WebSocket.
type wsCommand struct {
	Type   string `json:"type"`
	Ref    string `json:"ref,omitempty"`
	CallID string `json:"call_id,omitempty"`
	// IdempotencyKey makes a retry of the command safe (idempotency.go);
	// a pointer, so that an empty key is refused rather than ignored.
	IdempotencyKey *string `json:"idempotency_key,omitempty"`
}

// sentReply is the result of a replySent operation.
var sentReply = map[string]string{"status": "sent"}

// command runs a WebSocket command: the same operations as the REST
// routes, with the call ID in "call_id".
func (s *Server) command(ctx context.Context, user string, msg json.RawMessage) (any, error) {
	var env wsCommand
	if err := json.Unmarshal(msg, &env); err != nil {
		return nil, apiError(http.StatusBadRequest, "invalid_json", "invalid JSON")
	}
	op, ok := callOpsByName[env.Type]
	if !ok {
		return nil, unknownCommand()
	}
	if op.starts && s.cfg.Draining() {
		return nil, apiError(http.StatusServiceUnavailable, "draining", "this server is shutting down; retry on another")
	}
	key := ""
	if env.IdempotencyKey != nil {
		key = *env.IdempotencyKey
		if err := checkIdempotencyKey(key); err != nil {
			return nil, err
		}
	}
	decode := func(req any) error { return decodeCommand(msg, req) }
	call, _, err := s.runOp(ctx, op, user, env.CallID, key, decode)
	if err == nil {
		crashpoint.Hit("after-commit", op.name) // see restOp
	}
	switch {
	case err != nil:
		return nil, err
	case op.reply == replySent:
		return sentReply, nil
	case call == nil: // unreachable: every other kind returns its call
		return nil, errors.New("httpapi: operation " + op.name + " returned no call")
	}
	resp, err := s.callReply(op, user, *call)
	if err != nil {
		return nil, err
	}
	if op.reply == replyCall {
		// Kept as it was: these replies never carried the "matrix" block
		// that their REST twins do.
		return resp.callView, nil
	}
	return resp, nil
}

// decodeCommand decodes a command into req (a pointer to an operation's
// request struct) as strictly as decodeJSON decodes a REST body, the
// envelope's fields aside: into a struct that embeds the envelope and the
// request, as if declared struct{ wsCommand; Req }. Go cannot embed a type
// parameter, hence reflect; StructOf caches the type. The embedded field
// keeps the request type's name, which a type error's field path shows.
func decodeCommand(msg json.RawMessage, req any) error {
	rv := reflect.ValueOf(req).Elem()
	fields := []reflect.StructField{{Name: "WSCommand", Type: reflect.TypeFor[wsCommand](), Anonymous: true}}
	if rv.NumField() > 0 { // noRequest: the envelope alone
		fields = append(fields, reflect.StructField{Name: rv.Type().Name(), Type: rv.Type(), Anonymous: true})
	}
	both := reflect.New(reflect.StructOf(fields))
	if err := decodeJSON(msg, both.Interface()); err != nil {
		return err
	}
	if len(fields) > 1 {
		rv.Set(both.Elem().Field(1))
	}
	return nil
}
