package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
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

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/bench/fleetsim"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/lab"
)

// FleetConfig configures the fleet benchmark (T1, T2, T3, T10 at scale).
type FleetConfig struct {
	Binary     string // the petrel executable: central and the simulators
	Sites      int
	PerProcess int    // simulated sites per simulator process (≤ 5,000: 20,000 fds per process)
	Dir        string // kept between runs: PostgreSQL, central's data, site keys and certificates; "" = a temp dir, removed
	SQLite     bool   // central on SQLite instead of PostgreSQL
	Loss       float64
	Seed       uint64
	Hold       time.Duration // window for central's CPU and RSS while holding the fleet
	APIRate    int           // API reads per second while holding (0: skip)
	APIFor     time.Duration
	Flavors    int // flavors created at central, each timed to every site (0: skip)
	Silence    int // sites black-holed for offline detection (0: skip)
	Restart    bool
	// AlarmsPerMinute is each site's alarm churn (a summary delta each).
	AlarmsPerMinute float64
	Log             io.Writer
	// PatchPublicKey, when set, is the patch key central and the
	// simulated sites trust (bench strategy).
	PatchPublicKey string
	// StrategyDuration is how long a simulated site strategy applies.
	StrategyDuration time.Duration
}

// FleetResult is what the fleet benchmark measured.
type FleetResult struct {
	Sites, Processes int
	Engine           string
	Setup            time.Duration // registration, certificates (those not cached)
	Issued           int           // certificates issued in this run
	ConnectAll       time.Duration // simulators started → every site online at central
	SyncAll          time.Duration // every site managed → every resource in-sync (0: not reached)
	InSync           int
	HeldOnline       int
	CPU              float64 // central, core-seconds per second over the hold window
	RSSMiB           float64
	DBCPU            float64 // PostgreSQL's processes, core-seconds per second (0 on SQLite)
	API              *loadResult
	Baseline         *loadResult // GET /healthz at APIRate in the same run
	APIRate          int
	FlavorP50        time.Duration
	FlavorP99        time.Duration
	FlavorMax        time.Duration
	FlavorSites      int // sites × flavors received
	OfflineP50       time.Duration
	OfflineP99       time.Duration
	OfflineDetected  int
	Silenced         int
	FalseOffline     int // sites never cut that central marked offline (WAN loss and hold phases)
	Resync           time.Duration
	Resynced         int
	RestartFalse     int           // sites marked offline after the restart
	StormAPIMax      time.Duration // the slowest API answer while sites reconnected
	StormAPIErrors   int           // failed API calls after central was ready again
	StormAPICalls    int
	CentralDown      time.Duration // SIGTERM → ready again
	Loss             float64
	Notes            []string
}

// fleetRun is one benchmark run's processes and clients.
type fleetRun struct {
	cfg     FleetConfig
	dir     string
	log     io.Writer
	central *process
	cfgPath string
	url     string
	caFile  string
	dataDir string
	api     *client.Client
	hc      *http.Client
	token   string
	sims    []*process
	ctls    []*fleetsim.Control
	names   []string
	owner   map[string]int // site -> simulator index
	pgStop  func()
	pgPID   func() int
}

// process is a child process stopped by its PID.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcess(name, logFile string, argv ...string) (*process, error) {
	logf, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM, then SIGKILL after limit, and waits for the exit.
