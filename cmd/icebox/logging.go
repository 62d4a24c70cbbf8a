package main

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/icebox-voip/icebox/config"
	"github.com/icebox-voip/icebox/node"
)

// newLogger builds the process logger: JSON for journald and Docker, a
// console format on a terminal (log.format: auto). Its level is the
// returned filter's, which a reload changes (log.level).
func newLogger(cfg config.Log, w io.Writer) (zerolog.Logger, *node.LevelFilter) {
	level, err := zerolog.ParseLevel(cfg.Level)
	if err != nil {
		level = zerolog.InfoLevel // Validate already refused anything else
	}
	format := cfg.Format
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	filter := node.NewLevelFilter(w, level)
	return zerolog.New(filter).Level(zerolog.DebugLevel).With().Timestamp().Logger(), filter
}
