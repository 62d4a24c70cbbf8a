// Package tlsreload serves a TLS certificate that can be replaced while
// connections stay up: the files are polled for changes, and reloaded on
// demand (SIGHUP); a pair that fails to load leaves the current one serving.
package tlsreload

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// pollInterval is how often certificate files are checked for changes:
// ACME clients replace them every few weeks, so seconds of delay are fine
// and polling needs no inotify (which containers and NFS do not always give).
const pollInterval = 5 * time.Second

// Reloader serves a TLS certificate that can be replaced while
// connections stay up: tls.Config.GetCertificate reads the current one.
type Reloader struct {
	certFile, keyFile string
	log               zerolog.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // serialises loads (SIGHUP and the file watcher)
	stamp string     // mtimes and sizes of the files last loaded
}

// New loads the certificate pair; the logger gets the component and file.
func New(certFile, keyFile string, log zerolog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile,
		log: log.With().Str("component", "tls").Str("cert_file", certFile).Logger()}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// TLSConfig returns a server config that always uses the current certificate.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{GetCertificate: r.getCertificate, MinVersion: tls.VersionTLS12}
}

func fileStamp(paths ...string) string {
	s := ""
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil {
			s += fmt.Sprintf("%s:%d:%d;", p, fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return s
}

// load reads the pair; on any error the current certificate stays.
func (r *Reloader) load() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	stamp := fileStamp(r.certFile, r.keyFile)
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	if cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter) {
		return fmt.Errorf("%s expired on %s", r.certFile, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	r.cert.Store(&cert)
	r.stamp = stamp
	return nil
}

// Reload loads the files again and says what happened.
func (r *Reloader) Reload(why string) {
	if err := r.load(); err != nil {
		r.log.Error().Err(err).Str("trigger", why).Msg("certificate reload failed; keeping the current certificate")
		return
	}
	ev := r.log.Info().Str("trigger", why)
	if leaf := r.cert.Load().Leaf; leaf != nil {
		ev = ev.Time("not_after", leaf.NotAfter)
	}
	ev.Msg("certificate reloaded")
}

// Watch reloads when the files change, until ctx is done.
func (r *Reloader) Watch(ctx context.Context) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			r.mu.Lock()
			changed := fileStamp(r.certFile, r.keyFile) != r.stamp
			r.mu.Unlock()
			if changed {
				r.Reload("file change")
			}
		}
	}
}
