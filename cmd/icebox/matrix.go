package main

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling"
	"github.com/icebox-voip/icebox/signaling/matrix"
	"github.com/icebox-voip/icebox/store"
)

// newBridge builds the Matrix VoIP bridge, or returns nil when Matrix (or
// VoIP over it) is off: icebox then works exactly as without it.
func newBridge(cfg config.Matrix, st *store.Store, pub signaling.Publisher, reg prometheus.Registerer, log zerolog.Logger) (*matrix.Bridge, error) {
	if !cfg.Enabled || !cfg.VoIP.Enabled {
		return nil, nil
	}
	token, err := cfg.Token()
	if err != nil {
		return nil, fmt.Errorf("matrix: %w", err)
	}
	return matrix.New(matrix.Config{
		HomeserverURL: cfg.HomeserverURL,
		UserID:        cfg.ServiceUser,
		AccessToken:   token,
		DeviceID:      cfg.DeviceID,
		Store:         st,
		Publisher:     pub,
		Logger:        log,
		Registerer:    reg,
	})
}
