package central_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/internal/server/servertest"
)

// fakeRunner plays the deploy playbook: fail scripts a phase's failures (a
// task name per run, "" for success); block makes a phase wait until its
// context ends (central stopping, or an abort).
type fakeRunner struct {
	mu    sync.Mutex
	fail  map[central.DeployPhase][]string
	block map[central.DeployPhase]bool
	jobs  []central.PlaybookJob
	seen  map[string][]byte // files of the last job's directory
	start chan central.DeployPhase
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{fail: map[central.DeployPhase][]string{}, block: map[central.DeployPhase]bool{},
		seen: map[string][]byte{}, start: make(chan central.DeployPhase, 16)}
}

func (f *fakeRunner) RunPlaybook(ctx context.Context, job central.PlaybookJob) error {
	f.mu.Lock()
	f.jobs = append(f.jobs, job)
	for _, n := range []string{"inventory.ini", "values.yml", "secrets.yml"} {
		b, _ := os.ReadFile(filepath.Join(job.Dir, n))
		f.seen[n] = b
		if fi, err := os.Stat(filepath.Join(job.Dir, n)); err == nil {
			f.seen[n+".mode"] = []byte(fi.Mode().Perm().String())
		}
	}
	block := f.block[job.Phase]
	var task string
	if s := f.fail[job.Phase]; len(s) > 0 {
		task, f.fail[job.Phase] = s[0], s[1:]
	}
	f.mu.Unlock()
	f.start <- job.Phase
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if task != "" {
		return &central.PlaybookFailure{Task: task, Host: job.Subcloud, Message: "something broke"}
	}
	return nil
}

func (f *fakeRunner) set(fn func(f *fakeRunner)) { f.mu.Lock(); fn(f); f.mu.Unlock() }

const deployValues = `
system_mode: simplex
management_subnet: 10.88.40.0/24
management_start_address: 10.88.40.10
management_gateway_address: 10.88.40.1
external_oam_subnet: 10.88.40.0/24
external_oam_gateway_address: 10.88.40.1
external_oam_floating_address: 10.88.40.2
`

type deployEnv struct {
	c      *central.Central
	api    *client.Client
	runner *fakeRunner
	cfg    central.Config
}

func startDeployCentral(t *testing.T, cfg central.Config) *deployEnv {
	t.Helper()
	c, err := central.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	return &deployEnv{c: c, api: servertest.Client(t, c, servertest.AdminToken(t, c)), runner: cfg.Deploy.Runner.(*fakeRunner), cfg: cfg}
}

func newDeployEnv(t *testing.T) *deployEnv {
	t.Helper()
	cfg := central.Config{Shell: servertest.Shell(t), SiteListen: "127.0.0.1:0",
		Deploy: central.DeployConfig{Runner: newFakeRunner(), Binary: "/usr/bin/true"}}
	e := startDeployCentral(t, cfg)
	if err := e.api.Do(context.Background(), http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{
		Name: "edge-1", BootstrapAddress: "127.0.0.5", BootstrapValues: deployValues}, nil); err != nil {
		t.Fatal(err)
	}
	return e
}

var opts = central.DeployOptions{SSHKeyFile: "/etc/petrel/deploy.key", SSHPort: 2222,
	Values: map[string]any{"software_root": "/var/lib/petrel/edge-1", "platform": "host"}}

