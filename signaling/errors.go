package signaling

import (
	"errors"
	"fmt"
)

// Errors callers branch on (the HTTP API maps them to status codes).
var (
	// ErrNotFound: no such conversation or call.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the ID exists already.
	ErrConflict = errors.New("already exists")
	// ErrForbidden: the user is not a participant, or not the party
	// allowed to do this.
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid: a request field is missing or malformed.
	ErrInvalid = errors.New("invalid request")
	// ErrRateLimited: too many calls initiated by this user.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: a dependency (the Matrix homeserver) did not answer.
	ErrUnavailable = errors.New("unavailable")
	// ErrMatrixRTCUnsupported: the conversation's calls resolve to
	// MatrixRTC and icebox's gateway (matrixrtc.gateway) is off, so icebox
	// cannot place them; a legacy m.call.invite would ring clients
	// (Element X) that cannot answer it.
	ErrMatrixRTCUnsupported = errors.New("matrixrtc calls need the gateway")
)

// TransitionError is a transition the call's state does not allow
// (answering an ended call, a second answer…). Code is stable, for clients.
type TransitionError struct {
	Code   string // e.g. "call_ended", "already_answered"
	Status Status // the call's status
	Msg    string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("%s: %s (call is %s)", e.Code, e.Msg, e.Status)
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

func forbiddenf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrForbidden, fmt.Sprintf(format, args...))
}

// ErrStoreUnavailable: the database did not answer (connection lost,
// server restarting, statement timeout); nothing was written, the request
// may be retried (the HTTP API answers 503 store_unavailable).
var ErrStoreUnavailable = errors.New("storage unavailable")