func (p *process) stop(limit time.Duration) {
	if !p.alive() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(limit):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// RunFleet runs the fleet benchmark: a real central as its own process
// (PostgreSQL unless SQLite), cfg.Sites registered subclouds, simulator
// processes dialing home as those sites, then each measurement phase in
// turn. Every process it starts is stopped by PID before it returns.
func RunFleet(ctx context.Context, cfg FleetConfig) (FleetResult, error) {
	res := FleetResult{Sites: cfg.Sites, Loss: cfg.Loss, Engine: "PostgreSQL 15"}
	if cfg.SQLite {
		res.Engine = "SQLite"
	}
	if cfg.PerProcess <= 0 {
		cfg.PerProcess = 4000
	}
	cfg.PerProcess = min(cfg.PerProcess, 5000)
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	r := &fleetRun{cfg: cfg, log: cfg.Log, owner: map[string]int{}}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "petrel-fleet-")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	r.dir = dir
	defer r.teardown()
	for _, d := range []string{"central", "sites", "sim", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return res, err
		}
	}
	if err := r.startCentral(ctx); err != nil {
		return res, err
	}
	t0 := time.Now()
	issued, err := r.register(ctx)
	if err != nil {
		return res, err
	}
	res.Setup, res.Issued = time.Since(t0), issued
	fmt.Fprintf(r.log, "%d sites registered, %d certificates issued (the rest cached) in %s\n", cfg.Sites, issued, res.Setup.Round(time.Millisecond))
	// Flavors an earlier run in this directory created: the new simulated
	// sites hold none, and repairing them all would load this run.
	if n, err := r.dropOldFlavors(ctx); err != nil {
		return res, err
	} else if n > 0 {
		fmt.Fprintf(r.log, "%d flavors of earlier runs deleted\n", n)
	}

	t0 = time.Now()
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
	res.ConnectAll = time.Since(t0)
	fmt.Fprintf(r.log, "all %d sites online at central %s after the simulators started\n", cfg.Sites, res.ConnectAll.Round(time.Millisecond))
	holdStart := time.Now().UTC()

	// Managed: central's sync engine audits every site through the relay.
	t0 = time.Now()
	if err := r.manageAll(ctx); err != nil {
		return res, err
	}
	res.InSync, err = r.waitInSync(ctx, limit)
	if err != nil {
		res.Notes = append(res.Notes, err.Error())
	} else {
		res.SyncAll = time.Since(t0)
	}
	fmt.Fprintf(r.log, "%d of %d sites in-sync (every resource) after manage (%s)\n", res.InSync, cfg.Sites, time.Since(t0).Round(time.Millisecond))

	// Holding: central's CPU and RSS.
	if cfg.Hold > 0 {
		fmt.Fprintf(r.log, "holding %d sites for %s ...\n", cfg.Sites, cfg.Hold)
		cpu0, db0 := procCPU(r.central.pid()), r.dbCPU()
		w0 := time.Now()
		if !sleepCtx(ctx, cfg.Hold) {
			return res, ctx.Err()
		}
		wall := time.Since(w0).Seconds()
		res.CPU = (procCPU(r.central.pid()) - cpu0).Seconds() / wall
		res.DBCPU = (r.dbCPU() - db0).Seconds() / wall
		res.RSSMiB = procRSSMB(r.central.pid())
		if res.HeldOnline, err = r.countOnline(ctx); err != nil {
			return res, err
		}
		fmt.Fprintf(r.log, "held %d online: central %.3f cores, RSS %.0f MiB; database %.3f cores\n", res.HeldOnline, res.CPU, res.RSSMiB, res.DBCPU)
	}
	if cfg.APIRate > 0 {
		lr, err := r.apiLoad(ctx, cfg.APIRate, cfg.APIFor)
		if err != nil {
			return res, err
		}
		res.API, res.APIRate = &lr, cfg.APIRate
		fmt.Fprintf(r.log, "API reads at %d/s: p50 %s p99 %s max %s, %d errors\n", cfg.APIRate, Percentile(lr.lat, 50),
			Percentile(lr.lat, 99), lr.lat[len(lr.lat)-1], lr.errors)
		// The baseline of the same run: unauthenticated /healthz at the same
		// rate, from the same client — what the machine itself adds.
		bl, err := load(ctx, cfg.APIRate, cfg.APIFor, 32, func(int) error { return r.getPlain(ctx, "/healthz") })
		if err != nil {
			return res, err
		}
		res.Baseline = &bl
		fmt.Fprintf(r.log, "baseline GET /healthz at %d/s: p50 %s p99 %s max %s, %d errors\n", cfg.APIRate, Percentile(bl.lat, 50),
			Percentile(bl.lat, 99), bl.lat[len(bl.lat)-1], bl.errors)
	}
	if cfg.Flavors > 0 {
		if err := r.flavors(ctx, &res); err != nil {
			return res, err
		}
	}
	silenced := map[string]bool{}
	if cfg.Silence > 0 {
		if err := r.offline(ctx, &res, silenced); err != nil {
			return res, err
		}
	}
	// False offline: 280.001 raised for a site that was never cut, from
	// the moment all were online until now (WAN loss all along).
	if res.FalseOffline, err = r.offlineRaised(ctx, holdStart, silenced); err != nil {
		return res, err
	}
	if cfg.Restart {
		if err := r.restart(ctx, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

func (r *fleetRun) teardown() {
	for _, s := range r.sims {
		s.stop(20 * time.Second)
	}
	if r.central != nil {
		r.central.stop(20 * time.Second)
	}
	if r.pgStop != nil {
		r.pgStop()
	}
	if r.hc != nil {
		r.hc.CloseIdleConnections()
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startCentral starts the database (unless SQLite) and central, and logs in.
func (r *fleetRun) startCentral(ctx context.Context) error {
	r.dataDir = filepath.Join(r.dir, "central")
	r.cfgPath = filepath.Join(r.dataDir, "central.yaml")
	conf := map[string]any{}
	if b, err := os.ReadFile(r.cfgPath); err == nil {
		if err := yaml.Unmarshal(b, &conf); err != nil {
			return err
		}
	}
	if conf["listen"] == nil {
		for _, k := range []string{"listen", "site_listen"} {
			a, err := freeAddr()
			if err != nil {
				return err
			}
			conf[k] = a
		}
	}
	conf["data_dir"], conf["log_level"] = r.dataDir, "warn"
	if r.cfg.PatchPublicKey != "" {
		conf["patch_public_key"] = r.cfg.PatchPublicKey
	}
	if !r.cfg.SQLite {
		dsn, err := r.startPostgres(ctx)
		if err != nil {
			return err
		}
		conf["database"] = dsn
	}
	y, _ := yaml.Marshal(conf)
	if err := atomicfile.Write(r.cfgPath, y, 0o600); err != nil {
		return err
	}
	r.url = "https://" + conf["listen"].(string)
	r.caFile = filepath.Join(r.dataDir, "pki", pki.CACertFile)
	if err := r.launchCentral(ctx); err != nil {
		return err
	}
	pw, err := auth.ReadSecretFile(filepath.Join(r.dataDir, server.AdminPasswordFile))
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{URL: r.url, CACert: r.caFile})
	if err != nil {
		return err
	}
	var tok auth.IssuedToken
	if err := c.Do(ctx, http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: auth.BootstrapAdmin, Password: pw}, &tok); err != nil {
		return err
	}
	r.token = tok.Token
	if r.api, err = client.New(client.Config{URL: r.url, CACert: r.caFile, Token: tok.Token, Timeout: 60 * time.Second}); err != nil {
		return err
	}
	pool, err := pki.CertPool(r.caFile)
	if err != nil {
		return err
	}
	r.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 64, Proxy: nil}}
	return nil
}