// waitDeploy polls the deploy until ok says so.
func (e *deployEnv) waitDeploy(t *testing.T, what string, ok func(central.Deploy) bool) central.Deploy {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var d central.Deploy
	for time.Now().Before(deadline) {
		if err := e.api.Do(context.Background(), http.MethodGet, "/v1/subclouds/edge-1/deploy", nil, nil, &d); err == nil && ok(d) {
			return d
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("deploy of edge-1 never %s; last: phase %s state %s failure %+v", what, d.Phase, d.State, d.Failure)
	return d
}

func (e *deployEnv) status(t *testing.T) central.DeployStatus {
	t.Helper()
	var sc central.Subcloud
	if err := e.api.Do(context.Background(), http.MethodGet, "/v1/subclouds/edge-1", nil, nil, &sc); err != nil {
		t.Fatal(err)
	}
	return sc.DeployStatus
}

func results(d central.Deploy) string {
	var out []string
	for _, r := range d.Runs {
		out = append(out, string(r.Phase)+":"+r.Result)
	}
	return strings.Join(out, " ")
}

// A bootstrap that fails in a task leaves the subcloud bootstrap-failed
// with the task and a hint; resume runs the bootstrap again, then config,
// and the deploy completes.
func TestDeployPhasesFailAndResume(t *testing.T) {
	e := newDeployEnv(t)
	ctx := context.Background()
	e.runner.set(func(f *fakeRunner) {
		f.fail[central.PhaseBootstrap] = []string{"common : Install petrel into the active slot"}
	})
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, opts, nil); err != nil {
		t.Fatal(err)
	}
	d := e.waitDeploy(t, "failed", func(d central.Deploy) bool { return d.State == central.DeployFailed })
	if d.Phase != central.PhaseBootstrap || d.Failure == nil || d.Failure.Task != "common : Install petrel into the active slot" {
		t.Fatalf("failed deploy = phase %s failure %+v; want bootstrap failing in the install task", d.Phase, d.Failure)
	}
	if got := e.status(t); got != central.DeployBootstrapFailed {
		t.Errorf("deploy status after a failed bootstrap = %s; want bootstrap-failed", got)
	}
	var errsOut struct {
		Failure central.DeployFailure `json:"failure"`
	}
	if err := e.api.Do(ctx, http.MethodGet, "/v1/subclouds/edge-1/errors", nil, nil, &errsOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errsOut.Failure.Hint, "software root") || !strings.Contains(errsOut.Failure.Hint, "resume") {
		t.Errorf("errors hint = %q; want one about the software root and resume", errsOut.Failure.Hint)
	}
	// A second start is refused: resume is the way on.
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, opts, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("starting a failed deploy again = %v; want conflict", err)
	}
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy/resume", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	d = e.waitDeploy(t, "complete", func(d central.Deploy) bool { return d.State == central.DeployFinished })
	if got, want := results(d), "create:ok bootstrap:failed bootstrap:ok config:ok"; got != want {
		t.Errorf("runs = %s; want %s", got, want)
	}
	if got := e.status(t); got != central.DeployComplete {
		t.Errorf("deploy status = %s; want complete", got)
	}
	// The files the playbook got: the vars file has the values and no
	// secret; the secrets file (0600) has the join token; the inventory
	// reaches the bootstrap address with the key, never a password.
	e.runner.mu.Lock()
	seen := e.runner.seen
	jobs := e.runner.jobs
	e.runner.mu.Unlock()
	var vals struct {
		Petrel map[string]any `json:"petrel"`
	}
	if err := yaml.Unmarshal(seen["values.yml"], &vals); err != nil {
		t.Fatal(err)
	}
	if vals.Petrel["site_name"] != "edge-1" || vals.Petrel["mgmt_address"] != "10.88.40.10" || vals.Petrel["software_root"] != "/var/lib/petrel/edge-1" {
		t.Errorf("values.yml = %v; want the subcloud's name, its management_start_address and the override", vals.Petrel)
	}
	var sec struct {
		S map[string]string `json:"petrel_secrets"`
	}
	if err := yaml.Unmarshal(seen["secrets.yml"], &sec); err != nil || !strings.HasPrefix(sec.S["join_token"], "pj_") {
		t.Errorf("secrets.yml = %q; want a join token", seen["secrets.yml"])
	}
	if strings.Contains(string(seen["values.yml"]), sec.S["join_token"]) || string(seen["secrets.yml.mode"]) != "-rw-------" {
		t.Errorf("secrets.yml mode %s, token in values.yml: %v; want 0600 and no", seen["secrets.yml.mode"], strings.Contains(string(seen["values.yml"]), sec.S["join_token"]))
	}
	inv := string(seen["inventory.ini"])
	if !strings.Contains(inv, "ansible_host=127.0.0.5 ansible_port=2222 ansible_user=root ansible_ssh_private_key_file=/etc/petrel/deploy.key") ||
		!strings.Contains(inv, "PasswordAuthentication=no") {
		t.Errorf("inventory.ini = %q", inv)
	}
	if len(jobs) != 3 || jobs[0].Tags[0] != "bootstrap" || jobs[2].Tags[0] != "config" {
		t.Errorf("playbook runs = %+v; want bootstrap, bootstrap, config", jobs)
	}
}

