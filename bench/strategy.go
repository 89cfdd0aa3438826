package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// StrategyConfig configures the fleet strategy benchmark.
type StrategyConfig struct {
	Binary      string
	Sites       int
	PerProcess  int
	MaxParallel int
	// SiteDuration is how long each simulated site strategy applies.
	SiteDuration time.Duration
	SQLite       bool
	Seed         uint64
	Log          io.Writer
}

// StrategyResult is what the fleet strategy benchmark measured.
type StrategyResult struct {
	Sites, Processes, MaxParallel int
	Engine                        string
	SiteDuration                  time.Duration
	Applied                       int           // sites whose step ended applied
	Total                         time.Duration // apply → applied
	Ideal                         time.Duration // stages × SiteDuration
	SitesPerMinute                float64
	// StepOverheadP50/P99/Max: a site's step duration minus SiteDuration
	// (sync, apply, create, the polls that see it end).
	StepOverheadP50, StepOverheadP99, StepOverheadMax time.Duration
	// CPUPerSite is central's CPU time during the apply over the sites.
	CPUPerSite time.Duration
	State      strategy.State
	Reason     string
}

// RunStrategy runs the fleet strategy benchmark: a real central (its own
// process) and simulator processes whose sites accept a patch upload and
// run a simulated site strategy of SiteDuration; every site managed, a
// patch uploaded to central, a fleet strategy over all of them with
// MaxParallel, applied and timed to applied.
func RunStrategy(ctx context.Context, cfg StrategyConfig) (StrategyResult, error) {
	res := StrategyResult{Sites: cfg.Sites, MaxParallel: cfg.MaxParallel, SiteDuration: cfg.SiteDuration, Engine: "PostgreSQL 15"}
	if cfg.SQLite {
		res.Engine = "SQLite"
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	dir, err := os.MkdirTemp("", "petrel-strategy-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	priv, pub := filepath.Join(dir, "patch.key"), filepath.Join(dir, "patch.pub")
	if err := swpatch.GenerateKeyPair(priv, pub); err != nil {
		return res, err
	}
	fc := FleetConfig{Binary: cfg.Binary, Sites: cfg.Sites, PerProcess: cfg.PerProcess, SQLite: cfg.SQLite, Seed: cfg.Seed,
		Log: cfg.Log, AlarmsPerMinute: 1, PatchPublicKey: pub, StrategyDuration: cfg.SiteDuration}
	if fc.PerProcess <= 0 {
		fc.PerProcess = 4000
	}
	r := &fleetRun{cfg: fc, log: cfg.Log, owner: map[string]int{}, dir: dir}
	defer r.teardown()
	for _, d := range []string{"central", "sites", "sim", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return res, err
		}
	}
	if err := r.startCentral(ctx); err != nil {
		return res, err
	}
	if _, err := r.register(ctx); err != nil {
		return res, err
	}
	t0 := time.Now()
	if err := r.startSims(ctx); err != nil {
		return res, err
	}
	res.Processes = len(r.sims)
	limit := 60*time.Second + time.Duration(cfg.Sites)*10*time.Millisecond
	if err := r.waitWelcomed(ctx, t0, limit); err != nil {
		return res, err
	}
	if err := r.waitOnline(ctx, cfg.Sites, limit); err != nil {
		return res, err
	}
	if err := r.manageAll(ctx); err != nil {
		return res, err
	}
	fmt.Fprintf(r.log, "%d sites online and managed\n", cfg.Sites)

	// A small signed patch, uploaded to central.
	key, err := swpatch.LoadPrivateKey(priv)
	if err != nil {
		return res, err
	}
	src := filepath.Join(dir, "motd")
	if err := os.WriteFile(src, []byte("bench\n"), 0o644); err != nil {
		return res, err
	}
	var archive bytes.Buffer
	if _, err := swpatch.Build(&archive, swpatch.BuildSpec{ID: "BENCH-1", Version: "99.0.0",
		Files: []swpatch.Content{{Path: "etc/motd", Source: src, Mode: 0o644}}}, key); err != nil {
		return res, err
	}
	if err := r.api.Upload(ctx, http.MethodPost, "/v1/patches", bytes.NewReader(archive.Bytes()), int64(archive.Len()), nil); err != nil {
		return res, err
	}
	var s strategy.Strategy
	if err := r.api.Do(ctx, http.MethodPost, "/v1/strategies/patch", nil,
		map[string]any{"patches": []string{"BENCH-1"}, "max_parallel": cfg.MaxParallel}, &s); err != nil {
		return res, err
	}
	res.Ideal = time.Duration(len(s.Stages)) * cfg.SiteDuration
	cpu0 := procCPU(r.central.pid())
	t0 = time.Now()
	if err := r.api.Do(ctx, http.MethodPost, "/v1/strategies/patch/actions", nil, map[string]string{"action": "apply"}, nil); err != nil {
		return res, err
	}
	deadline := t0.Add(3*res.Ideal + 5*time.Minute)
	last := time.Now()
	for {
		if err := r.api.Do(ctx, http.MethodGet, "/v1/strategies/patch", nil, nil, &s); err != nil {
			return res, err
		}
		if s.State == strategy.Applied || s.State == strategy.ApplyFailed {
			break
		}
		if time.Since(last) > 10*time.Second {
			done := 0
			for _, stg := range s.Stages {
				for _, st := range stg.Steps {
					if st.State == strategy.StepApplied {
						done++
					}
				}
			}
			fmt.Fprintf(r.log, "%s: %d of %d sites applied\n", time.Since(t0).Round(time.Second), done, cfg.Sites)
			last = time.Now()
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("bench: the fleet strategy is still %s after %s", s.State, time.Since(t0).Round(time.Second))
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return res, ctx.Err()
		}
	}
	res.Total = time.Since(t0)
	res.CPUPerSite = (procCPU(r.central.pid()) - cpu0) / time.Duration(max(cfg.Sites, 1))
	res.State, res.Reason = s.State, s.Reason
	var over []time.Duration
	for _, stg := range s.Stages {
		for _, st := range stg.Steps {
			if st.State != strategy.StepApplied {
				continue
			}
			res.Applied++
			if st.StartedAt != nil && st.EndedAt != nil {
				over = append(over, max(0, st.EndedAt.Sub(*st.StartedAt)-cfg.SiteDuration))
			}
		}
	}
	res.SitesPerMinute = float64(res.Applied) / res.Total.Minutes()
	if len(over) > 0 {
		slices.Sort(over)
		res.StepOverheadP50, res.StepOverheadP99, res.StepOverheadMax = Percentile(over, 50), Percentile(over, 99), over[len(over)-1]
	}
	return res, nil
}
