package main

import (
	"errors"
	"io"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

func serveCmd(sig *signals, args []string, stdout, stderr io.Writer, env []string) error {
	fs := newFlagSet("serve", "Runs the relay and the HTTP API (the default command).", stdout, stderr)
	path := fs.String("config", "", "configuration file (default "+defaultConfigPath+" if it exists)")
	initState := fs.Bool("init-state", false, "start afresh on purpose when state_dir's state file, keyring record or generated "+
		"secrets are missing or damaged (they are replaced by new ones; revocations and calls are lost)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, used, err := loadConfig(*path, env)
	if err != nil {
		return err
	}
	log, logLevel := newLogger(cfg.Log, stderr)
	log.Info().Str("config", used).Str("version", versionString()).Msg("starting")
	warnReadableSecrets(*path, cfg, log)
	return serve(sig, cfg, serveEnv{configPath: *path, env: env, initState: *initState, logLevel: logLevel}, log)
}

// serveEnv is what serve needs to reload its configuration, and how to
// treat the state directory.
type serveEnv struct {
	configPath string
	env        []string
	initState  bool              // --init-state
	logLevel   *node.LevelFilter // the logger's level, set on reload; nil: fixed
}

// serve runs an icebox node until the first stop signal, then drains it
// until the second or drain_timeout. Everything is bound before anything
// serves; a failure at start-up closes what was opened.
func serve(sig *signals, cfg config.Config, senv serveEnv, log zerolog.Logger) error {
	opts, err := nodeOptions(sig, cfg, senv, log)
	if err != nil {
		return err
	}
	n, err := node.New(sig.ctx, cfg, opts)
	if err != nil {
		return err
	}
	return errors.Join(n.Run(sig.ctx), n.Close())
}

// nodeOptions is what a node gets from the process: signals, systemd, the
// metrics registry, API authentication and how to read the config again.
func nodeOptions(sig *signals, cfg config.Config, senv serveEnv, log zerolog.Logger) (node.Options, error) {
	notify, err := newNotifier(senv.env)
	if err != nil {
		return node.Options{}, usageError{err}
	}
	auth, err := buildAuthenticator(cfg.Auth, cfg.Matrix)
	if err != nil {
		return node.Options{}, usageError{err}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo())
	return node.Options{
		InitState:  senv.initState,
		Logger:     log,
		Registry:   reg,
		Auth:       auth,
		LoadConfig: func() (config.Config, error) { c, _, err := loadConfig(senv.configPath, senv.env); return c, err },
		Reload:     sig.reload,
		BuildAuth:  func(c config.Config) (*httpapi.Authenticator, error) { return buildAuthenticator(c.Auth, c.Matrix) },
		LogLevel:   senv.logLevel,
		Force:      sig.force,
		Notifier:   notify,
	}, nil
}