// launchCentral starts central's process and waits until it is ready.
func (r *fleetRun) launchCentral(ctx context.Context) error {
	p, err := startProcess("central", filepath.Join(r.dir, "logs", "central.log"), r.cfg.Binary, "central", "--config", r.cfgPath)
	if err != nil {
		return err
	}
	r.central = p
	if err := waitFile(ctx, r.caFile, 60*time.Second); err != nil {
		return err
	}
	if err := lab.WaitReady(ctx, r.url, r.caFile, 120*time.Second, p.alive); err != nil {
		return fmt.Errorf("bench: central: %w (log: %s)", err, filepath.Join(r.dir, "logs", "central.log"))
	}
	return nil
}

// startPostgres starts (initialising if needed) a PostgreSQL 15 cluster
// in dir/pg, as scripts/postgres.sh does, with durable settings, and
// returns central's DSN. The cluster is stopped by teardown.
func (r *fleetRun) startPostgres(ctx context.Context) (string, error) {
	bin := "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "initdb")); err != nil {
		return "", errors.New("bench: PostgreSQL 15 is not installed (apt-get install postgresql), or pass --sqlite")
	}
	pgDir := filepath.Join(r.dir, "pg")
	data := filepath.Join(pgDir, "data")
	// The socket path must stay short (unix sockets: 107 bytes).
	sock, err := os.MkdirTemp("", "petrel-fpg-")
	if err != nil {
		return "", err
	}
	r.pgStop = func() { os.RemoveAll(sock) } // until the server runs
	asPG := func(argv ...string) *exec.Cmd {
		if os.Geteuid() == 0 {
			return exec.CommandContext(ctx, "runuser", append([]string{"-u", "postgres", "--"}, argv...)...)
		}
		return exec.CommandContext(ctx, argv[0], argv[1:]...)
	}
	chown := func(p string) error {
		if os.Geteuid() != 0 {
			return nil
		}
		return exec.Command("chown", "-R", "postgres:", p).Run()
	}
	if err := os.MkdirAll(pgDir, 0o700); err != nil {
		return "", err
	}
	// The server's user must reach its directory through ours.
	if err := os.Chmod(r.dir, 0o711); err != nil {
		return "", err
	}
	if err := chown(pgDir); err != nil {
		return "", err
	}
	if err := chown(sock); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		if out, err := asPG(filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
			"--locale=C.UTF-8").CombinedOutput(); err != nil {
			return "", fmt.Errorf("bench: initdb: %v: %s", err, out)
		}
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	// fsync and synchronous_commit stay at their durable defaults (on).
	opts := fmt.Sprintf("-p %s -k %s -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB", port, sock)
	if out, err := asPG(filepath.Join(bin, "pg_ctl"), "-D", data, "-l", filepath.Join(pgDir, "server.log"), "-w", "-t", "60",
		"-o", opts, "start").CombinedOutput(); err != nil {
		os.RemoveAll(sock)
		return "", fmt.Errorf("bench: pg_ctl start: %v: %s", err, out)
	}
	r.pgStop = func() {
		_ = asPG(filepath.Join(bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop").Run()
		// pg_ctl may fail under a cancelled ctx: stop the postmaster by its pid.
		if pid := r.pgPID(); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGINT)
			for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
		os.RemoveAll(sock)
	}
	r.pgPID = func() int {
		b, err := os.ReadFile(filepath.Join(data, "postmaster.pid"))
		if err != nil {
			return 0
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
		return pid
	}
	admin := fmt.Sprintf("host=127.0.0.1 port=%s user=postgres dbname=postgres sslmode=disable", port)
	db, err := sqldb.Open(ctx, admin)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var n int64
	if err := db.Raw("SELECT count(*) FROM pg_database WHERE datname = 'petrel_central'").Scan(&n).Error; err != nil {
		return "", err
	}
	if n == 0 {
		if err := db.Exec("CREATE DATABASE petrel_central").Error; err != nil {
			return "", err
		}
	}
	return strings.Replace(admin, "dbname=postgres", "dbname=petrel_central", 1), nil
}

// dbCPU is the CPU time of the PostgreSQL server's processes (0 on SQLite).
func (r *fleetRun) dbCPU() time.Duration {
	if r.pgPID == nil {
		return 0
	}
	root := r.pgPID()
	if root == 0 {
		return 0
	}
	total := procCPU(root)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		if len(f) > 1 && f[1] == strconv.Itoa(root) {
			total += procCPU(pid)
		}
	}
	return total
}

