package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/icebox-voip/icebox/internal/fileutil"
)

// deviceDisplayName names the device icebox's password login creates, as
// Matrix clients list it among the service user's sessions.
const deviceDisplayName = "icebox"

// session is the device a password login made, kept in
// Encryption.Dir/session.json (0600): later starts use it, so the device
// and its keys stay the same across restarts.
type session struct {
	HomeserverURL string `json:"homeserver_url"`
	UserID        string `json:"user_id"`
	DeviceID      string `json:"device_id"`
	AccessToken   string `json:"access_token"`
}

// ensureSession gives the client the stored session, or logs in with the
// password (once: a new device) and stores the session before using it.
func (b *Bridge) ensureSession(ctx context.Context) error {
	path := filepath.Join(b.cfg.Encryption.Dir, sessionFile)
	raw, err := os.ReadFile(path)
	switch {
	case err == nil:
		var s session
		if err := json.Unmarshal(raw, &s); err != nil || s.AccessToken == "" || s.DeviceID == "" {
			return fmt.Errorf("matrix: %s is not a session icebox wrote; move it aside to log in as a new device", path)
		}
		if s.UserID != b.cfg.UserID {
			return fmt.Errorf("matrix: %s is a session of %s, not of the service user %s; use another state directory, or move it aside to log in as a new device", path, s.UserID, b.cfg.UserID)
		}
		b.useSession(s)
		b.sessionStored = true
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("matrix: session: %w", err)
	}
	if err := os.MkdirAll(b.cfg.Encryption.Dir, 0o700); err != nil {
		return fmt.Errorf("matrix: encryption directory: %w", err)
	}
	localpart, _, _ := strings.Cut(strings.TrimPrefix(b.cfg.UserID, "@"), ":")
	var resp *mautrix.RespLogin
	err = b.retry(ctx, "logging in", func(ctx context.Context) error {
		var lerr error
		resp, lerr = b.cli.Login(ctx, &mautrix.ReqLogin{
			Type:                     mautrix.AuthTypePassword,
			Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
			Password:                 b.cfg.Password,
			InitialDeviceDisplayName: deviceDisplayName,
		})
		return lerr
	})
	if err != nil || ctx.Err() != nil {
		if err != nil {
			return fmt.Errorf("matrix: %s refused the password login of %s: %w", b.cfg.HomeserverURL, b.cfg.UserID, err)
		}
		return nil
	}
	if string(resp.UserID) != b.cfg.UserID {
		return fmt.Errorf("matrix: the password login on %s is %s's, not the service user %s", b.cfg.HomeserverURL, resp.UserID, b.cfg.UserID)
	}
	s := session{HomeserverURL: b.cfg.HomeserverURL, UserID: string(resp.UserID), DeviceID: string(resp.DeviceID), AccessToken: resp.AccessToken}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("matrix: session: %w", err)
	}
	if err := fileutil.WriteFileAtomic(path, append(data, '\n'), 0o600); err != nil {
		// The device exists but would be forgotten: the next start makes
		// another. Better to stop now than to leave devices behind.
		return fmt.Errorf("matrix: logged in as device %s but could not keep the session: %w", resp.DeviceID, err)
	}
	b.useSession(s)
	b.log.Info().Str("user_id", s.UserID).Str("device_id", s.DeviceID).Str("session_file", path).
		Msg("matrix password login: new device created; its session is kept for later starts")
	return nil
}

func (b *Bridge) useSession(s session) {
	b.cli.AccessToken = s.AccessToken
	b.cli.DeviceID = id.DeviceID(s.DeviceID)
}

// retry runs fn until it succeeds, fails for good, or ctx ends (nil):
// while the homeserver cannot be reached or answers 5xx/429 it is retried
// with the sender's backoff.
func (b *Bridge) retry(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(quiet(ctx))
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !transient(err) {
			return err
		}
		f := classify(err)
		delay := max(backoff(attempt, b.send.minBackoff, b.send.maxBackoff), f.retryAfter)
		b.log.Warn().Err(err).Str("homeserver", b.cfg.HomeserverURL).Str("kind", f.kind).Dur("retry_in", delay).
			Msgf("matrix: %s failed; retrying", what)
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
}

// transient reports whether err is worth retrying: no answer from the
// homeserver, or a 5xx/429. Local failures and refusals are not.
func transient(err error) bool {
	var he mautrix.HTTPError
	if errors.As(err, &he) {
		if he.Response == nil {
			return true
		}
		f := classify(err)
		return !f.permanent && f.kind != kindUnauthorized
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded)
}
