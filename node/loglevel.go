package node

import (
	"io"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// LevelFilter is a zerolog.LevelWriter that drops events below a level
// that can change while the process runs (log.level on reload). A
// zerolog.Logger's own level is fixed when it is made and copied into every
// child logger, so the process logger is made at DebugLevel over a filter
// and the filter decides.
type LevelFilter struct {
	w     io.Writer
	level atomic.Int32
}

// NewLevelFilter passes events of level and above to w.
func NewLevelFilter(w io.Writer, level zerolog.Level) *LevelFilter {
	f := &LevelFilter{w: w}
	f.SetLevel(level)
	return f
}

// SetLevel changes the lowest level written, for events from now on.
func (f *LevelFilter) SetLevel(l zerolog.Level) { f.level.Store(int32(l)) }

// Level is the lowest level written.
func (f *LevelFilter) Level() zerolog.Level { return zerolog.Level(f.level.Load()) }

// Write writes p (an event without a level).
func (f *LevelFilter) Write(p []byte) (int, error) { return f.w.Write(p) }

// WriteLevel writes p if l is at or above the filter's level.
func (f *LevelFilter) WriteLevel(l zerolog.Level, p []byte) (int, error) {
	if l < f.Level() {
		return len(p), nil
	}
	return f.w.Write(p)
}
