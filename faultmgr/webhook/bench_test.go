package webhook_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/faultmgr/webhook"
	"github.com/petrel-edge/petrel/internal/egress"
	"github.com/petrel-edge/petrel/internal/sealed"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// BenchmarkDelivery measures delivery throughput to one local receiver:
// b.N alarm sets are logged (SQLite, durable) before the clock starts;
// then one webhook worker reads, signs and POSTs them one by one, in order,
// over a kept-alive connection to a receiver that reads the body and
// answers 204. Reported: events/s.
func BenchmarkDelivery(b *testing.B) {
	ctx := context.Background()
	db, err := sqldb.Open(ctx, filepath.Join(b.TempDir(), "fm.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	st, err := faultdb.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	box, _ := sealed.LoadOrCreate(filepath.Join(b.TempDir(), sealed.KeyFile))
	pol, _ := egress.NewPolicy(nil, nil)
	var got atomic.Int64
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	m, err := webhook.New(webhook.Config{Store: st, Log: st, Box: box, Policy: pol, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Create(ctx, webhook.CreateRequest{URL: rcv.URL + "/hook"}, "admin"); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i += 1000 {
		var ops []faultmgr.Op
		for j := i; j < min(i+1000, b.N); j++ {
			ops = append(ops, faultmgr.Op{Kind: faultmgr.OpRaise, Alarm: faultmgr.Alarm{UUID: fmt.Sprintf("00000000-0000-7000-8000-%012d", j),
				AlarmID: "200.004", EntityInstanceID: fmt.Sprintf("host=worker-%d", j), Severity: faultmgr.Critical,
				ReasonText: "worker failed and is being recovered"}})
		}
		if _, err := st.ApplyAlarmOps(ctx, ops, "site-sx", time.Now().UTC()); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	for got.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
