package main

import (
	"crypto/x509"
	"net"
	"strings"
	"time"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/probe"
)

// matrixRTCChecks says what `icebox check --config` tests of the MatrixRTC
// stack when matrixrtc.enabled: the service's /healthz through
// matrixrtc.public_url when set (the path clients take), else on the local
// HTTP listener; and matrixrtc.livekit.url with the configured key.
func matrixRTCChecks(cfg config.Config, roots *x509.CertPool, insecure bool, timeout time.Duration) (probe.MatrixRTC, error) {
	m := cfg.MatrixRTC
	secret, err := m.LiveKit.SecretValue()
	if err != nil {
		return probe.MatrixRTC{}, usageError{err}
	}
	c := probe.MatrixRTC{
		ServiceURL: m.ServiceURL(), ServiceWhere: "matrixrtc.public_url",
		LiveKitURL: m.LiveKit.URL, APIKey: m.LiveKit.APIKey, APISecret: secret,
		RootCAs: roots, Insecure: insecure, Timeout: timeout,
	}
	if c.ServiceURL == "" {
		c.ServiceURL, c.ServiceWhere = localHTTPBase(cfg.HTTP)+m.BasePath, "the local http.listen (set matrixrtc.public_url to test the public path)"
		// icebox's own listener on loopback: its certificate names the
		// public host, not the loopback address asked here.
		c.ServiceInsecure = true
	}
	return c, nil
}

// localHTTPBase is the URL of icebox's HTTP listener from this machine: a
// wildcard address is asked on loopback.
func localHTTPBase(h config.HTTP) string {
	host, port, err := net.SplitHostPort(h.Listen)
	if err != nil {
		host, port = h.Listen, "80"
	}
	switch strings.Trim(host, "[]") {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	scheme := "http://"
	if h.TLS.ACME || (h.TLS.CertFile != "" && h.TLS.KeyFile != "") {
		scheme = "https://"
	}
	return scheme + net.JoinHostPort(strings.Trim(host, "[]"), port)
}
