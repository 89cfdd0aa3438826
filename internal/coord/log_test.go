package coord

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
)

// TestZapToSlog: etcd's zap lines reach the slog logger with their fields,
// below the minimum level they are dropped, the known-harmless error is a
// warning, and once muted only fatal lines would pass.
func TestZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	muted := new(atomic.Bool)
	z := newZapLogger(lg, slog.LevelWarn, muted).Named("raft").With(zap.String("member", "m0"))

	z.Info("chatty")
	z.Error("disk failed", zap.Error(errors.New("EIO")), zap.Int("n", 3))
	z.Error("failed to update storage version")
	got := buf.String()
	if strings.Contains(got, "chatty") {
		t.Errorf("an info line passed a warn minimum:\n%s", got)
	}
	for _, want := range []string{
		`level=ERROR msg="disk failed" member=m0 logger=raft error=EIO n=3`,
		`level=WARN msg="failed to update storage version"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("log = %s; want a line with %s", got, want)
		}
	}

	buf.Reset()
	muted.Store(true)
	z.Error("setting up serving from embedded etcd failed.")
	if buf.Len() != 0 {
		t.Errorf("muted logger wrote %q", buf.String())
	}
	newZapLogger(nil, nil, nil).Error("dropped") // a nil logger drops everything
}
