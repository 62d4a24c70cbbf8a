package turnserver

import "errors"

var (
	errPeerDenied     = errors.New("turnserver: peer denied by policy")
	errQuota          = errors.New("turnserver: allocation quota reached")
	errNoIPv4Relay    = errors.New("turnserver: no IPv4 relay address configured")
	errNoIPv6Relay    = errors.New("turnserver: no IPv6 relay address configured")
	errPortOutOfRange = errors.New("turnserver: requested port outside the relay range")
	errNoRelayPort    = errors.New("turnserver: no free relay port")
	errNoListeners    = errors.New("turnserver: no listeners")
	errServerClosed   = errors.New("turnserver: server closed")
	errCallRevoked    = errors.New("turnserver: call revoked")
	errConnectNotTCP  = errors.New("turnserver: connect: not a TCP allocation")
	errConnectBusy    = errors.New("turnserver: connect: too many dials in flight")
	errScopedTCP      = errors.New("turnserver: allocate: an SFU credential gets no TCP relay")
)
