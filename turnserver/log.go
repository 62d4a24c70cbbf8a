package turnserver

import (
	"fmt"
	"strings"

	"github.com/pion/logging"
	"github.com/rs/zerolog"
)

// pionLoggerFactory gives pion/turn our zerolog logger. pion logs per-packet
// conditions (unknown channel, no permission) at Info and Debug; those are
// demoted one level so that an Info-level icebox stays quiet under attack, and
// every line is sampled so a flood cannot turn into a log flood.
type pionLoggerFactory struct {
	log zerolog.Logger
}

func newPionLoggerFactory(log zerolog.Logger) logging.LoggerFactory {
	sampled := log.Sample(&zerolog.BurstSampler{Burst: 20, Period: 1e9})
	return pionLoggerFactory{log: sampled}
}

func (f pionLoggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With().Str("pion", scope).Logger()}
}

type pionLogger struct {
	log zerolog.Logger
}

var _ logging.LeveledLogger = pionLogger{}

func (l pionLogger) emit(level zerolog.Level, msg string) {
	l.log.WithLevel(level).Msg(msg)
}

func (l pionLogger) emitf(level zerolog.Level, format string, args ...any) {
	// Check before formatting: pion calls Debugf on the per-packet path.
	if e := l.log.WithLevel(level); e != nil {
		e.Msg(fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  { l.emit(zerolog.TraceLevel, msg) }
func (l pionLogger) Tracef(format string, args ...any) { l.emitf(zerolog.TraceLevel, format, args...) }
func (l pionLogger) Debug(msg string)                  { l.emit(zerolog.TraceLevel, msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.emitf(zerolog.TraceLevel, format, args...) }
func (l pionLogger) Info(msg string)                   { l.emit(zerolog.DebugLevel, msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.emitf(zerolog.DebugLevel, format, args...) }
func (l pionLogger) Warn(msg string)                   { l.emit(zerolog.WarnLevel, msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.emitf(zerolog.WarnLevel, format, args...) }
func (l pionLogger) Error(msg string)                  { l.emit(zerolog.ErrorLevel, msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	// A client that hangs up first makes pion fail to send TLS close_notify
	// and log it as an error; that is a normal end of a connection.
	if strings.HasPrefix(format, "Failed to close conn") {
		l.emitf(zerolog.DebugLevel, format, args...)
		return
	}
	l.emitf(zerolog.ErrorLevel, format, args...)
}
