package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/faultmgr/faultdb"
	"github.com/petrel-edge/petrel/internal/sqldb"
)

// AlarmsResult is the T6 measurement.
type AlarmsResult struct {
	Raises, Clients int
	Distinct        int // different alarms among the raises
	Elapsed         time.Duration
	PerSecond       float64
	P50, P99        time.Duration
	Engine          string
	BaselinePerSec  float64 // one row per transaction, no group commit, same engine
	BaselineRaises  int
}

// RunAlarms raises n alarms from clients goroutines through the
// group-committing manager on a fresh store (dsn "" = SQLite in a temp
// dir), cycling over distinct different alarms (distinct = n: every raise a
// new alarm and a durable set event, the worst case; fewer: a storm of
// repeats, which the manager deduplicates), and, as a baseline in the same
// run, n/10 raises committed one transaction each.
func RunAlarms(ctx context.Context, dsn string, n, distinct, clients int) (AlarmsResult, error) {
	if distinct <= 0 || distinct > n {
		distinct = n
	}
	res := AlarmsResult{Raises: n, Clients: clients, Distinct: distinct}
	open := func() (*sqldb.DB, func(), error) {
		if dsn != "" {
			return freshPostgres(ctx, dsn)
		}
		dir, err := os.MkdirTemp("", "petrel-bench-alarms-")
		if err != nil {
			return nil, nil, err
		}
		db, err := sqldb.Open(ctx, filepath.Join(dir, "fm.db"))
		return db, func() { db.Close(); os.RemoveAll(dir) }, err
	}
	cat, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	if err != nil {
		return res, err
	}
	// Baseline: no group commit.
	{
		db, done, err := open()
		if err != nil {
			return res, err
		}
		st, err := faultdb.Open(ctx, db)
		if err != nil {
			done()
			return res, err
		}
		res.BaselineRaises = max(n/10, 100)
		t0 := time.Now()
		for i := range res.BaselineRaises {
			a := faultmgr.Alarm{UUID: fmt.Sprintf("01900000-0000-7000-8000-%012d", i), AlarmID: "100.101",
				EntityInstanceID: fmt.Sprintf("host=b%d", i), Severity: faultmgr.Major, MgmtAffecting: "none", DegradeAffecting: "none"}
			if _, err := st.ApplyAlarmOps(ctx, []faultmgr.Op{{Kind: faultmgr.OpRaise, Alarm: a}}, "bench", time.Now().UTC()); err != nil {
				done()
				return res, err
			}
		}
		res.BaselinePerSec = float64(res.BaselineRaises) / time.Since(t0).Seconds()
		res.Engine = string(db.Kind)
		done()
	}
	db, done, err := open()
	if err != nil {
		return res, err
	}
	defer done()
	st, err := faultdb.Open(ctx, db)
	if err != nil {
		return res, err
	}
	// Distinct alarms, all stored: storm control's limits sit above n.
	m, err := faultmgr.NewManager(faultmgr.Config{Catalog: cat, Store: st, Site: "bench", Logger: slog.New(slog.DiscardHandler),
		Limits: faultmgr.Limits{MaxActive: n + 1, MaxActivePerID: n + 1}})
	if err != nil {
		return res, err
	}
	mctx, cancel := context.WithCancel(ctx)
	mdone := make(chan struct{})
	go func() { defer close(mdone); m.Run(mctx) }()
	defer func() { cancel(); <-mdone }()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s := time.Now()
				if _, _, err := m.Raise(ctx, "100.101", fmt.Sprintf("host=h%d", i%distinct), map[string]string{"threshold": "95"}); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat[i] = time.Since(s)
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	if e, ok := firstErr.Load().(error); ok {
		return res, e
	}
	slices.Sort(lat)
	res.PerSecond = float64(n) / res.Elapsed.Seconds()
	res.P50, res.P99 = Percentile(lat, 50), Percentile(lat, 99)
	return res, nil
}

