package authservice

import (
	"errors"
	"net/http"
)

// matrixError is an answer in Matrix's error shape ({errcode, error}), with
// lk-jwt-service's status codes and texts so clients react the same.
type matrixError struct {
	status  int
	errcode string
	msg     string
	reason  string // metric label: one of the refusal reasons below
}

func (e *matrixError) Error() string { return e.msg }

// Refusal reasons, the only values of the reason label.
const (
	reasonNotJSON       = "not_json"
	reasonBadRequest    = "bad_request"
	reasonInvalidToken  = "invalid_token"
	reasonUnreachable   = "homeserver_unreachable"
	reasonForeignUser   = "foreign_user"
	reasonUserMismatch  = "user_mismatch"
	reasonRoomCreate    = "room_create_failed"
	reasonInternal      = "internal"
	reasonBadHomeserver = "bad_response"
	reasonMethod        = "method_not_allowed"
	reasonBusy          = "busy" // too many verifications in flight (503)
	// matrixrtc.require_joined
	reasonNotJoined         = "not_joined"         // the user is not joined to the room (401)
	reasonMembershipUnknown = "membership_unknown" // icebox's Matrix user is not in the room (401)
	reasonMembershipFailed  = "membership_failed"  // the homeserver could not be asked (503)
)

var allReasons = []string{reasonNotJSON, reasonBadRequest, reasonInvalidToken, reasonUnreachable, reasonForeignUser,
	reasonUserMismatch, reasonRoomCreate, reasonInternal, reasonBadHomeserver, reasonMethod, reasonBusy,
	reasonNotJoined, reasonMembershipUnknown, reasonMembershipFailed}

func badJSON(msg string) *matrixError {
	return &matrixError{status: http.StatusBadRequest, errcode: "M_BAD_JSON", msg: msg, reason: reasonBadRequest}
}

var errNotJSON = &matrixError{status: http.StatusBadRequest, errcode: "M_NOT_JSON", msg: "Error reading request", reason: reasonNotJSON}

// unauthorized is lk-jwt-service's one answer to every verification
// failure, including a homeserver it cannot reach; reason tells them apart
// in metrics and logs only.
func unauthorized(reason string) *matrixError {
	return &matrixError{status: http.StatusUnauthorized, errcode: "M_UNAUTHORIZED", msg: "The request could not be authorised.", reason: reason}
}

// Verification failures (Verifier.Verify); the handler maps them to 401.
var (
	errUnreachable  = errors.New("homeserver unreachable")
	errInvalidToken = errors.New("openid token refused by the homeserver")
	errBadResponse  = errors.New("homeserver answered something that is not userinfo")
	errForeignUser  = errors.New("userinfo names a user of another server")
	errBusy         = errors.New("too many verifications in flight")
	errDeniedAddr   = errors.New("homeserver address refused by the peer policy")
)
