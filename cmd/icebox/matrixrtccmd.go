package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/signaling/matrixrtc/authservice"
)

const matrixRTCUsage = `usage: icebox matrixrtc well-known [--config FILE] [--public-url URL]

Prints the fragment of the homeserver's .well-known/matrix/client that points
Element Call and Element X at icebox's MatrixRTC authorization service:
livekit_service_url = matrixrtc.public_url (or --public-url) + matrixrtc.base_path.
Merge it into the JSON the homeserver's domain serves at
https://<server name>/.well-known/matrix/client.

flags:
`

// matrixRTCCmd is `icebox matrixrtc`.
func matrixRTCCmd(args []string, stdout, stderr io.Writer, env []string) error {
	if len(args) > 0 && isHelp(args[0]) {
		_, err := io.WriteString(stdout, matrixRTCUsage)
		return err
	}
	if len(args) == 0 || args[0] != "well-known" {
		_, _ = io.WriteString(stderr, matrixRTCUsage)
		if len(args) == 0 {
			return usagef("matrixrtc: want a subcommand: well-known")
		}
		return usagef("matrixrtc: unknown subcommand %q", args[0])
	}
	fs := newFlagSet("matrixrtc well-known", "", stdout, stderr)
	fs.Usage = func() {
		_, _ = io.WriteString(fs.Output(), matrixRTCUsage)
		fs.PrintDefaults()
	}
	path := fs.String("config", "", "configuration file (default "+defaultConfigPath+" if it exists)")
	publicURL := fs.String("public-url", "", "where clients reach icebox's HTTP API, e.g. https://icebox.your.domain (default: matrixrtc.public_url)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, used, err := loadConfig(*path, env)
	if err != nil {
		return err
	}
	m := cfg.MatrixRTC
	if !m.Enabled {
		return usagef("matrixrtc well-known: matrixrtc.enabled is false in %s: turn the service on first (see docs/deploy.md, Element Call / Element X)", used)
	}
	if *publicURL != "" {
		if err := config.CheckPublicURL(*publicURL); err != nil {
			return usagef("matrixrtc well-known: --public-url: %v", err)
		}
		m.PublicURL = *publicURL
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