// Options that would steer Ansible are refused before anything runs.
func TestDeployRefusesAnsibleValues(t *testing.T) {
	e := newDeployEnv(t)
	for key, want := range map[string]string{"ansible_host": "values.ansible_host", "site_name": "values.site_name", "nonsense": "values.nonsense"} {
		o := opts
		o.Values = map[string]any{key: "x"}
		err := e.api.Do(context.Background(), http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, o, nil)
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || !strings.Contains(err.Error(), want) {
			t.Errorf("deploy with values.%s = %v; want 400 naming %s", key, err, want)
		}
	}
	if got := e.status(t); got != central.DeployNotDeployed {
		t.Errorf("deploy status = %s; want not-deployed", got)
	}
}

// A deploy running when central stops resumes its phase when central starts
// again on the same database.
func TestDeployResumesAfterCentralRestart(t *testing.T) {
	cfg := central.Config{Shell: servertest.Shell(t), SiteListen: "127.0.0.1:0",
		Deploy: central.DeployConfig{Runner: newFakeRunner(), Binary: "/usr/bin/true"}}
	first := cfg.Deploy.Runner.(*fakeRunner)
	first.block[central.PhaseBootstrap] = true
	c, err := central.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Shell().Ready()
	api := servertest.Client(t, c, servertest.AdminToken(t, c))
	if err := api.Do(context.Background(), http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{
		Name: "edge-1", BootstrapAddress: "127.0.0.5", BootstrapValues: deployValues}, nil); err != nil {
		t.Fatal(err)
	}
	if err := api.Do(context.Background(), http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, opts, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-first.start:
		if p != central.PhaseBootstrap {
			t.Fatalf("first playbook phase = %s; want bootstrap", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the bootstrap never started")
	}
	stop() // central stops mid-bootstrap
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cfg.Deploy.Runner = newFakeRunner()
	e := startDeployCentral(t, cfg)
	if got := e.status(t); got != central.DeployComplete {
		d := e.waitDeploy(t, "complete", func(d central.Deploy) bool { return d.State == central.DeployFinished })
		if got, want := results(d), "create:ok bootstrap:interrupted bootstrap:ok config:ok"; got != want {
			t.Errorf("runs = %s; want %s", got, want)
		}
	}
	if got := e.status(t); got != central.DeployComplete {
		t.Errorf("deploy status after the resumed deploy = %s; want complete", got)
	}
}

// Abort stops a running phase: bootstrap-failed, state aborted; resume
// completes it.
func TestDeployAbortAndResume(t *testing.T) {
	e := newDeployEnv(t)
	ctx := context.Background()
	e.runner.set(func(f *fakeRunner) { f.block[central.PhaseBootstrap] = true })
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, opts, nil); err != nil {
		t.Fatal(err)
	}
	<-e.runner.start
	if got := e.status(t); got != central.DeployBootstrapping {
		t.Errorf("deploy status while bootstrapping = %s; want bootstrapping", got)
	}
	var d central.Deploy
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy/abort", nil, nil, &d); err != nil {
		t.Fatal(err)
	}
	if d.State != central.DeployAborted || e.status(t) != central.DeployBootstrapFailed {
		t.Fatalf("after abort: state %s, deploy status %s; want aborted, bootstrap-failed", d.State, e.status(t))
	}
	e.runner.set(func(f *fakeRunner) { f.block[central.PhaseBootstrap] = false })
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy/resume", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	d = e.waitDeploy(t, "complete", func(d central.Deploy) bool { return d.State == central.DeployFinished })
	if got, want := results(d), "create:ok bootstrap:aborted bootstrap:ok config:ok"; got != want {
		t.Errorf("runs = %s; want %s", got, want)
	}
}

