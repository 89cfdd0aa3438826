package faultdb_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// BenchmarkApplyRaiseBatch applies batches of 1,000 new alarms (as the
// manager's group commit does) on SQLite with the durable settings.
func BenchmarkApplyRaiseBatch(b *testing.B) {
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
	n := 0
	b.ResetTimer()
	for b.Loop() {
		ops := make([]faultmgr.Op, 1000)
		for i := range ops {
			n++
			ops[i] = faultmgr.Op{Kind: faultmgr.OpRaise, Alarm: faultmgr.Alarm{UUID: fmt.Sprintf("01900000-0000-7000-8000-%012d", n),
				AlarmID: "100.101", EntityInstanceID: fmt.Sprintf("host=h%d", n), Severity: faultmgr.Major,
				ReasonText: "CPU usage above 95%", MgmtAffecting: "none", DegradeAffecting: "none"}}
		}
		if _, err := st.ApplyAlarmOps(ctx, ops, "bench", time.Now().UTC()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "raises/s")
}

// BenchmarkApplyRaiseBatchPostgres is BenchmarkApplyRaiseBatch on the
// PostgreSQL that PETREL_TEST_POSTGRES_DSN names (skipped without one:
// benchmarks are run by hand).
func BenchmarkApplyRaiseBatchPostgres(b *testing.B) {
	dsn := os.Getenv("PETREL_TEST_POSTGRES_DSN")
	if dsn == "" {
		b.Skip("PETREL_TEST_POSTGRES_DSN not set")
	}
	ctx := context.Background()
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.Exec("DROP TABLE IF EXISTS fm_alarms, fm_events, fm_meta, fm_suppressions, fm_site_cursors")
	st, err := faultdb.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		ops := make([]faultmgr.Op, 1000)
		for i := range ops {
			n++
			ops[i] = faultmgr.Op{Kind: faultmgr.OpRaise, Alarm: faultmgr.Alarm{UUID: fmt.Sprintf("01900000-0000-7000-8000-%012d", n),
				AlarmID: "100.101", EntityInstanceID: fmt.Sprintf("host=h%d", n), Severity: faultmgr.Major,
				ReasonText: "CPU usage above 95%", MgmtAffecting: "none", DegradeAffecting: "none"}}
		}
		if _, err := st.ApplyAlarmOps(ctx, ops, "bench", time.Now().UTC()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "raises/s")
}