// freshPostgres creates an empty database on the server dsn names, so a
// run never counts what an earlier one left; done drops it.
func freshPostgres(ctx context.Context, dsn string) (*sqldb.DB, func(), error) {
	admin, err := sqldb.Open(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "petrel_bench_" + hex.EncodeToString(b[:])
	if err := admin.Exec("CREATE DATABASE " + name).Error; err != nil {
		admin.Close()
		return nil, nil, fmt.Errorf("bench: create database: %w", err)
	}
	var parts []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			parts = append(parts, f)
		}
	}
	db, err := sqldb.Open(ctx, strings.Join(append(parts, "dbname="+name), " "))
	drop := func() {
		if db != nil {
			db.Close()
		}
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Close()
	}
	if err != nil {
		drop()
		return nil, nil, err
	}
	return db, drop, nil
}

// IngestResult is T6 at central: sites' records applied durably.
type IngestResult struct {
	Records, Sites int
	Elapsed        time.Duration
	PerSecond      float64
	P50, P99       time.Duration // one 500-record batch: sent → applied (a link's wait)
	Engine         string
	HeapMiB        float64 // Go heap in use after the run
}

// RunCentralIngest applies n records (alarm sets, as sites ship them) from
// sites concurrent links, 500 records a batch, through central's combining
// ingest on a fresh store (dsn "" = SQLite in a temp dir).
func RunCentralIngest(ctx context.Context, dsn string, n, sites int) (IngestResult, error) {
	res := IngestResult{Records: n, Sites: sites}
	var (
		db   *sqldb.DB
		done func()
		err  error
	)
	if dsn != "" {
		db, done, err = freshPostgres(ctx, dsn)
	} else {
		dir, derr := os.MkdirTemp("", "petrel-bench-ingest-")
		if derr != nil {
			return res, derr
		}
		db, err = sqldb.Open(ctx, filepath.Join(dir, "fm.db"))
		done = func() { db.Close(); os.RemoveAll(dir) }
	}
	if err != nil {
		return res, err
	}
	defer done()
	res.Engine = string(db.Kind)
	st, err := faultdb.Open(ctx, db)
	if err != nil {
		return res, err
	}
	cat, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	if err != nil {
		return res, err
	}
	ing := faultdb.NewIngest(st)
	ictx, cancel := context.WithCancel(ctx)
	idone := make(chan struct{})
	go func() { defer close(idone); ing.Run(ictx) }()
	defer func() { cancel(); <-idone }()

	per := n / sites
	res.Records = per * sites
	logs := make([][]faultmgr.Record, sites)
	now := time.Now().UTC()
	for s := range sites {
		if err := st.ResetSite(ctx, fmt.Sprintf("site-%d", s), "epoch"); err != nil {
			return res, err
		}
		logs[s] = make([]faultmgr.Record, per)
		for i := range per {
			aid, _ := uuid.NewV7()
			eid, _ := uuid.NewV7()
			logs[s][i] = faultmgr.Record{Seq: uint64(i + 1), AlarmUUID: aid.String(), Event: faultmgr.Event{UUID: eid.String(),
				Type: faultmgr.EventSet, AlarmID: "100.101", EntityInstanceID: fmt.Sprintf("host=h%d", i), Severity: "major",
				ReasonText: "CPU usage of h above 95%", Timestamp: now, Site: fmt.Sprintf("site-%d", s)}}
		}
	}
	var mu sync.Mutex
	var lat []time.Duration
	var firstErr atomic.Value
	var wg sync.WaitGroup
	t0 := time.Now()
	for s := range sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs := logs[s]
			for len(recs) > 0 {
				k := min(len(recs), 500)
				b := faultdb.SiteBatch{Site: fmt.Sprintf("site-%d", s), Epoch: "epoch", Records: recs[:k], Ops: faultmgr.SiteOps(cat, recs[:k])}
				start := time.Now()
				r, err := ing.Apply(ctx, b)
				if err == nil {
					err = r.Err
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(start))
				mu.Unlock()
				recs = recs[k:]
			}
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	if e, ok := firstErr.Load().(error); ok {
		return res, e
	}
	slices.Sort(lat)
	res.PerSecond = float64(res.Records) / res.Elapsed.Seconds()
	res.P50, res.P99 = Percentile(lat, 50), Percentile(lat, 99)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	return res, nil
}
