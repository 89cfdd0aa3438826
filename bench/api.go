package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/inventory/inventorydb"
	"github.com/petrel-edge/petrel/lab"
)

// APIConfig configures the API read benchmark (T10).
type APIConfig struct {
	Binary   string        // petrel executable for the site controller
	Duration time.Duration // measured phase of reads
	Rate     int           // offered requests per second (open loop)
	Workers  int           // concurrent client connections
	Hosts    int           // hosts seeded into the site's inventory
	Log      io.Writer     // progress
}

// APIResult is what the API benchmark measured.
type APIResult struct {
	Offered, Achieved          float64
	Requests, Errors           int
	P50, P90, P99, Max         time.Duration
	BaseP50, BaseP99           time.Duration
	ServerCPUPercent, ServerMB float64
}

// RunAPI starts a site controller as a separate process with Hosts hosts,
// offers Rate authenticated reads per second (half host lists of 50, half
// single hosts) for Duration, and reports latency measured from each
// request's scheduled start (no coordinated omission). A baseline phase of
// unauthenticated /healthz calls at the same rate measures the transport.
func RunAPI(ctx context.Context, cfg APIConfig) (APIResult, error) {
	var res APIResult
	dir, err := os.MkdirTemp("", "petrel-bench-api-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	if err := seedHosts(ctx, filepath.Join(dir, server.DatabaseFile), cfg.Hosts); err != nil {
		return res, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	addr := l.Addr().String()
	l.Close()
	conf, _ := yaml.Marshal(map[string]any{"site": "bench", "shape": "simplex", "listen": addr, "data_dir": dir, "log_level": "warn"})
	cfgPath := filepath.Join(dir, "subcloud.yaml")
	if err := os.WriteFile(cfgPath, conf, 0o600); err != nil {
		return res, err
	}
	logf, err := os.Create(filepath.Join(dir, "subcloud.log"))
	if err != nil {
		return res, err
	}
	defer logf.Close()
	cmd := exec.Command(cfg.Binary, "subcloud", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return res, err
	}
	defer func() { // stop the site controller by pid, always
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	url, caFile := "https://"+addr, filepath.Join(dir, "pki", pki.CACertFile)
	if err := waitFile(ctx, caFile, 30*time.Second); err != nil {
		return res, err
	}
	if err := lab.WaitReady(ctx, url, caFile, 30*time.Second, func() bool { return cmd.ProcessState == nil }); err != nil {
		return res, err
	}
	pw, err := auth.ReadSecretFile(filepath.Join(dir, server.AdminPasswordFile))
	if err != nil {
		return res, err
	}
	c, _ := client.New(client.Config{URL: url, CACert: caFile})
	var tok auth.IssuedToken
	if err := c.Do(ctx, http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: "admin", Password: pw}, &tok); err != nil {
		return res, err
	}
	pool, err := pki.CertPool(caFile)
	if err != nil {
		return res, err
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: cfg.Workers, MaxConnsPerHost: cfg.Workers, Proxy: nil}
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	defer tr.CloseIdleConnections()
	get := func(path string, authed bool) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
		if authed {
			req.Header.Set("Authorization", "Bearer "+tok.Token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
		}
		return nil
	}
	names := make([]string, cfg.Hosts)
	for i := range names {
		names[i] = hostName(i)
	}
	fmt.Fprintf(cfg.Log, "warm-up and baseline (/healthz) at %d req/s ...\n", cfg.Rate)
	if _, err := load(ctx, cfg.Rate, time.Second, cfg.Workers, func(int) error { return get("/healthz", false) }); err != nil {
		return res, err
	}
	base, err := load(ctx, cfg.Rate, max(cfg.Duration/3, time.Second), cfg.Workers, func(int) error { return get("/healthz", false) })
	if err != nil {
		return res, err
	}
	fmt.Fprintf(cfg.Log, "reads at %d req/s for %s ...\n", cfg.Rate, cfg.Duration)
	cpu0 := procCPU(cmd.Process.Pid)
	t0 := time.Now()
	reads, err := load(ctx, cfg.Rate, cfg.Duration, cfg.Workers, func(i int) error {
		if i%2 == 0 {
			return get("/v1/hosts?limit=50", true)
		}
		return get("/v1/hosts/"+names[i%len(names)], true)
	})
	if err != nil {
		return res, err
	}
	wall := time.Since(t0)
	res = APIResult{
		Offered: float64(cfg.Rate), Achieved: float64(reads.done) / reads.span.Seconds(),
		Requests: reads.done, Errors: reads.errors,
		P50: Percentile(reads.lat, 50), P90: Percentile(reads.lat, 90), P99: Percentile(reads.lat, 99),
		Max: reads.lat[len(reads.lat)-1], BaseP50: Percentile(base.lat, 50), BaseP99: Percentile(base.lat, 99),
		ServerCPUPercent: 100 * (procCPU(cmd.Process.Pid) - cpu0).Seconds() / wall.Seconds(),
		ServerMB:         procRSSMB(cmd.Process.Pid),
	}
	if reads.firstErr != nil {
		fmt.Fprintf(cfg.Log, "first error: %v\n", reads.firstErr)
	}
	return res, nil
}

type loadResult struct {
	lat      []time.Duration // sorted
	done     int
	errors   int
	firstErr error
	span     time.Duration
}

// load offers rate calls per second for d (open loop) over workers, each
// call's latency counted from its scheduled start.
func load(ctx context.Context, rate int, d time.Duration, workers int, call func(i int) error) (loadResult, error) {
	n := int(float64(rate) * d.Seconds())
	type job struct {
		i     int
		sched time.Time
	}
	jobs := make(chan job, n)
	lats := make([]time.Duration, n)
	var errCount atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := call(j.i); err != nil {
					errCount.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				lats[j.i] = time.Since(j.sched)
			}
		}()
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		sched := start.Add(time.Duration(i) * interval)
		if wait := time.Until(sched); wait > 0 {
			select {
			case <-ctx.Done():
				close(jobs)
				wg.Wait()
				return loadResult{}, ctx.Err()
			case <-time.After(wait):
			}
		}
		jobs <- job{i: i, sched: sched}
	}
	close(jobs)
	wg.Wait()
	slices.Sort(lats)
	r := loadResult{lat: lats, done: n, errors: int(errCount.Load()), span: time.Since(start)}
	if e, ok := firstErr.Load().(error); ok {
		r.firstErr = e
	}
	return r, nil
}