func siteName(i int) string { return fmt.Sprintf("sim-%05d", i) }

// parallel runs fn for 0..n-1 on workers goroutines; the first error wins.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// listAll pages through /v1/subclouds with query q.
func (r *fleetRun) listAll(ctx context.Context, q url.Values, fn func(central.Subcloud)) error {
	if q == nil {
		q = url.Values{}
	}
	q.Set("limit", strconv.Itoa(rest.MaxLimit))
	q.Del("page_token")
	for {
		var l rest.List[central.Subcloud]
		if err := r.api.Do(ctx, http.MethodGet, "/v1/subclouds", q, nil, &l); err != nil {
			return err
		}
		for _, sc := range l.Items {
			fn(sc)
		}
		if l.NextPageToken == "" {
			return nil
		}
		q.Set("page_token", l.NextPageToken)
	}
}

// register makes every site a subcloud at central with a certificate,
// reusing keys and certificates cached in dir/sites that central still
// holds as current. It returns how many certificates it issued.
func (r *fleetRun) register(ctx context.Context) (int, error) {
	have := map[string]string{} // site -> current certificate serial
	if err := r.listAll(ctx, nil, func(sc central.Subcloud) {
		have[sc.Name] = ""
		if sc.Certificate != nil {
			have[sc.Name] = sc.Certificate.Serial
		}
	}); err != nil {
		return 0, err
	}
	credDir := filepath.Join(r.dir, "sites")
	for i := range r.cfg.Sites {
		r.names = append(r.names, siteName(i))
	}
	var issued atomic.Int64
	err := parallel(ctx, len(r.names), 16, func(i int) error {
		name := r.names[i]
		serial, ok := have[name]
		if !ok {
			shape := []string{"simplex", "duplex", "multi-server"}[i%3]
			if err := r.api.Do(ctx, http.MethodPost, "/v1/subclouds", nil, map[string]string{"name": name, "shape": shape}, nil); err != nil {
				return fmt.Errorf("register %s: %w", name, err)
			}
		}
		if serial != "" && cachedSerial(credDir, name) == serial {
			return nil
		}
		keyPEM, csrPEM, err := pki.NewCSR(name)
		if err != nil {
			return err
		}
		var creds central.SiteCredentials
		if err := r.api.Do(ctx, http.MethodPost, "/v1/subclouds/"+name+"/certificate", nil,
			central.SiteCertificateRequest{CSR: string(csrPEM)}, &creds); err != nil {
			return fmt.Errorf("certificate for %s: %w", name, err)
		}
		if err := atomicfile.Write(fleetsim.KeyFile(credDir, name), keyPEM, 0o600); err != nil {
			return err
		}
		issued.Add(1)
		return atomicfile.Write(fleetsim.CertFile(credDir, name), []byte(creds.Certificate), 0o600)
	})
	return int(issued.Load()), err
}

