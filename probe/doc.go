// Package probe checks a STUN/TURN server from the client's side, as
// `icebox check` does: STUN binding (the mapped address, NAT or not), then for
// TURN URLs authenticate, allocate, create a permission and relay a burst of
// packets relay to relay (a second allocation on the same server is the
// peer), measuring RTT and loss. It works against any TURN server (icebox,
// coturn, eturnal) and turns what goes wrong into a verdict with a hint:
// an unreachable or closed port, a TLS certificate that does not match,
// expired credentials or a server clock ahead of ours, a wrong secret, a peer
// policy that refuses relay to relay, and a relay address that is private
// while the server is reached on a public one (the NAT external-IP mistake).
//
// CheckMatrixRTC tests the MatrixRTC stack the same way: the authorization
// service's /healthz, and the LiveKit server (reachable, answering as
// livekit-server, accepting the API key and secret).
//
// It never reports a password, secret or token.
package probe
