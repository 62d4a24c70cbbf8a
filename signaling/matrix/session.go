package matrix

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
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

// login is the service user's session: the password login that makes the
// device once (kept in Encryption.Dir), the token check at every start,
// and the retries of both while the homeserver cannot be reached. It owns
// the client's access token and device ID; the other parts use the
// client once it has run.
type login struct {
	cli        *mautrix.Client
	log        zerolog.Logger
	homeserver string
	user       string
	password   string // "" with an access token
	deviceID   string // Config.DeviceID: the device the token must be for; "" = not checked
	dir        string // Encryption.Dir; "" without encryption
	enc        *Encryption
	encrypted  bool
	// backoff is the delay after the n-th failed attempt (the sender's
	// bounds, which tests shorten).
	backoff func(n int) time.Duration
	// stored: the token is a stored session of a password login.
	stored bool
	// standby: UseStoredSession gave the client the stored session
	// (device.go).
	standbyMu sync.Mutex
	standby   bool
}

func newLogin(cfg Config, cli *mautrix.Client, log zerolog.Logger, backoff func(n int) time.Duration) *login {
	l := &login{cli: cli, log: log, homeserver: cfg.HomeserverURL, user: cfg.UserID, password: cfg.Password,
		deviceID: cfg.DeviceID, encrypted: cfg.Encryption != nil, backoff: backoff}
	if cfg.Encryption != nil {
		l.dir, l.enc = cfg.Encryption.Dir, cfg.Encryption
	}
	return l
}