// A join token admits its subcloud once, before it expires; a used,
// expired or foreign token is refused with a clear message and leaves the
// subcloud without a certificate.
func TestSubcloudJoinToken(t *testing.T) {
	now := time.Now().UTC()
	var clock struct {
		sync.Mutex
		t time.Time
	}
	clock.t = now
	cfg := central.Config{Shell: servertest.Shell(t), SiteListen: "127.0.0.1:0",
		Deploy: central.DeployConfig{Runner: newFakeRunner(), Binary: "/usr/bin/true",
			Now: func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.t }}}
	e := startDeployCentral(t, cfg)
	ctx := context.Background()
	for _, n := range []string{"edge-1", "edge-2"} {
		if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds", nil, map[string]string{"name": n, "shape": "simplex"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Tokens made before a subcloud was (re)registered do not admit it.
	clock.Lock()
	now = time.Now().UTC()
	clock.t = now
	clock.Unlock()
	token := func(name string, ttl int) string {
		var it central.IssuedJoinToken
		if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/"+name+"/join-tokens", nil, central.JoinTokenRequest{TTLSeconds: int64(ttl)}, &it); err != nil {
			t.Fatal(err)
		}
		return it.Token
	}
	anon := servertest.Client(t, e.c, "")
	_, csr, err := pki.NewCSR("edge-1")
	if err != nil {
		t.Fatal(err)
	}
	join := func(name, tok string) error {
		return anon.Do(ctx, http.MethodPost, "/v1/subcloud-join", nil, central.SubcloudJoinRequest{Name: name, Token: tok, CSR: string(csr)}, nil)
	}
	cert := func(name string) *central.SiteCertificate {
		var sc central.Subcloud
		if err := e.api.Do(ctx, http.MethodGet, "/v1/subclouds/"+name, nil, nil, &sc); err != nil {
			t.Fatal(err)
		}
		return sc.Certificate
	}
	refused := func(what string, err error, want string) {
		t.Helper()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), want) {
			t.Errorf("%s = %v; want 401 saying %q", what, err, want)
		}
	}

	foreign := token("edge-2", 3600)
	refused("join edge-1 with edge-2's token", join("edge-1", foreign), "join token not valid")
	refused("join with an unknown token", join("edge-1", "pj_nonsense"), "join token not valid")
	short := token("edge-1", 60)
	clock.Lock()
	clock.t = now.Add(2 * time.Minute)
	clock.Unlock()
	refused("join with an expired token", join("edge-1", short), "join token expired")
	if c := cert("edge-1"); c != nil {
		t.Fatalf("edge-1 has certificate %+v after refused joins; want none", c)
	}
	tok := token("edge-1", 3600)
	var creds central.SiteCredentials
	if err := anon.Do(ctx, http.MethodPost, "/v1/subcloud-join", nil, central.SubcloudJoinRequest{Name: "edge-1", Token: tok, CSR: string(csr)}, &creds); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(creds.Certificate, "BEGIN CERTIFICATE") || cert("edge-1") == nil || cert("edge-1").Serial != creds.Detail.Serial {
		t.Fatalf("join = %+v; want a certificate recorded at central", creds.Detail)
	}
	refused("join again with the used token", join("edge-1", tok), "join token already used")
	if got := cert("edge-1").Serial; got != creds.Detail.Serial {
		t.Errorf("certificate after a refused second join = %s; want the first, %s", got, creds.Detail.Serial)
	}
	// The used token reads its subcloud's status; an expired unused one does not.
	var st central.SubcloudJoinStatus
	if err := anon.Do(ctx, http.MethodPost, "/v1/subcloud-join/status", nil, central.SubcloudJoinStatusRequest{Name: "edge-1", Token: tok}, &st); err != nil || st.Availability != central.Offline {
		t.Errorf("status with the used token = %+v, %v; want offline", st, err)
	}
	refused("status with an expired token", anon.Do(ctx, http.MethodPost, "/v1/subcloud-join/status", nil, central.SubcloudJoinStatusRequest{Name: "edge-1", Token: short}, nil), "join token expired")
	if cert("edge-2") != nil {
		t.Error("edge-2 has a certificate; want none")
	}
	// A token of a deleted subcloud does not admit a new one of its name.
	clock.Lock()
	clock.t = time.Now().UTC()
	clock.Unlock()
	old := token("edge-2", 3600)
	if err := e.api.Do(ctx, http.MethodDelete, "/v1/subclouds/edge-2", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds", nil, map[string]string{"name": "edge-2", "shape": "simplex"}, nil); err != nil {
		t.Fatal(err)
	}
	refused("join a re-registered edge-2 with the old edge-2's token", join("edge-2", old), "join token not valid")
}