// cachedSerial is the serial (hex) of a cached site certificate, "" if none.
func cachedSerial(dir, site string) string {
	pair, err := tls.LoadX509KeyPair(fleetsim.CertFile(dir, site), fleetsim.KeyFile(dir, site))
	if err != nil || len(pair.Certificate) == 0 {
		return ""
	}
	c, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return ""
	}
	return c.SerialNumber.Text(16)
}

// simConfig is the simulator configuration for sites [from, to).
func (r *fleetRun) simConfig(k, from, to int) fleetsim.Config {
	addr := ""
	if b, err := os.ReadFile(r.cfgPath); err == nil {
		var conf map[string]any
		if yaml.Unmarshal(b, &conf) == nil {
			addr, _ = conf["site_listen"].(string)
		}
	}
	cfg := fleetsim.Config{CentralAddr: addr, CACert: r.caFile, RelayKey: filepath.Join(r.dataDir, central.RelayPublicKey),
		CredDir: filepath.Join(r.dir, "sites"), Loss: r.cfg.Loss, Seed: r.cfg.Seed + uint64(k),
		AlarmsPerMinute: r.cfg.AlarmsPerMinute, Control: filepath.Join(r.dir, "sim", fmt.Sprintf("%d.sock", k)),
		PatchPublicKey: r.cfg.PatchPublicKey, StrategyDuration: r.cfg.StrategyDuration}
	for i := from; i < to; i++ {
		cfg.Sites = append(cfg.Sites, fleetsim.Site{Name: r.names[i], Index: i})
	}
	return cfg
}

// startSims starts the simulator processes, PerProcess sites each.
func (r *fleetRun) startSims(ctx context.Context) error {
	for k, from := 0, 0; from < len(r.names); k, from = k+1, from+r.cfg.PerProcess {
		to := min(from+r.cfg.PerProcess, len(r.names))
		sc := r.simConfig(k, from, to)
		b, _ := json.MarshalIndent(sc, "", " ")
		path := filepath.Join(r.dir, "sim", fmt.Sprintf("%d.json", k))
		if err := atomicfile.Write(path, b, 0o600); err != nil {
			return err
		}
		p, err := startProcess(fmt.Sprintf("sitesim-%d", k), filepath.Join(r.dir, "logs", fmt.Sprintf("sitesim-%d.log", k)),
			r.cfg.Binary, "bench", "sitesim", "--config", path)
		if err != nil {
			return err
		}
		r.sims = append(r.sims, p)
		ctl := fleetsim.NewControl(sc.Control)
		r.ctls = append(r.ctls, ctl)
		for i := from; i < to; i++ {
			r.owner[r.names[i]] = k
		}
		if err := ctl.Wait(ctx, 60*time.Second); err != nil {
			return err
		}
	}
	fmt.Fprintf(r.log, "%d simulator processes started (≤ %d sites each)\n", len(r.sims), r.cfg.PerProcess)
	return nil
}

func (r *fleetRun) countOnline(ctx context.Context) (int, error) {
	n := 0
	err := r.listAll(ctx, url.Values{"availability": {"online"}}, func(central.Subcloud) { n++ })
	return n, err
}

// waitOnline waits until want sites are online at central.
func (r *fleetRun) waitOnline(ctx context.Context, want int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	last := time.Now()
	for {
		n, err := r.countOnline(ctx)
		if err == nil && n >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %d of %d sites online after %s (err %v)", n, want, limit, err)
		}
		if time.Since(last) > 10*time.Second {
			fmt.Fprintf(r.log, "  %d of %d online\n", n, want)
			last = time.Now()
		}
		if err := r.simsAlive(); err != nil {
			return err
		}
		if !sleepCtx(ctx, time.Second) {
			return ctx.Err()
		}
	}
}

