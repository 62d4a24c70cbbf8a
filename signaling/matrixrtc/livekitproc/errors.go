package livekitproc

import "errors"

var (
	errNotFound    = errors.New("livekitproc: livekit-server not found")
	errNotReady    = errors.New("livekitproc: livekit-server is not running")
	errStarting    = errors.New("livekitproc: livekit-server is starting")
	errKeysDamaged = errors.New("livekitproc: key file damaged")
	errRestart     = errors.New("livekitproc: restart requested")
)
