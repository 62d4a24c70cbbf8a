package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/icebox-voip/icebox/config"
)

// defaultConfigPath is read when --config is not given, if it exists.
const defaultConfigPath = "/etc/icebox/icebox.yaml"

func configCommand(a *cli) *cobra.Command {
	defaults := &cobra.Command{
		Use:   "defaults",
		Short: "print a commented default configuration",
		Long:  "Prints a commented default configuration: every key, its default and what it does.",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := a.stdout.Write(config.DefaultYAML())
			return err
		},
	}
	var path string
	check := &cobra.Command{
		Use:   "check",
		Short: "validate a configuration file",
		Long: `Validates a configuration file and the ICEBOX_* variables: exit 0, or 2 with
every problem named by its key.`,
		Example: "  icebox config check --config /etc/icebox/icebox.yaml",
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, used, err := loadConfig(path, a.env)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "%s: ok (state_dir %s, realm %s)\n", used, cfg.StateDir, cfg.TURN.Realm)
			return err
		},
	}
	configFlag(check.Flags(), &path, "")
	return group("config", "print or validate a configuration",
		"Prints the default configuration, or validates a configuration file.", defaults, check)
}

// loadConfig loads path, or the default path if it exists, or the built-in
// defaults; it returns what it used. Every failure is a usage error: nothing
// has been started yet.
func loadConfig(path string, env []string) (config.Config, string, error) {
	used := path
	if path == "" {
		if _, err := os.Stat(defaultConfigPath); err == nil {
			path, used = defaultConfigPath, defaultConfigPath
		} else if errors.Is(err, fs.ErrNotExist) {
			used = "built-in defaults"
		} else {
			return config.Config{}, "", usageError{fmt.Errorf("config: %w", err)}
		}
	}
	cfg, err := config.Load(path, env)
	if err != nil {
		return config.Config{}, "", usageError{err}
	}
	return cfg, used, nil
}

// warnReadableSecrets warns when a config file that others may read holds
// secrets inline (secret files are refused outright in that case; an inline
// secret in a shared config is the same leak).
func warnReadableSecrets(path string, cfg config.Config, log zerolog.Logger) {
	if path == "" {
		path = defaultConfigPath
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return
	}
	var inline []string
	for i, s := range cfg.Credentials.Secrets {
		if s.Secret != "" {
			inline = append(inline, fmt.Sprintf("credentials.secrets[%d].secret", i))
		}
	}
	if cfg.Auth.JWT.HS256Secret != "" {
		inline = append(inline, "auth.jwt.hs256_secret")
	}
	if cfg.Matrix.AccessToken != "" {
		inline = append(inline, "matrix.access_token")
	}
	if cfg.Matrix.Password != "" {
		inline = append(inline, "matrix.password")
	}
	if cfg.MatrixRTC.LiveKit.APISecret != "" {
		inline = append(inline, "matrixrtc.livekit.api_secret")
	}
	if len(inline) > 0 {
		log.Warn().Str("config", path).Str("mode", fmt.Sprintf("%04o", fi.Mode().Perm())).Strs("keys", inline).
			Msg("the config file is readable by others and holds secrets inline; chmod 600 it or move them to *_file settings")
	}
}
