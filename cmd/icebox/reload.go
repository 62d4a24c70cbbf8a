package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/credentials"
)

// certPollInterval is how often certificate files are checked for changes:
// ACME clients replace them every few weeks, so seconds of delay are fine
// and polling needs no inotify (which containers and NFS do not always give).
const certPollInterval = 5 * time.Second

// certReloader serves a TLS certificate that can be replaced while
// connections stay up: tls.Config.GetCertificate reads the current one.
type certReloader struct {
	certFile, keyFile string
	log               zerolog.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu    sync.Mutex // serialises loads (SIGHUP and the file watcher)
	stamp string     // mtimes and sizes of the files last loaded
}

func newCertReloader(certFile, keyFile string, log zerolog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile,
		log: log.With().Str("component", "tls").Str("cert_file", certFile).Logger()}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}

// tlsConfig returns a server config that always uses the current certificate.
func (r *certReloader) tlsConfig() *tls.Config {
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
func (r *certReloader) load() error {
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

// reload loads the files again and says what happened.
func (r *certReloader) reload(why string) {
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

// watch reloads when the files change, until ctx is done.
func (r *certReloader) watch(ctx context.Context) error {
	t := time.NewTicker(certPollInterval)
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
				r.reload("file change")
			}
		}
	}
}

// reloadKeyring re-reads the configuration's credentials.secrets (or the
// managed keyring's record) and swaps the keyring; on any error the current
// keyring stays.
func reloadKeyring(path string, env []string, keys *keyringManager, log zerolog.Logger) {
	cfg, _, err := loadConfig(path, env)
	if err == nil {
		// Built under the manager's lock, so a concurrent rotation cannot
		// be overwritten by a keyring built before it.
		keys.mu.Lock()
		var next *credentials.Keyring
		if next, err = buildKeyring(cfg); err == nil {
			keys.cfg = cfg
			keys.ring.Store(next)
		}
		keys.mu.Unlock()
		if err == nil {
			log.Info().Str("component", "credentials").Str("active_kid", next.ActiveKID()).
				Strs("kids", next.KIDs()).Msg("keyring reloaded")
			return
		}
	}
	log.Error().Str("component", "credentials").Err(err).Msg("keyring reload failed; keeping the current keyring")
}
