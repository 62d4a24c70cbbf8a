package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/icebox-voip/icebox/config"
)

// defaultConfigPath is read when --config is not given, if it exists.
const defaultConfigPath = "/etc/icebox/icebox.yaml"

func configCmd(args []string, stdout, stderr io.Writer, env []string) error {
	if len(args) == 0 {
		return usagef("config: want a subcommand: defaults | check")
	}
	switch args[0] {
	case "defaults":
		fs := newFlagSet("config defaults", stderr)
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		_, err := stdout.Write(config.DefaultYAML())
		return err
	case "check":
		fs := newFlagSet("config check", stderr)
		path := fs.String("config", "", "configuration file (default "+defaultConfigPath+" if it exists)")
		if err := parseFlags(fs, args[1:]); err != nil {
			return err
		}
		cfg, used, err := loadConfig(*path, env)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s: ok (state_dir %s, realm %s)\n", used, cfg.StateDir, cfg.TURN.Realm)
		return err
	default:
		return usagef("config: unknown subcommand %q", args[0])
	}
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
