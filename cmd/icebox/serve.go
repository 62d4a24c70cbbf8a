package main

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
	"github.com/icebox-voip/icebox/signaling/httpapi"
)

func serveCommand(a *cli) *cobra.Command {
	var (
		path      string
		initState bool
	)
	c := &cobra.Command{
		Use:   "serve",
		Short: "run the relay and the HTTP API (the default)",
		Long: `Runs the relay and the HTTP API (the default command). The first SIGTERM or
SIGINT drains (readiness turns false, live allocations may finish for up to
drain_timeout), the second stops at once; SIGHUP reloads the configuration.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, used, err := loadConfig(path, a.env)
			if err != nil {
				return err
			}
			log, logLevel := newLogger(cfg.Log, a.stderr)
			log.Info().Str("config", used).Str("version", versionString()).Msg("starting")
			warnReadableSecrets(path, cfg, log)
			return serve(a.sig, cfg, serveEnv{configPath: path, env: a.env, initState: initState, logLevel: logLevel}, log)
		},
	}
	configFlag(c.Flags(), &path, "")
	c.Flags().BoolVar(&initState, "init-state", false, "start afresh on purpose when state_dir's state file, keyring record or generated "+
		"secrets are missing or damaged (they are replaced by new ones; revocations and calls are lost)")
	return c
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
