package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

// matrixRTCCommand is `icebox matrixrtc`.
func matrixRTCCommand(a *cli) *cobra.Command {
	var path, publicURL string
	wk := &cobra.Command{
		Use:   "well-known",
		Short: "print the .well-known/matrix/client fragment for Element Call",
		Long: `Prints the fragment of the homeserver's .well-known/matrix/client that points
Element Call and Element X at icebox's MatrixRTC authorization service:
livekit_service_url = matrixrtc.public_url (or --public-url) + matrixrtc.base_path.
Merge it into the JSON the homeserver's domain serves at
https://<server name>/.well-known/matrix/client.`,
		Example: "  icebox matrixrtc well-known --config /etc/icebox/icebox.yaml",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			return matrixRTCWellKnown(path, publicURL, a.stdout, a.stderr, a.env)
		},
	}
	configFlag(wk.Flags(), &path, "")
	wk.Flags().StringVar(&publicURL, "public-url", "", "where clients reach icebox's HTTP API, e.g. https://icebox.your.domain (default: matrixrtc.public_url)")
	return group("matrixrtc", "MatrixRTC (Element Call, Element X) helpers",
		"Helpers for icebox's MatrixRTC authorization service (Element Call, Element X).", wk)
}

// matrixRTCWellKnown is `icebox matrixrtc well-known`.
func matrixRTCWellKnown(path, publicURL string, stdout, stderr io.Writer, env []string) error {
	cfg, used, err := loadConfig(path, env)
	if err != nil {
		return err
	}
	m := cfg.MatrixRTC
	if !m.Enabled {
		return usagef("matrixrtc well-known: matrixrtc.enabled is false in %s: turn the service on first (see docs/deploy.md, Element Call / Element X)", used)
	}
	if publicURL != "" {
		if err := config.CheckPublicURL(publicURL); err != nil {
			return usagef("matrixrtc well-known: --public-url: %v", err)
		}
		m.PublicURL = publicURL
	}
	serviceURL := m.ServiceURL()
	if serviceURL == "" {
		return usagef("matrixrtc well-known: the public URL of icebox's HTTP API is not known: set matrixrtc.public_url in %s (e.g. https://icebox.your.domain) or give --public-url", used)
	}
	if strings.HasPrefix(serviceURL, "http://") {
		// Element Call runs in browsers on https pages, which refuse to
		// call an http:// service (mixed content).
		fmt.Fprintf(stderr, "warning: %s is not https: Element Call and Element X need https in production\n", serviceURL)
	}
	_, err = stdout.Write(authservice.WellKnownClient(serviceURL))
	return err
}