func hostName(i int) string { return fmt.Sprintf("worker-%d", i) }

// seedHosts fills a fresh site store with n worker hosts.
func seedHosts(ctx context.Context, dbFile string, n int) error {
	db, err := sqldb.Open(ctx, dbFile)
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := inventorydb.Open(ctx, db)
	if err != nil {
		return err
	}
	for i := range n {
		h := inventory.Host{UUID: uuid.NewString(), Name: hostName(i), Personality: inventory.Worker,
			Subfunctions: []string{"worker"}, Provisioning: inventory.Provisioned, Administrative: inventory.Unlocked,
			Operational: inventory.Enabled, Availability: inventory.Available, SoftwareVersion: "bench",
			Inventory: inventory.Hardware{CPUModel: "bench", Cores: 8, Threads: 16, NUMANodes: 1, MemoryMiB: 32768, Simulated: true}}
		if _, err := st.PutHost(ctx, h, 0); err != nil {
			return err
		}
	}
	return nil
}

func waitFile(ctx context.Context, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("bench: " + path + " did not appear")
}

// procCPU returns a process's user+system CPU time.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

// procRSSMB returns a process's resident set in MiB.
func procRSSMB(pid int) float64 { return procStatusMiB(pid, "VmRSS:") }

// Latencies are the sorted latencies of the calls.
func (r *loadResult) Latencies() []time.Duration { return r.lat }

// Errors is how many calls failed.
func (r *loadResult) Errors() int { return r.errors }

// Achieved is the completed calls per second.
func (r *loadResult) Achieved() float64 { return float64(r.done) / r.span.Seconds() }
