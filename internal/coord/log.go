package coord

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// etcd and its client log through zap; slogCore hands their lines to a
// *slog.Logger instead, dropping those below a minimum level. Once muted
// (when a member shuts down, which etcd reports with a burst of error
// lines about closed listeners), everything below fatal is dropped.
type slogCore struct {
	h     slog.Handler
	min   slog.Leveler
	muted *atomic.Bool
}

func newZapLogger(lg *slog.Logger, min slog.Leveler, muted *atomic.Bool) *zap.Logger {
	if lg == nil {
		return zap.NewNop()
	}
	if min == nil {
		min = slog.LevelError
	}
	if muted == nil {
		muted = new(atomic.Bool)
	}
	return zap.New(&slogCore{h: lg.Handler(), min: min, muted: muted})
}

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// entryLevel is the slog level of a zap entry: its own, except for etcd
// errors known to be harmless, which are warnings here.
func entryLevel(e zapcore.Entry) slog.Level {
	switch e.Message {
	case "failed to update storage version":
		// A new member's first try, before the raft term reaches its
		// backend; it is retried and succeeds.
		return slog.LevelWarn
	}
	return slogLevel(e.Level)
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return c.enabled(l, slogLevel(l)) }

func (c *slogCore) enabled(zl zapcore.Level, sl slog.Level) bool {
	if c.muted.Load() && zl < zapcore.DPanicLevel {
		return false
	}
	return sl >= c.min.Level() && c.h.Enabled(context.Background(), sl)
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{h: c.h.WithAttrs(attrs(fs)), min: c.min, muted: c.muted}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.enabled(e.Level, entryLevel(e)) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	r := slog.NewRecord(e.Time, entryLevel(e), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(attrs(fs)...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

// attrs turns zap fields into slog attributes, sorted by key.
func attrs(fs []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	out := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, slog.Any(k, v))
	}
	slices.SortFunc(out, func(a, b slog.Attr) int { return strings.Compare(a.Key, b.Key) })
	return out
}
