package acmecert

import (
	"strings"

	"github.com/rs/zerolog"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger hands certmagic's zap logging to icebox's zerolog logger.
// certmagic narrates every step at info ("acquiring lock", "trying to solve
// challenge"): that goes to debug, while the Manager logs what an operator
// needs (obtained, renewed, failed) from certmagic's events.
func newZapLogger(log zerolog.Logger) *zap.Logger {
	return zap.New(zerologCore{log: log})
}

type zerologCore struct {
	log    zerolog.Logger
	fields []zapcore.Field
}

func level(l zapcore.Level) zerolog.Level {
	switch {
	case l >= zapcore.ErrorLevel:
		return zerolog.ErrorLevel
	case l == zapcore.WarnLevel:
		return zerolog.WarnLevel
	case l == zapcore.InfoLevel:
		return zerolog.DebugLevel
	default:
		return zerolog.TraceLevel
	}
}

func (c zerologCore) Enabled(l zapcore.Level) bool {
	zl := level(l)
	return zl >= c.log.GetLevel() && zl >= zerolog.GlobalLevel()
}

func (c zerologCore) With(fields []zapcore.Field) zapcore.Core {
	return zerologCore{log: c.log, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c zerologCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// secretField says whether a field might hold key material or a token:
// such fields are left out of the log, whatever they hold.
func secretField(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"key", "pem", "token", "secret", "password", "authz"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

func (c zerologCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fields...) {
		if !secretField(f.Key) {
			f.AddTo(enc)
		}
	}
	ev := c.log.WithLevel(level(e.Level))
	if e.LoggerName != "" {
		ev = ev.Str("certmagic", e.LoggerName)
	}
	ev.Fields(enc.Fields).Msg(e.Message)
	return nil
}

func (zerologCore) Sync() error { return nil }