// A failed deploy of a deleted subcloud does not hold up the deploy of a
// new subcloud of that name.
func TestDeployOfAReRegisteredSubcloud(t *testing.T) {
	e := newDeployEnv(t)
	ctx := context.Background()
	e.runner.set(func(f *fakeRunner) { f.fail[central.PhaseBootstrap] = []string{"common : Create the software root"} })
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, opts, nil); err != nil {
		t.Fatal(err)
	}
	e.waitDeploy(t, "failed", func(d central.Deploy) bool { return d.State == central.DeployFailed })
	secrets := filepath.Join(e.cfg.Shell.DataDir, "deploys", "edge-1", "secrets.yml")
	if _, err := os.Stat(secrets); err != nil {
		t.Fatalf("the failed deploy's secrets file: %v", err)
	}
	if err := e.api.Do(ctx, http.MethodDelete, "/v1/subclouds/edge-1", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	// The deleted subcloud's deploy, join tokens and secrets are gone.
	if _, err := os.Stat(secrets); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after delete, stat %s = %v; want it removed", secrets, err)
	}
	if err := e.api.Do(ctx, http.MethodGet, "/v1/subclouds/edge-1/deploy", nil, nil, nil); err == nil {
		t.Error("after delete, the deploy of edge-1 is still shown")
	}
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{
		Name: "edge-1", BootstrapAddress: "127.0.0.5", BootstrapValues: deployValues}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, opts, nil); err != nil {
		t.Fatalf("deploying the re-registered edge-1 = %v; want accepted", err)
	}
	d := e.waitDeploy(t, "complete", func(d central.Deploy) bool { return d.State == central.DeployFinished })
	if got, want := results(d), "create:ok bootstrap:ok config:ok"; got != want {
		t.Errorf("runs = %s; want %s", got, want)
	}
}

