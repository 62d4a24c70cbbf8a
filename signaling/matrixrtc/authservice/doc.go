// Package authservice is icebox's MatrixRTC authorization service: the API
// Element Call and Element X ask for a LiveKit JWT, wire-compatible with
// Element's lk-jwt-service (POST /sfu/get, the MSC4195 POST /get_token,
// GET /healthz). It verifies the caller's Matrix OpenID token at the
// caller's own homeserver (/_matrix/federation/v1/openid/userinfo), derives
// the LiveKit room name and participant identity exactly as lk-jwt-service
// does, so that clients on either service land in the same LiveKit room, and
// signs the JWT with the configured LiveKit key. Users of the configured
// full-access homeservers also get the LiveKit room created for them.
//
// It lives under signaling/matrixrtc because everything MatrixRTC does so
// (DESIGN §10): the later gateway in signaling/matrixrtc joins the same
// LiveKit rooms and reuses RoomAlias and Identity from here. It imports
// nothing from the signaling domain: it is an HTTP handler that node mounts
// on the API listener under matrixrtc.base_path.
//
// Beyond lk-jwt-service, on the operator's choice: a short cache of
// successful verifications (by a hash of the token), and the policy that
// the user must be joined to the Matrix room (asked as icebox's own Matrix
// user, Membership).
//
// Not here (yet): delegated delayed leave (MSC4140; the delay_* fields are
// accepted and ignored), the managed livekit-server.
package authservice
