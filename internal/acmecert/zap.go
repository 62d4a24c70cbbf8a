package acmecert

import (
	"fmt"
	"math"
	"strings"
	"time"

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
	ev := c.log.WithLevel(level(e.Level))
	if e.LoggerName != "" {
		ev = ev.Str("certmagic", e.LoggerName)
	}
	for _, f := range append(append([]zapcore.Field(nil), c.fields...), fields...) {
		if !secretField(f.Key) {
			ev = addField(ev, f)
		}
	}
	ev.Msg(e.Message)
	return nil
}

// addField adds the field kinds certmagic logs, by hand rather than with
// Field.AddTo: AddTo's object case makes the linker keep every reachable
// zapcore.ObjectMarshaler, livekit's among them, whose text/template use
// then turns off dead-code elimination of methods for the whole binary
// (several MB). Objects and arrays are left out.
func addField(ev *zerolog.Event, f zapcore.Field) *zerolog.Event {
	switch f.Type {
	case zapcore.StringType:
		return ev.Str(f.Key, f.String)
	case zapcore.BoolType:
		return ev.Bool(f.Key, f.Integer == 1)
	case zapcore.Int64Type, zapcore.Int32Type, zapcore.Int16Type, zapcore.Int8Type,
		zapcore.Uint64Type, zapcore.Uint32Type, zapcore.Uint16Type, zapcore.Uint8Type:
		return ev.Int64(f.Key, f.Integer)
	case zapcore.Float64Type:
		return ev.Float64(f.Key, math.Float64frombits(uint64(f.Integer)))
	case zapcore.DurationType:
		return ev.Dur(f.Key, time.Duration(f.Integer))
	case zapcore.TimeType:
		t := time.Unix(0, f.Integer)
		if loc, ok := f.Interface.(*time.Location); ok {
			t = t.In(loc)
		}
		return ev.Time(f.Key, t)
	case zapcore.TimeFullType:
		if t, ok := f.Interface.(time.Time); ok {
			return ev.Time(f.Key, t)
		}
	case zapcore.ErrorType:
		if err, ok := f.Interface.(error); ok {
			return ev.Str(f.Key, err.Error())
		}
	case zapcore.StringerType:
		if s, ok := f.Interface.(fmt.Stringer); ok {
			return ev.Str(f.Key, s.String())
		}
	}
	return ev
}

func (zerologCore) Sync() error { return nil }