// A machine central cannot reach: the real ansible-playbook stops in the
// first task that goes to the machine, the deploy is bootstrap-failed, and
// the hint is about SSH, never a password or the token.
func TestDeployToAnUnreachableMachine(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ansible-playbook is not installed (Debian ansible-core; scripts/test.sh installs it)")
		}
		t.Skip("ansible-playbook is not installed")
	}
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	key := filepath.Join(t.TempDir(), "deploy.key")
	if err := os.WriteFile(key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := central.Config{Shell: servertest.Shell(t), SiteListen: "127.0.0.1:0",
		Deploy: central.DeployConfig{Binary: "/usr/bin/true"}}
	c, err := central.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	api := servertest.Client(t, c, servertest.AdminToken(t, c))
	ctx := context.Background()
	if err := api.Do(ctx, http.MethodPost, "/v1/subclouds", nil, central.CreateSubcloudRequest{
		Name: "edge-1", BootstrapAddress: "127.0.0.1", BootstrapValues: deployValues}, nil); err != nil {
		t.Fatal(err)
	}
	o := central.DeployOptions{SSHKeyFile: key, SSHPort: port, SSHKnownHostsFile: filepath.Join(t.TempDir(), "known_hosts"),
		Values: map[string]any{"software_root": filepath.Join(t.TempDir(), "root"), "platform": "host", "central_site_address": "127.0.0.1:9443"}}
	if err := os.WriteFile(o.SSHKnownHostsFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, o, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	var d central.Deploy
	for time.Now().Before(deadline) {
		if err := api.Do(ctx, http.MethodGet, "/v1/subclouds/edge-1/deploy", nil, nil, &d); err == nil && d.State == central.DeployFailed {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d.State != central.DeployFailed || d.Phase != central.PhaseBootstrap || d.Failure == nil {
		t.Fatalf("deploy = phase %s state %s failure %+v; want bootstrap failed", d.Phase, d.State, d.Failure)
	}
	if !strings.Contains(d.Failure.Hint, "cannot reach the machine over SSH") {
		t.Errorf("failure = %+v; want the SSH hint", d.Failure)
	}
	var sc central.Subcloud
	if err := api.Do(ctx, http.MethodGet, "/v1/subclouds/edge-1", nil, nil, &sc); err != nil || sc.DeployStatus != central.DeployBootstrapFailed {
		t.Errorf("subcloud = %s (%v); want bootstrap-failed", sc.DeployStatus, err)
	}
}

// A BMC password given with the deploy goes to the secrets file only: not
// stored with the deploy, not shown, not in the values; a resume without
// it keeps it.
func TestDeployKeepsTheBMCPasswordSecret(t *testing.T) {
	e := newDeployEnv(t)
	ctx := context.Background()
	const pw = "bmc-s3cret-pw"
	o := opts
	o.BMCPassword = pw
	o.Values = map[string]any{"software_root": "/var/lib/petrel/edge-1", "platform": "host", "bmc_type": "ipmi", "bmc_ipmi": "10.0.0.9:623", "bmc_username": "admin"}
	e.runner.set(func(f *fakeRunner) {
		f.fail[central.PhaseBootstrap] = []string{"common : Install petrel into the active slot"}
	})
	var started central.Deploy
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy", nil, o, &started); err != nil {
		t.Fatal(err)
	}
	e.waitDeploy(t, "failed", func(d central.Deploy) bool { return d.State == central.DeployFailed })
	// Bad input is refused and changes nothing.
	bad := o
	bad.BMCPassword = "two\nlines"
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy/resume", nil, central.ResumeDeployRequest{Options: &bad}, nil); err == nil || !strings.Contains(err.Error(), "bmc_password") {
		t.Errorf("resume with a two-line BMC password = %v; want refused naming bmc_password", err)
	}
	if err := e.api.Do(ctx, http.MethodPost, "/v1/subclouds/edge-1/deploy/resume", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	e.waitDeploy(t, "complete", func(d central.Deploy) bool { return d.State == central.DeployFinished })
	var raw json.RawMessage
	if err := e.api.Do(ctx, http.MethodGet, "/v1/subclouds/edge-1/deploy", nil, nil, &raw); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(started)
	if strings.Contains(string(raw), pw) || strings.Contains(string(b), pw) {
		t.Errorf("the deploy shows the BMC password: %s", raw)
	}
	e.runner.mu.Lock()
	seen := e.runner.seen
	e.runner.mu.Unlock()
	if !strings.Contains(string(seen["secrets.yml"]), pw) || strings.Contains(string(seen["values.yml"]), pw) {
		t.Errorf("secrets.yml = %q, values.yml = %q; want the password in the secrets only (kept across the resume)", seen["secrets.yml"], seen["values.yml"])
	}
}
