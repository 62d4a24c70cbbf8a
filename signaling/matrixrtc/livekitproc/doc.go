// Package livekitproc runs the LiveKit SFU for matrixrtc.livekit.mode:
// managed — the real livekit-server (Version, built by
// scripts/install-livekit.sh), never an SFU of icebox's own. It owns:
//
//   - the API key and secret, generated once into the state directory in
//     LiveKit's key-file format (0600) and kept across restarts (LoadKeys);
//   - livekit-server's config file, written from icebox's configuration
//     (WriteConfig): ports, node IP, media port range, the webhook back to
//     icebox, log level, and the TURN servers LiveKit hands its clients;
//   - the child process (Supervisor): started in its own process group,
//     killed with icebox (Pdeathsig on Linux), its output logged at debug
//     with secrets removed, ready once its HTTP port answers, restarted with
//     bounded exponential backoff when it dies, stopped on shutdown
//     (SIGTERM, a second one that makes LiveKit stop waiting for
//     participants, then SIGKILL);
//   - the webhook receiver (Webhook): events signed the way LiveKit signs
//     them, checked with livekit/protocol's webhook package, turned into
//     room and participant gauges.
//
// It never logs the secret, a JWT or a webhook's token.
package livekitproc