// welcomed is how many sites central welcomed at or after since.
func (r *fleetRun) welcomed(ctx context.Context, since time.Time) (int, error) {
	n := 0
	for _, c := range r.ctls {
		st, err := c.Status(ctx, since)
		if err != nil {
			return 0, err
		}
		n += st.Welcomed
	}
	return n, nil
}

// waitWelcomed waits until every site's link was welcomed since since
// (central may still list sites online from before its restart).
func (r *fleetRun) waitWelcomed(ctx context.Context, since time.Time, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		n, err := r.welcomed(ctx, since)
		if err != nil {
			return err
		}
		if n >= r.cfg.Sites {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %d of %d sites linked after %s", n, r.cfg.Sites, limit)
		}
		if err := r.simsAlive(); err != nil {
			return err
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (r *fleetRun) simsAlive() error {
	for _, s := range r.sims {
		if !s.alive() {
			return fmt.Errorf("bench: %s exited (log: %s)", s.name, filepath.Join(r.dir, "logs", s.name+".log"))
		}
	}
	if r.central != nil && !r.central.alive() {
		return fmt.Errorf("bench: central exited (log: %s)", filepath.Join(r.dir, "logs", "central.log"))
	}
	return nil
}

func (r *fleetRun) manageAll(ctx context.Context) error {
	var todo []string
	if err := r.listAll(ctx, url.Values{"management": {"unmanaged"}}, func(sc central.Subcloud) { todo = append(todo, sc.Name) }); err != nil {
		return err
	}
	return parallel(ctx, len(todo), 16, func(i int) error {
		return r.api.Do(ctx, http.MethodPost, "/v1/subclouds/"+todo[i]+"/action", nil, central.SubcloudActionRequest{Action: "manage"}, nil)
	})
}

// waitInSync waits until every site shows every resource in-sync.
func (r *fleetRun) waitInSync(ctx context.Context, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	last := time.Now()
	for {
		n := 0
		err := r.listAll(ctx, nil, func(sc central.Subcloud) {
			ok := len(sc.Sync) > 0
			for _, st := range sc.Sync {
				ok = ok && st == central.InSync
			}
			if ok {
				n++
			}
		})
		if err == nil && n >= r.cfg.Sites {
			return n, nil
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("%d of %d sites in-sync after %s", n, r.cfg.Sites, limit)
		}
		if time.Since(last) > 10*time.Second {
			fmt.Fprintf(r.log, "  %d of %d in-sync\n", n, r.cfg.Sites)
			last = time.Now()
		}
		if err := r.simsAlive(); err != nil {
			return n, err
		}
		if !sleepCtx(ctx, time.Second) {
			return n, ctx.Err()
		}
	}
}

// getPlain is one unauthenticated read.
func (r *fleetRun) getPlain(ctx context.Context, path string) error { return r.read(ctx, path, false) }

// get is one authenticated API read.
func (r *fleetRun) get(ctx context.Context, path string) error { return r.read(ctx, path, true) }

func (r *fleetRun) read(ctx context.Context, path string, authenticated bool) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.url+path, nil)
	if authenticated {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return nil
}

// apiLoad offers rate reads per second: half one subcloud, half a page of 50.
func (r *fleetRun) apiLoad(ctx context.Context, rate int, d time.Duration) (loadResult, error) {
	fmt.Fprintf(r.log, "API reads at %d/s for %s while holding the fleet ...\n", rate, d)
	return load(ctx, rate, d, 32, func(i int) error {
		if i%2 == 0 {
			return r.get(ctx, "/v1/subclouds?limit=50")
		}
		return r.get(ctx, "/v1/subclouds/"+r.names[(i*7919)%len(r.names)])
	})
}

// dropOldFlavors deletes the flavors earlier runs created (fleet-*).
func (r *fleetRun) dropOldFlavors(ctx context.Context) (int, error) {
	var l rest.List[compute.Flavor]
	if err := r.api.Do(ctx, http.MethodGet, "/v1/flavors", url.Values{"limit": {strconv.Itoa(rest.MaxLimit)}}, nil, &l); err != nil {
		return 0, err
	}
	n := 0
	for _, f := range l.Items {
		if !strings.HasPrefix(f.Name, "fleet-") {
			continue
		}
		if err := r.api.Do(ctx, http.MethodDelete, "/v1/flavors/"+f.ID, nil, nil, nil); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// flavors creates flavors at central one after another and times each
// until every site received it (the simulators record each arrival).
func (r *fleetRun) flavors(ctx context.Context, res *FleetResult) error {
	var all []time.Duration
	for k := range r.cfg.Flavors {
		var fl compute.Flavor
		name := fmt.Sprintf("fleet-%d-%d", time.Now().Unix(), k)
		// From the request: central may push the flavor to sites before
		// its answer to the POST arrives here (a busy machine).
		at := time.Now()
		if err := r.api.Do(ctx, http.MethodPost, "/v1/flavors", nil, central.FlavorRequest{Name: name, VCPUs: 1, RAMMiB: 64,
			DiskGiB: 1, Public: true}, &fl); err != nil {
			return err
		}
		deadline := at.Add(60*time.Second + time.Duration(r.cfg.Sites)*5*time.Millisecond)
		for {
			var got []time.Duration
			for _, c := range r.ctls {
				ft, err := c.Flavor(ctx, fl.ID)
				if err != nil {
					return err
				}
				for _, ns := range ft.At {
					got = append(got, time.Unix(0, ns).Sub(at))
				}
			}
			if len(got) >= r.cfg.Sites || time.Now().After(deadline) {
				slices.Sort(got)
				if len(got) > 0 {
					fmt.Fprintf(r.log, "flavor %d: %d of %d sites, p50 %s p99 %s last %s\n", k+1, len(got), r.cfg.Sites,
						Percentile(got, 50).Round(time.Millisecond), Percentile(got, 99).Round(time.Millisecond), got[len(got)-1].Round(time.Millisecond))
				}
				all = append(all, got...)
				if len(got) < r.cfg.Sites {
					res.Notes = append(res.Notes, fmt.Sprintf("flavor %d reached %d of %d sites", k+1, len(got), r.cfg.Sites))
				}
				break
			}
			if !sleepCtx(ctx, 250*time.Millisecond) {
				return ctx.Err()
			}
		}
	}
	slices.Sort(all)
	res.FlavorSites = len(all)
	if len(all) > 0 {
		res.FlavorP50, res.FlavorP99, res.FlavorMax = Percentile(all, 50), Percentile(all, 99), all[len(all)-1]
	}
	return nil
}

// offlineEvents returns, per site, when central raised 280.001 at or
// after since.
func (r *fleetRun) offlineEvents(ctx context.Context, since time.Time) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	q := url.Values{"alarm_id": {"280.001"}, "type": {string(faultmgr.EventSet)}, "since": {since.UTC().Format(time.RFC3339Nano)},
		"limit": {strconv.Itoa(rest.MaxLimit)}}
	for {
		var l rest.List[faultmgr.Event]
		if err := r.api.Do(ctx, http.MethodGet, "/v1/events", q, nil, &l); err != nil {
			return nil, err
		}
		for _, e := range l.Items {
			site := strings.TrimPrefix(e.EntityInstanceID, "subcloud=")
			if t, ok := out[site]; !ok || e.Timestamp.Before(t) {
				out[site] = e.Timestamp
			}
		}
		if l.NextPageToken == "" {
			return out, nil
		}
		q.Set("page_token", l.NextPageToken)
	}
}

func (r *fleetRun) offlineRaised(ctx context.Context, since time.Time, except map[string]bool) (int, error) {
	ev, err := r.offlineEvents(ctx, since)
	if err != nil {
		return 0, err
	}
	n := 0
	for site := range ev {
		if !except[site] {
			n++
		}
	}
	return n, nil
}

// silenceSites black-holes (on) or restores sites, through their simulators.
func (r *fleetRun) silenceSites(ctx context.Context, names []string, on bool) error {
	by := map[int][]string{}
	for _, n := range names {
		by[r.owner[n]] = append(by[r.owner[n]], n)
	}
	for k, ns := range by {
		if err := r.ctls[k].Silence(ctx, ns, on); err != nil {
			return err
		}
	}
	return nil
}

// offline black-holes cfg.Silence sites at once and times until central
// raises 280.001 for each; then lets them back.
func (r *fleetRun) offline(ctx context.Context, res *FleetResult, silenced map[string]bool) error {
	n := min(r.cfg.Silence, len(r.names))
	var names []string
	for i := range n {
		name := r.names[i*len(r.names)/n]
		names = append(names, name)
		silenced[name] = true
	}
	fmt.Fprintf(r.log, "black-holing %d sites ...\n", n)
	at := time.Now()
	if err := r.silenceSites(ctx, names, true); err != nil {
		return err
	}
	deadline := at.Add(90 * time.Second)
	var ev map[string]time.Time
	for {
		var err error
		if ev, err = r.offlineEvents(ctx, at.Add(-time.Second)); err != nil {
			return err
		}
		got := 0
		for _, s := range names {
			if _, ok := ev[s]; ok {
				got++
			}
		}
		if got == n || time.Now().After(deadline) {
			break
		}
		if !sleepCtx(ctx, time.Second) {
			return ctx.Err()
		}
	}
	var lat []time.Duration
	for _, s := range names {
		if t, ok := ev[s]; ok {
			lat = append(lat, t.Sub(at))
		}
	}
	slices.Sort(lat)
	res.Silenced, res.OfflineDetected = n, len(lat)
	if len(lat) > 0 {
		res.OfflineP50, res.OfflineP99 = Percentile(lat, 50), Percentile(lat, 99)
	}
	fmt.Fprintf(r.log, "central declared %d of %d offline: p50 %s p99 %s\n", len(lat), n, res.OfflineP50.Round(time.Millisecond),
		res.OfflineP99.Round(time.Millisecond))
	if err := r.silenceSites(ctx, names, false); err != nil {
		return err
	}
	return r.waitOnline(ctx, r.cfg.Sites, 120*time.Second)
}

// restart stops central (SIGTERM) and starts it again, polling the API
// throughout, and times until every site was welcomed again and central
// lists them all online; any 280.001 raised meanwhile is a false offline.
func (r *fleetRun) restart(ctx context.Context, res *FleetResult) error {
	fmt.Fprintf(r.log, "restarting central ...\n")
	t0 := time.Now()
	pollCtx, stopPoll := context.WithCancel(ctx)
	var ready atomic.Bool
	var mu sync.Mutex
	var calls, errs int
	var slowest time.Duration
	var pollWG sync.WaitGroup
	pollWG.Add(1)
	go func() {
		defer pollWG.Done()
		for pollCtx.Err() == nil {
			if ready.Load() {
				t := time.Now()
				err := r.get(pollCtx, "/v1/subclouds?limit=50")
				d := time.Since(t)
				mu.Lock()
				calls++
				if err != nil && pollCtx.Err() == nil {
					errs++
				}
				slowest = max(slowest, d)
				mu.Unlock()
			}
			sleepCtx(pollCtx, 100*time.Millisecond)
		}
	}()
	defer func() { stopPoll(); pollWG.Wait() }()
	r.central.stop(30 * time.Second)
	r.hc.CloseIdleConnections()
	if err := r.launchCentral(ctx); err != nil {
		return err
	}
	res.CentralDown = time.Since(t0)
	ready.Store(true)
	fmt.Fprintf(r.log, "central ready again after %s; waiting for every site ...\n", res.CentralDown.Round(time.Millisecond))
	deadline := t0.Add(180 * time.Second)
	for {
		welcomed, err := r.welcomed(ctx, t0)
		if err != nil {
			return err
		}
		res.Resynced = welcomed
		if welcomed >= r.cfg.Sites {
			n, err := r.countOnline(ctx)
			if err == nil && n >= r.cfg.Sites {
				break
			}
		}
		if time.Now().After(deadline) {
			res.Notes = append(res.Notes, fmt.Sprintf("after the restart %d of %d sites were welcomed within 180 s", welcomed, r.cfg.Sites))
			break
		}
		if err := r.simsAlive(); err != nil {
			return err
		}
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
	res.Resync = time.Since(t0)
	fmt.Fprintf(r.log, "%d sites resynced %s after the restart began\n", res.Resynced, res.Resync.Round(time.Millisecond))
	// Past central's restart grace: a site that was not back would be
	// declared offline by now.
	if !sleepCtx(ctx, time.Until(t0.Add(central.DefaultRestartGrace+5*time.Second))) {
		return ctx.Err()
	}
	var err error
	if res.RestartFalse, err = r.offlineRaised(ctx, t0, nil); err != nil {
		return err
	}
	stopPoll()
	pollWG.Wait()
	res.StormAPICalls, res.StormAPIErrors, res.StormAPIMax = calls, errs, slowest
	fmt.Fprintf(r.log, "falsely offline after the restart: %d; API during the storm: %d calls, %d errors, slowest %s\n",
		res.RestartFalse, calls, errs, slowest.Round(time.Millisecond))
	return nil
}