// start logs in (password login, or the stored session) and verifies the
// token, retrying while the homeserver cannot be reached. It returns an
// error for what retrying cannot fix, and nil when ctx ends first.
func (l *login) start(ctx context.Context) error {
	if l.password != "" {
		if err := l.ensureSession(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
	return l.verify(ctx)
}

// whoamiTimeout bounds one token check; the homeserver answers in
// milliseconds when it is up.
const whoamiTimeout = 30 * time.Second

// verify checks the token with /account/whoami, retrying while the
// homeserver cannot be reached or answers 5xx/429.
func (l *login) verify(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		wctx, cancel := context.WithTimeout(quiet(ctx), whoamiTimeout)
		resp, err := l.cli.Whoami(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			return l.checkWhoami(resp)
		}
		f := classify(err)
		switch {
		case (f.kind == kindUnauthorized || f.kind == kindForbidden) && l.stored:
			return fmt.Errorf("matrix: %s refused the stored session of %s (device %s): it was logged out or deleted; that device and its keys are gone, so "+
				"delete %s, %s* and %s in %s (keep %s) and restart to log in as a new device: %w", l.homeserver, l.user, l.cli.DeviceID,
				sessionFile, cryptoDBFile, pickleKeyFile, l.dir, recoveryKeyFile, err)
		case f.kind == kindUnauthorized || f.kind == kindForbidden:
			return fmt.Errorf("matrix: %s refused the access token of %s: %w", l.homeserver, l.user, err)
		case f.permanent: // 404 and the like: not a Matrix client-server API at that URL
			return fmt.Errorf("matrix: %s failed the access token check of %s (is homeserver_url the client-server API's base URL?): %w", l.homeserver, l.user, err)
		}
		delay := max(l.backoff(attempt), f.retryAfter)
		l.log.Warn().Err(err).Str("homeserver", l.homeserver).Dur("retry_in", delay).
			Msg("cannot verify the access token: homeserver unreachable; the outbox keeps events until it is back")
		if !sleepCtx(ctx, delay) {
			return nil
		}
	}
}

func (l *login) checkWhoami(resp *mautrix.RespWhoami) error {
	if string(resp.UserID) != l.user {
		return fmt.Errorf("matrix: the access token is %s's on %s, not the service user %s", resp.UserID, l.homeserver, l.user)
	}
	if l.deviceID != "" && resp.DeviceID != "" && string(resp.DeviceID) != l.deviceID {
		return fmt.Errorf("matrix: the access token is for device %s on %s, not %s", resp.DeviceID, l.homeserver, l.deviceID)
	}
	if l.cli.DeviceID != "" && resp.DeviceID != "" && resp.DeviceID != l.cli.DeviceID {
		return fmt.Errorf("matrix: the stored session's token is for device %s on %s, not %s", resp.DeviceID, l.homeserver, l.cli.DeviceID)
	}
	if l.cli.DeviceID == "" {
		l.cli.DeviceID = resp.DeviceID
	}
	if l.encrypted && l.cli.DeviceID == "" {
		return fmt.Errorf("matrix: %s did not say which device the access token is for; set matrix.device_id", l.homeserver)
	}
	l.log.Info().Str("homeserver", l.homeserver).Str("user_id", l.user).
		Str("device_id", string(resp.DeviceID)).Msg("matrix access token verified")
	return nil
}

// ensureSession gives the client the stored session, or logs in with the
// password (once: a new device) and stores the session before using it.
func (l *login) ensureSession(ctx context.Context) error {
	path := l.enc.deviceFilePath(sessionFile)
	raw, err := l.enc.readDeviceFile(ctx, sessionFile)
	switch {
	case err == nil:
		s, err := l.parseSession(raw, path)
		if err != nil {
			return err
		}
		l.useSession(s)
		l.stored = true
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("matrix: session: %w", err)
	}
	localpart, _, _ := strings.Cut(strings.TrimPrefix(l.user, "@"), ":")
	var resp *mautrix.RespLogin
	err = l.retry(ctx, "logging in", func(ctx context.Context) error {
		var lerr error
		resp, lerr = l.cli.Login(ctx, &mautrix.ReqLogin{
			Type:                     mautrix.AuthTypePassword,
			Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
			Password:                 l.password,
			InitialDeviceDisplayName: deviceDisplayName,
		})
		return lerr
	})
	if err != nil || ctx.Err() != nil {
		if err != nil {
			return fmt.Errorf("matrix: %s refused the password login of %s: %w", l.homeserver, l.user, err)
		}
		return nil
	}
	if string(resp.UserID) != l.user {
		return fmt.Errorf("matrix: the password login on %s is %s's, not the service user %s", l.homeserver, resp.UserID, l.user)
	}
	s := session{HomeserverURL: l.homeserver, UserID: string(resp.UserID), DeviceID: string(resp.DeviceID), AccessToken: resp.AccessToken}
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("matrix: session: %w", err)
	}
	if err := l.enc.writeDeviceFile(ctx, sessionFile, append(data, '\n')); err != nil {
		// The device exists but would be forgotten: the next start makes
		// another. Better to stop now than to leave devices behind.
		return fmt.Errorf("matrix: logged in as device %s but could not keep the session: %w", resp.DeviceID, err)
	}
	l.useSession(s)
	l.log.Info().Str("user_id", s.UserID).Str("device_id", s.DeviceID).Str("session_file", path).
		Msg("matrix password login: new device created; its session is kept for later starts")
	return nil
}

// parseSession reads a stored session (path names it in errors).
func (l *login) parseSession(raw []byte, path string) (session, error) {
	var s session
	if err := json.Unmarshal(raw, &s); err != nil || s.AccessToken == "" || s.DeviceID == "" {
		return session{}, fmt.Errorf("matrix: %s is not a session icebox wrote; move it aside to log in as a new device", path)
	}
	if s.UserID != l.user {
		return session{}, fmt.Errorf("matrix: %s is a session of %s, not of the service user %s; use another state directory, or move it aside to log in as a new device", path, s.UserID, l.user)
	}
	return s, nil
}

func (l *login) useSession(s session) {
	l.cli.AccessToken = s.AccessToken
	l.cli.DeviceID = id.DeviceID(s.DeviceID)
}

// retry runs fn until it succeeds, fails for good, or ctx ends (nil):
// while the homeserver cannot be reached or answers 5xx/429 it is retried
// with backoff.
func (l *login) retry(ctx context.Context, what string, fn func(ctx context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := fn(quiet(ctx))
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if !transient(err) {
			return err
		}
		f := classify(err)
		delay := max(l.backoff(attempt), f.retryAfter)
		l.log.Warn().Err(err).Str("homeserver", l.homeserver).Str("kind", f.kind).Dur("retry_in", delay).
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
