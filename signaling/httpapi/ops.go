package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/icebox-voip/icebox/signaling"
)

// The call operations, in one table that both transports serve: a REST
// route (POST /calls/{id}/answer) and a WebSocket command
// ({"type":"answer","call_id":…}) decode the same request type, call the
// same service method and answer with the same view of the call. What
// differs is only the framing: REST takes the call ID from the path and
// the request from the body (calls.go); a command carries both in one JSON
// object beside its type and ref (commands.go).

// callOp is one call operation.
type callOp struct {
	name   string // the WebSocket command's type
	method string // the REST route
	path   string
	status int      // REST status on success (replySent: 204)
	body   bodyRule // REST: whether the request has a body
	starts bool     // starts a call: refused while the server drains
	reply  replyKind
	run    opFunc
}

// bodyRule says whether a REST request carries a body.
type bodyRule int

const (
	bodyRequired bodyRule = iota
	bodyOptional          // may be empty (reject, hangup: every field is optional)
	bodyNone              // not read (get)
)

// replyKind is what an operation answers.
type replyKind int

const (
	// replyCallICE: the call, with ICE servers whose credentials name it
	// (the caller and the answerer need them to connect).
	replyCallICE replyKind = iota
	// replyCall: the call.
	replyCall
	// replySent: nothing but success (the operation changes no call):
	// REST 204, WebSocket {"status":"sent"}.
	replySent
)

// opFunc runs an operation for the authenticated user on the call callID
// (empty for initiate). It returns the call the operation answers with,
// nil for replySent.
type opFunc func(ctx context.Context, calls *signaling.Service, user, callID string, in opInput) (*signaling.Call, error)

// opInput is how an operation gets its request.
type opInput struct {
	// decode fills a request (a pointer to the operation's request type)
	// from the transport's input.
	decode func(req any) error
	// prepare, if set, runs on the decoded request before the service
	// method, and gives the context it runs in (idempotency.go); its
	// error stops the operation.
	prepare func(ctx context.Context, req any) (context.Context, error)
}

// request decodes the request into req and prepares ctx for it.
func (in opInput) request(ctx context.Context, req any) (context.Context, error) {
	if err := in.decode(req); err != nil {
		return nil, err
	}
	if in.prepare == nil {
		return ctx, nil
	}
	return in.prepare(ctx, req)
}

// callOps are the call operations in the order the unknown_command error
// names them. GET /calls (list.go) is REST only: it pages, a command does not.
var callOps = []callOp{
	{name: "initiate", method: http.MethodPost, path: "/calls/initiate", status: http.StatusCreated, starts: true,
		reply: replyCallICE, run: callWith(initiate)},
	{name: "answer", method: http.MethodPost, path: "/calls/:id/answer", status: http.StatusOK,
		reply: replyCallICE, run: callWith((*signaling.Service).Answer)},
	{name: "candidates", method: http.MethodPost, path: "/calls/:id/candidates", status: http.StatusNoContent,
		reply: replySent, run: sentWith((*signaling.Service).Candidates)},
	{name: "select_answer", method: http.MethodPost, path: "/calls/:id/select_answer", status: http.StatusOK,
		reply: replyCall, run: callWith((*signaling.Service).SelectAnswer)},
	{name: "negotiate", method: http.MethodPost, path: "/calls/:id/negotiate", status: http.StatusNoContent,
		reply: replySent, run: sentWith((*signaling.Service).Negotiate)},
	{name: "metadata_changed", method: http.MethodPost, path: "/calls/:id/metadata_changed", status: http.StatusNoContent,
		reply: replySent, run: sentWith((*signaling.Service).MetadataChanged)},
	{name: "reject", method: http.MethodPost, path: "/calls/:id/reject", status: http.StatusOK, body: bodyOptional,
		reply: replyCall, run: callWith((*signaling.Service).Reject)},
	{name: "hangup", method: http.MethodPost, path: "/calls/:id/hangup", status: http.StatusOK, body: bodyOptional,
		reply: replyCall, run: callWith((*signaling.Service).Hangup)},
	{name: "get", method: http.MethodGet, path: "/calls/:id", status: http.StatusOK, body: bodyNone,
		reply: replyCall, run: callWith(get)},
}

// callOpsByName finds an operation by its command type.
var callOpsByName = func() map[string]callOp {
	m := make(map[string]callOp, len(callOps))
	for _, op := range callOps {
		m[op.name] = op
	}
	return m
}()

// unknownCommand is the error of a command type not in callOps.
func unknownCommand() *Error {
	names := make([]string, len(callOps))
	for i, op := range callOps {
		names[i] = op.name
	}
	return apiError(http.StatusBadRequest, "unknown_command", "type must be one of "+strings.Join(names, ", "))
}

// noRequest is the request of an operation that takes none (get).
type noRequest struct{}

// initiate and get give the service methods whose signature differs the
// shape of the others.
func initiate(calls *signaling.Service, ctx context.Context, user, _ string, req signaling.InitiateRequest) (signaling.Call, error) {
	return calls.Initiate(ctx, user, req)
}

func get(calls *signaling.Service, ctx context.Context, user, callID string, _ noRequest) (signaling.Call, error) {
	return calls.Get(ctx, user, callID)
}

// callWith makes an opFunc of a service method that answers with the call.
func callWith[Req any](method func(*signaling.Service, context.Context, string, string, Req) (signaling.Call, error)) opFunc {
	return func(ctx context.Context, calls *signaling.Service, user, callID string, in opInput) (*signaling.Call, error) {
		var req Req
		ctx, err := in.request(ctx, &req)
		if err != nil {
			return nil, err
		}
		c, err := method(calls, ctx, user, callID, req)
		if err != nil {
			return nil, err
		}
		return &c, nil
	}
}

// sentWith makes an opFunc of a service method that answers with nothing.
func sentWith[Req any](method func(*signaling.Service, context.Context, string, string, Req) error) opFunc {
	return func(ctx context.Context, calls *signaling.Service, user, callID string, in opInput) (*signaling.Call, error) {
		var req Req
		ctx, err := in.request(ctx, &req)
		if err != nil {
			return nil, err
		}
		return nil, method(calls, ctx, user, callID, req)
	}
}

// callReply is the reply of op with call for user: its view, with where
// its Matrix invite went, and for replyCallICE with per-call ICE servers
// while the call is live.
func (s *Server) callReply(op callOp, user string, call signaling.Call) (callResponse, error) {
	resp := callResponse{callView: viewOf(call), Matrix: matrixOf(call)}
	if op.reply == replyCallICE && !call.Status.Terminal() {
		servers, _, err := s.iceServers(user, call.ID)
		if err != nil {
			return callResponse{}, err
		}
		resp.ICEServers = servers
	}
	return resp, nil
}
