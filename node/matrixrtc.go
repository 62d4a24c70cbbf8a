package node

import (
	"net/http"

	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

// buildMatrixRTC builds the MatrixRTC authorization service when
// matrixrtc.enabled, as a mount of the HTTP API under matrixrtc.base_path.
func (n *Node) buildMatrixRTC() (map[string]http.Handler, error) {
	cfg := n.cfg.MatrixRTC
	if !cfg.Enabled {
		return nil, nil
	}
	secret, err := cfg.LiveKit.SecretValue()
	if err != nil {
		return nil, ConfigError{err}
	}
	svc, err := authservice.New(authservice.Config{
		LiveKitURL:            cfg.LiveKit.URL,
		APIKey:                cfg.LiveKit.APIKey,
		APISecret:             secret,
		FullAccessHomeservers: cfg.FullAccessHomeservers,
		HomeserverURLs:        cfg.HomeserverURLs,
		JWTLifetime:           cfg.JWTLifetime,
		VerifyTimeout:         cfg.VerifyTimeout,
		Registerer:            n.opts.Registry,
		Logger:                n.log,
	})
	if err != nil {
		return nil, ConfigError{err}
	}
	n.onClose(svc.Close)
	return map[string]http.Handler{cfg.BasePath: svc.Handler(cfg.BasePath)}, nil
}
