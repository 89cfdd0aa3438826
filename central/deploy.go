package central

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/deploy"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/errs"
)

// A subcloud's deploy runs four phases from central, in order: create
// (check the registration, write the work files and a one-time join
// token), bootstrap and config (deploy/ansible's bootstrap.yml with the
// tags of the same name, run by ansible-playbook against the subcloud's
// bootstrap address), and complete. The deploy status (deployNext) moves
// with them: bootstrapping → bootstrapped | bootstrap-failed, configuring
// → complete | config-failed. Progress is persisted (dc_deploys) as each
// phase ends; a deploy that was running when central stopped resumes its
// phase when central starts again (every phase is idempotent), and a
// failed or aborted one resumes from the phase that failed.

// DeployPhase is a step of a subcloud's deploy.
type DeployPhase string

const (
	PhaseCreate    DeployPhase = "create"
	PhaseBootstrap DeployPhase = "bootstrap"
	PhaseConfig    DeployPhase = "config"
	PhaseComplete  DeployPhase = "complete"
)

// deployPhases is the order of the phases.
var deployPhases = []DeployPhase{PhaseCreate, PhaseBootstrap, PhaseConfig, PhaseComplete}

// next is the phase after p (PhaseComplete after itself).
func (p DeployPhase) next() DeployPhase {
	i := slices.Index(deployPhases, p)
	if i < 0 || i+1 >= len(deployPhases) {
		return PhaseComplete
	}
	return deployPhases[i+1]
}

// DeployState is whether a deploy runs, stopped on a failure or an abort,
// or is complete.
type DeployState string

const (
	DeployRunning  DeployState = "running"
	DeployFailed   DeployState = "failed"
	DeployAborted  DeployState = "aborted"
	DeployFinished DeployState = "complete"
)

// DeployOptions are how central reaches the machine and what it overrides
// of the values it derives from the subcloud's registration.
type DeployOptions struct {
	SSHUser string `json:"ssh_user,omitempty"` // default root
	SSHPort int    `json:"ssh_port,omitempty"` // default 22
	// SSHKeyFile is the private key (a file on central's machine, 0600)
	// Ansible logs in with; never a password.
	SSHKeyFile string `json:"ssh_key_file"`
	// SSHKnownHostsFile pins the machine's host key; empty: the key seen
	// first is recorded in the deploy's own known_hosts and then required.
	SSHKnownHostsFile string `json:"ssh_known_hosts_file,omitempty"`
	// BMCPassword is the password of the BMC the values name (bmc_*). It
	// goes to the deploy's secrets file (0600) at once and is never stored
	// with the deploy, shown or logged; a resume without it keeps the one
	// given before.
	BMCPassword string `json:"bmc_password,omitempty"`
	// Values override the playbook values central derives (the keys of
	// deploy/ansible/vars/schema.yml, except those central sets itself).
	Values map[string]any `json:"values,omitempty"`
}

// DeployFailure is where a deploy stopped.
type DeployFailure struct {
	Phase   DeployPhase `json:"phase"`
	Task    string      `json:"task"`    // the failing Ansible task, "" if none ran
	Host    string      `json:"host"`    // the inventory host it failed on
	Message string      `json:"message"` // what the task said (never a secret: those tasks are no_log)
	Hint    string      `json:"hint"`
	Log     string      `json:"log"` // the run's output, on central's machine
	At      time.Time   `json:"at"`
}

// PhaseRun is one run of a phase.
type PhaseRun struct {
	Phase     DeployPhase `json:"phase"`
	Attempt   int         `json:"attempt"`
	StartedAt time.Time   `json:"started_at"`
	EndedAt   *time.Time  `json:"ended_at"`
	Result    string      `json:"result"` // ok | failed | aborted | interrupted | "" while running
	Log       string      `json:"log,omitempty"`
}

// Deploy is a subcloud's deploy, as `subcloud deploy show` prints it.
type Deploy struct {
	Subcloud  string         `json:"subcloud"`
	Phase     DeployPhase    `json:"phase"` // the phase running, stopped in, or complete
	State     DeployState    `json:"state"`
	Options   DeployOptions  `json:"options"`
	Runs      []PhaseRun     `json:"runs"`
	Failure   *DeployFailure `json:"failure"`
	StartedAt time.Time      `json:"started_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// Deploy errors.
var (
	ErrDeployNotFound   = errs.New(errs.NotFound, "deploy not found")
	ErrDeployConflict   = errs.New(errs.Conflict, "deploy in progress")
	ErrJoinTokenInvalid = errs.New(errs.Unauthenticated, "join token not valid")
	ErrJoinTokenUsed    = errs.New(errs.Unauthenticated, "join token already used")
	ErrJoinTokenExpired = errs.New(errs.Unauthenticated, "join token expired")
)

// PlaybookJob is one run of the deploy playbook.
type PlaybookJob struct {
	Subcloud string
	Phase    DeployPhase
	Dir      string   // holds inventory.ini, values.yml (the vars file) and secrets.yml (0600)
	Tags     []string // the playbook's phase tags
	Log      string   // the run's output goes here (0600)
}

// PlaybookFailure is a run that failed in a task.
type PlaybookFailure struct {
	Task, Host, Message string
	Unreachable         bool
}

func (f *PlaybookFailure) Error() string {
	if f.Task == "" {
		return "ansible-playbook failed: " + f.Message
	}
	return fmt.Sprintf("task %q failed on %s: %s", f.Task, f.Host, f.Message)
}

// PlaybookRunner runs the deploy playbook; an error is a failed run, a
// *PlaybookFailure when a task failed. AnsibleRunner is the real one.
type PlaybookRunner interface {
	RunPlaybook(ctx context.Context, job PlaybookJob) error
}

// DeployConfig configures the deploy engine.
type DeployConfig struct {
	Dir        string         // work files, one directory per subcloud (0700)
	Runner     PlaybookRunner // nil: AnsibleRunner over the embedded playbooks
	Binary     string         // the petrel the sites get; default: this executable
	CentralURL string         // how Ansible (on this machine) reaches central's API
	CACert     string         // verifies central's certificate
	SiteAddr   string         // where sites dial home, unless the values say otherwise
	JoinTTL    time.Duration  // a deploy's join token lifetime; default 1 h
	Now        func() time.Time
}

// deployEngine runs deploys: one worker per running deploy, all owned by Run.
type deployEngine struct {
	cfg       DeployConfig
	store     *deployStore
	subclouds SubcloudStore
	log       *slog.Logger
	publish   func(typ string, v any)
	schema    deploy.Schema
	starts    chan string // subclouds whose deploy became running

	mu       sync.Mutex
	cancels  map[string]context.CancelFunc // running workers
	aborting map[string]bool
}

func newDeployEngine(cfg DeployConfig, store *deployStore, subclouds SubcloudStore, log *slog.Logger, publish func(string, any)) (*deployEngine, error) {
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	if cfg.JoinTTL == 0 {
		cfg.JoinTTL = time.Hour
	}
	if cfg.Binary == "" {
		bin, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Binary = bin
	}
	schema, err := deploy.LoadSchema()
	if err != nil {
		return nil, fmt.Errorf("central: deploy schema: %w", err)
	}
	if cfg.Runner == nil {
		cfg.Runner = &AnsibleRunner{PlaybookDir: filepath.Join(cfg.Dir, ".ansible")}
	}
	if publish == nil {
		publish = func(string, any) {}
	}
	return &deployEngine{cfg: cfg, store: store, subclouds: subclouds, log: log, publish: publish, schema: schema,
		starts: make(chan string, 64), cancels: map[string]context.CancelFunc{}, aborting: map[string]bool{}}, nil
}

// Run resumes the deploys that were running, then runs each deploy that
// starts, until ctx ends; it returns when every worker has stopped (their
// deploys stay running in the store and resume at the next Run).
func (e *deployEngine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	spawn := func(name string) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.cancels[name] != nil {
			return
		}
		wctx, cancel := context.WithCancel(ctx)
		e.cancels[name] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.work(wctx, name)
			e.mu.Lock()
			delete(e.cancels, name)
			delete(e.aborting, name)
			e.mu.Unlock()
			cancel()
		}()
	}
	ds, err := e.store.runningDeploys(ctx)
	if err != nil {
		return fmt.Errorf("central: deploys to resume: %w", err)
	}
	for _, d := range ds {
		e.log.Info("resuming deploy", "subcloud", d.Subcloud, "phase", d.Phase)
		spawn(d.Subcloud)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case name := <-e.starts:
			spawn(name)
		}
	}
}

// kick tells Run a deploy is running (it also finds it at its next start).
func (e *deployEngine) kick(name string) {
	select {
	case e.starts <- name:
	default:
	}
}

// Start begins a subcloud's deploy: it must be registered with its
// bootstrap address and values, and not deployed yet.
func (e *deployEngine) Start(ctx context.Context, name string, opts DeployOptions) (Deploy, error) {
	sc, err := e.subclouds.Subcloud(ctx, name)
	if err != nil {
		return Deploy{}, err
	}
	if sc.BootstrapAddress == "" || sc.BootstrapValues == nil {
		return Deploy{}, errs.Wrapf(errs.Invalid, "subcloud %s has no bootstrap address and values: register it with 'petrel subcloud add' (or update it) first", name)
	}
	if err := e.checkOptions(opts); err != nil {
		return Deploy{}, err
	}
	if old, err := e.store.deploy(ctx, name); err == nil && !old.StartedAt.Before(sc.CreatedAt) {
		// (A deploy older than the registration was an earlier subcloud's
		// of that name, since deleted: it is replaced.)
		switch old.State {
		case DeployRunning:
			return Deploy{}, fmt.Errorf("%w: subcloud %s is in phase %s", ErrDeployConflict, name, old.Phase)
		case DeployFailed, DeployAborted:
			return Deploy{}, fmt.Errorf("%w: the deploy of %s stopped in phase %s; resume it ('petrel subcloud deploy resume %s')",
				ErrDeployConflict, name, old.Phase, name)
		}
	} else if err != nil && !errors.Is(err, ErrDeployNotFound) {
		return Deploy{}, err
	}
	if sc.DeployStatus != DeployNotDeployed {
		return Deploy{}, fmt.Errorf("%w: subcloud %s deploy status is %s; only a not-deployed subcloud starts a deploy",
			ErrInvalidTransition, name, sc.DeployStatus)
	}
	if err := e.keepBMCPassword(name, &opts); err != nil {
		return Deploy{}, err
	}
	now := e.cfg.Now()
	d := Deploy{Subcloud: name, Phase: PhaseCreate, State: DeployRunning, Options: opts, StartedAt: now, UpdatedAt: now, Runs: []PhaseRun{}}
	if err := e.store.putDeploy(ctx, d); err != nil {
		return Deploy{}, err
	}
	e.publish("deploy", d)
	e.kick(name)
	return d, nil
}

// Resume runs a failed or aborted deploy again from the phase it stopped
// in; opts, when given (non-nil), replace the deploy's options.
func (e *deployEngine) Resume(ctx context.Context, name string, opts *DeployOptions) (Deploy, error) {
	d, err := e.store.deploy(ctx, name)
	if err != nil {
		return Deploy{}, err
	}
	if d.State != DeployFailed && d.State != DeployAborted {
		return Deploy{}, fmt.Errorf("%w: the deploy of %s is %s; only a failed or aborted deploy resumes", ErrInvalidTransition, name, d.State)
	}
	if opts != nil {
		if err := e.checkOptions(*opts); err != nil {
			return Deploy{}, err
		}
		if err := e.keepBMCPassword(name, opts); err != nil {
			return Deploy{}, err
		}
		d.Options = *opts
	}
	d.State, d.UpdatedAt = DeployRunning, e.cfg.Now()
	if err := e.store.putDeploy(ctx, d); err != nil {
		return Deploy{}, err
	}
	e.publish("deploy", d)
	e.kick(name)
	return d, nil
}

// Abort stops a running deploy: its playbook is stopped, the deploy
// status becomes the phase's *-failed, and resume runs the phase again.
func (e *deployEngine) Abort(ctx context.Context, name string) (Deploy, error) {
	d, err := e.store.deploy(ctx, name)
	if err != nil {
		return Deploy{}, err
	}
	if d.State != DeployRunning {
		return Deploy{}, fmt.Errorf("%w: the deploy of %s is %s; only a running deploy is aborted", ErrInvalidTransition, name, d.State)
	}
	e.mu.Lock()
	cancel := e.cancels[name]
	if cancel != nil {
		e.aborting[name] = true
	}
	e.mu.Unlock()
	if cancel != nil {
		cancel()
		// The worker records the abort as it stops; wait for it.
		for i := 0; i < 300; i++ {
			if d, err = e.store.deploy(ctx, name); err != nil || d.State != DeployRunning {
				return d, err
			}
			select {
			case <-ctx.Done():
				return Deploy{}, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		return d, nil
	}
	// No worker here (not started yet): record the abort directly.
	if err := e.stop(ctx, &d, DeployAborted, &DeployFailure{Phase: d.Phase, Message: "aborted by an operator", Hint: resumeHint(name)}); err != nil {
		return Deploy{}, err
	}
	return d, nil
}

// Show returns a subcloud's deploy.
func (e *deployEngine) Show(ctx context.Context, name string) (Deploy, error) {
	if _, err := e.subclouds.Subcloud(ctx, name); err != nil {
		return Deploy{}, err
	}
	return e.store.deploy(ctx, name)
}

// reserved are the values central sets itself from the registration.
var reserved = []string{"site_name", "shape", "binary", "secrets_file", "central_url", "central_ca_cert"}

var sshUser = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// checkOptions refuses options that would not make a valid inventory or
// vars file: values are allow-listed (no ansible_* keys), SSH settings typed.
func (e *deployEngine) checkOptions(o DeployOptions) error {
	if o.SSHUser != "" && !sshUser.MatchString(o.SSHUser) {
		return errs.Field("ssh_user", "%q is not a user name", o.SSHUser)
	}
	if o.SSHPort < 0 || o.SSHPort > 65535 {
		return errs.Field("ssh_port", "must be in [1, 65535]")
	}
	if len(o.BMCPassword) > 256 || strings.ContainsAny(o.BMCPassword, "\r\n\x00") {
		return errs.Field("bmc_password", "must be one line of at most 256 bytes")
	}
	for f, p := range map[string]string{"ssh_key_file": o.SSHKeyFile, "ssh_known_hosts_file": o.SSHKnownHostsFile} {
		if f == "ssh_key_file" && p == "" {
			return errs.Field(f, "required: the private key Ansible logs in with")
		}
		if p != "" && (!filepath.IsAbs(p) || strings.ContainsAny(p, " \t\r\n'\"\\") || filepath.Clean(p) != p) {
			return errs.Field(f, "must be a clean absolute path without spaces or quotes")
		}
	}
	for k := range o.Values {
		switch {
		case strings.HasPrefix(strings.ToLower(k), "ansible_"):
			return errs.Field("values."+k, "ansible_* keys are refused: values never steer Ansible")
		case slices.Contains(reserved, k):
			return errs.Field("values."+k, "central sets it from the subcloud's registration")
		}
		if _, ok := e.schema.Values[k]; !ok {
			return errs.Field("values."+k, "unknown key (deploy/ansible/vars/schema.yml lists the allowed ones)")
		}
	}
	return nil
}

// work runs a deploy's phases until it completes, fails, is aborted, or
// ctx ends (central stopping: the deploy stays running and resumes).
func (e *deployEngine) work(ctx context.Context, name string) {
	for {
		d, err := e.store.deploy(context.WithoutCancel(ctx), name)
		if err != nil || d.State != DeployRunning {
			return
		}
		if d.Phase == PhaseComplete {
			d.State, d.UpdatedAt = DeployFinished, e.cfg.Now()
			if err := e.store.putDeploy(context.WithoutCancel(ctx), d); err != nil {
				e.log.Error("recording a complete deploy failed", "subcloud", name, "err", err)
			}
			e.publish("deploy", d)
			e.log.Info("deploy complete", "subcloud", name)
			return
		}
		if err := e.runPhase(ctx, &d); err != nil {
			return
		}
	}
}

// runPhase runs d's current phase once and records how it ended; an error
// means the worker stops (failed, aborted, or central stopping).
func (e *deployEngine) runPhase(ctx context.Context, d *Deploy) error {
	bg := context.WithoutCancel(ctx)
	attempt := 1
	for _, r := range d.Runs {
		if r.Phase == d.Phase {
			attempt++
		}
	}
	run := PhaseRun{Phase: d.Phase, Attempt: attempt, StartedAt: e.cfg.Now()}
	dir := filepath.Join(e.cfg.Dir, d.Subcloud)
	if d.Phase != PhaseCreate {
		run.Log = filepath.Join(dir, fmt.Sprintf("%s-%d.log", d.Phase, attempt))
	}
	d.Runs = append(d.Runs, run)
	d.Failure, d.UpdatedAt = nil, e.cfg.Now()
	if err := e.store.putDeploy(bg, *d); err != nil {
		return err
	}
	e.publish("deploy", *d)
	last := &d.Runs[len(d.Runs)-1]
	var err error
	switch d.Phase {
	case PhaseCreate:
		err = e.prepare(ctx, *d)
	case PhaseBootstrap:
		err = e.playbook(ctx, *d, run.Log, DeployBootstrapping, DeployBootstrapped, DeployBootstrapFailed)
	case PhaseConfig:
		err = e.playbook(ctx, *d, run.Log, DeployConfiguring, DeployComplete, DeployConfigFailed)
	}
	end := e.cfg.Now()
	last.EndedAt = &end
	e.mu.Lock()
	aborted := e.aborting[d.Subcloud]
	e.mu.Unlock()
	switch {
	case err == nil:
		last.Result = "ok"
		d.Phase = d.Phase.next()
		d.UpdatedAt = end
		if err := e.store.putDeploy(bg, *d); err != nil {
			return err
		}
		e.publish("deploy", *d)
		return nil
	case aborted:
		last.Result = "aborted"
		if err := e.stop(bg, d, DeployAborted, &DeployFailure{Phase: d.Phase, Message: "aborted by an operator", Hint: resumeHint(d.Subcloud), Log: run.Log}); err != nil {
			return err
		}
		return errStopped
	case ctx.Err() != nil:
		// Central is stopping: the phase runs again when it starts.
		last.Result = "interrupted"
		d.UpdatedAt = end
		if perr := e.store.putDeploy(bg, *d); perr != nil {
			return perr
		}
		return ctx.Err()
	default:
		last.Result = "failed"
		f := &DeployFailure{Phase: d.Phase, Message: err.Error(), Log: run.Log}
		var pf *PlaybookFailure
		if errors.As(err, &pf) {
			f.Task, f.Host, f.Message = pf.Task, pf.Host, pf.Message
		}
		f.Hint = hintFor(d.Subcloud, f, pf)
		e.log.Warn("deploy failed", "subcloud", d.Subcloud, "phase", d.Phase, "task", f.Task, "err", f.Message)
		if err := e.stop(bg, d, DeployFailed, f); err != nil {
			return err
		}
		return errStopped
	}
}

// stop records that d stopped (failed or aborted) and moves the deploy
// status to the phase's *-failed state.
func (e *deployEngine) stop(ctx context.Context, d *Deploy, state DeployState, f *DeployFailure) error {
	f.At = e.cfg.Now()
	d.State, d.Failure, d.UpdatedAt = state, f, f.At
	failed := map[DeployPhase]DeployStatus{PhaseBootstrap: DeployBootstrapFailed, PhaseConfig: DeployConfigFailed}[d.Phase]
	if failed != "" {
		sc, err := e.subclouds.UpdateSubcloud(ctx, d.Subcloud, func(sc *Subcloud) error {
			if sc.DeployStatus == failed || !sc.DeployStatus.CanTo(failed) {
				return nil
			}
			return sc.SetDeployStatus(failed)
		})
		if err != nil {
			return err
		}
		e.publish("subcloud", sc)
	}
	if err := e.store.putDeploy(ctx, *d); err != nil {
		return err
	}
	e.publish("deploy", *d)
	return nil
}

// errStopped ends a worker whose deploy failed or was aborted.
var errStopped = errors.New("central: deploy stopped")

// enter moves the deploy status to a phase's running state (already there
// when the phase resumes after a restart).
func (e *deployEngine) enter(ctx context.Context, name string, to DeployStatus) error {
	sc, err := e.subclouds.UpdateSubcloud(ctx, name, func(sc *Subcloud) error {
		if sc.DeployStatus == to {
			return nil
		}
		return sc.SetDeployStatus(to)
	})
	if err == nil {
		e.publish("subcloud", sc)
	}
	return err
}

// playbook runs one playbook phase between its deploy statuses.
func (e *deployEngine) playbook(ctx context.Context, d Deploy, logFile string, running, ok, _ DeployStatus) error {
	if err := e.enter(context.WithoutCancel(ctx), d.Subcloud, running); err != nil {
		return err
	}
	if err := e.prepare(ctx, d); err != nil {
		return err
	}
	job := PlaybookJob{Subcloud: d.Subcloud, Phase: d.Phase, Dir: filepath.Join(e.cfg.Dir, d.Subcloud),
		Tags: []string{string(d.Phase)}, Log: logFile}
	if err := e.cfg.Runner.RunPlaybook(ctx, job); err != nil {
		return err
	}
	return e.enter(context.WithoutCancel(ctx), d.Subcloud, ok)
}

// Files of a deploy's work directory.
const (
	deployInventory = "inventory.ini"
	deployValues    = "values.yml"
	deploySecrets   = "secrets.yml"
	deployKnown     = "known_hosts"
)

// prepare writes the deploy's inventory, vars file and secrets file
// (idempotent; a join token is made when the site has none usable).
func (e *deployEngine) prepare(ctx context.Context, d Deploy) error {
	sc, err := e.subclouds.Subcloud(ctx, d.Subcloud)
	if err != nil {
		return err
	}
	if sc.BootstrapAddress == "" {
		return errs.Wrapf(errs.Invalid, "subcloud %s has no bootstrap address", sc.Name)
	}
	dir := filepath.Join(e.cfg.Dir, sc.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	secrets := filepath.Join(dir, deploySecrets)
	if err := e.writeSecrets(ctx, sc.Name, secrets); err != nil {
		return err
	}
	vals := map[string]any{"site_name": sc.Name, "shape": string(sc.Shape), "binary": e.cfg.Binary,
		"secrets_file": secrets, "central_url": e.cfg.CentralURL, "central_ca_cert": e.cfg.CACert,
		"central_site_address": e.cfg.SiteAddr, "software_root": "/var/lib/petrel/site"}
	if a, ok := sc.BootstrapValues["management_start_address"].(string); ok {
		vals["mgmt_address"] = a
	}
	for k, v := range d.Options.Values {
		vals[k] = v
	}
	b, err := yaml.Marshal(map[string]any{"petrel": vals})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, deployValues), append([]byte("# written by central's deploy engine\n"), b...), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, deployInventory), []byte(inventoryFor(sc, d.Options, dir)), 0o600)
}

// inventoryFor is the deploy's inventory: the subcloud's controller-0 at
// its bootstrap address, key-based SSH only, its host key pinned.
func inventoryFor(sc Subcloud, o DeployOptions, dir string) string {
	user, port := o.SSHUser, o.SSHPort
	if user == "" {
		user = "root"
	}
	if port == 0 {
		port = 22
	}
	known, check := filepath.Join(dir, deployKnown), "accept-new"
	if o.SSHKnownHostsFile != "" {
		known, check = o.SSHKnownHostsFile, "yes"
	}
	args := fmt.Sprintf("-o UserKnownHostsFile=%s -o StrictHostKeyChecking=%s -o IdentitiesOnly=yes -o BatchMode=yes -o PasswordAuthentication=no", known, check)
	return fmt.Sprintf("# written by central's deploy engine\n[subcloud]\n%s ansible_host=%s ansible_port=%d ansible_user=%s ansible_ssh_private_key_file=%s ansible_ssh_common_args='%s'\n",
		sc.Name, sc.BootstrapAddress, port, user, o.SSHKeyFile, args)
}

// keepBMCPassword moves a BMC password out of the options into the
// deploy's secrets file, before the options are stored.
func (e *deployEngine) keepBMCPassword(name string, o *DeployOptions) error {
	if o.BMCPassword == "" {
		return nil
	}
	dir := filepath.Join(e.cfg.Dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	file := filepath.Join(dir, deploySecrets)
	secrets := readSecrets(file)
	secrets["bmc_password"] = o.BMCPassword
	o.BMCPassword = ""
	b, _ := yaml.Marshal(map[string]any{"petrel_secrets": secrets})
	return atomicfile.Write(file, b, 0o600)
}

// readSecrets reads a deploy's secrets file (empty when there is none).
func readSecrets(file string) map[string]string {
	var cur struct {
		Secrets map[string]string `json:"petrel_secrets"`
	}
	if b, err := os.ReadFile(file); err == nil {
		_ = yaml.Unmarshal(b, &cur)
	}
	if cur.Secrets == nil {
		cur.Secrets = map[string]string{}
	}
	return cur.Secrets
}

// forget drops what the engine kept for a deleted subcloud: its deploy
// record, its join tokens and the secrets file (join token, BMC password).
// The deploy's logs and values stay for the operator to read.
func (e *deployEngine) forget(ctx context.Context, name string) error {
	if err := e.store.forget(ctx, name); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(e.cfg.Dir, name, deploySecrets)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// writeSecrets keeps a usable join token in the deploy's secrets file: the
// one there if it was used (the site joined; it still reads its status) or
// is unused and unexpired, else a new one. Other secrets stay.
func (e *deployEngine) writeSecrets(ctx context.Context, name, file string) error {
	secrets := readSecrets(file)
	if tok := secrets["join_token"]; tok != "" {
		if r, err := e.store.joinToken(ctx, tok); err == nil && r.Subcloud == name &&
			(r.UsedAt != nil || r.ExpiresAt.After(e.cfg.Now().Add(5*time.Minute))) {
			return nil
		}
	}
	tok, _, err := e.newJoinToken(ctx, name, e.cfg.JoinTTL)
	if err != nil {
		return err
	}
	secrets["join_token"] = tok
	b, _ := yaml.Marshal(map[string]any{"petrel_secrets": secrets})
	return atomicfile.Write(file, b, 0o600)
}

// newJoinToken makes a one-time join token for a subcloud: 256 random
// bits, kept as a SHA-256.
func (e *deployEngine) newJoinToken(ctx context.Context, name string, ttl time.Duration) (string, time.Time, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", time.Time{}, err
	}
	tok := "pj_" + hex.EncodeToString(raw)
	now := e.cfg.Now()
	r := joinTokenRow{ID: uuid.NewString(), Subcloud: name, Hash: hashToken(tok), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := e.store.createJoinToken(ctx, r); err != nil {
		return "", time.Time{}, err
	}
	return tok, r.ExpiresAt, nil
}

func resumeHint(name string) string {
	return "fix the cause, then 'petrel subcloud deploy resume " + name + "' runs the phase again"
}

// hintFor suggests what to look at for a failure.
func hintFor(name string, f *DeployFailure, pf *PlaybookFailure) string {
	task := strings.ToLower(f.Task)
	var h string
	switch {
	case pf != nil && pf.Unreachable:
		h = "central cannot reach the machine over SSH: check the bootstrap address and port, the key (ssh_key_file) and that sshd runs there"
	case strings.Contains(task, "validate"):
		h = "a site value is missing or invalid (the message names it): change the values (resume takes --values)"
	case strings.Contains(task, "join central"):
		h = "central refused the site's join: the join token is expired or used, or the subcloud is unknown; resume makes a new token"
	case strings.Contains(task, "install petrel"), strings.Contains(task, "software root"):
		h = "the software root could not be written on the machine: check software_root and the disk"
	case strings.Contains(task, "ready"), strings.Contains(task, "site's ca"):
		h = "the site controller did not start: read SOFTWARE_ROOT/logs/subcloud.log on the machine"
	case strings.Contains(task, "agent"):
		h = "the host agent did not join its site: read SOFTWARE_ROOT/logs/agent.log on the machine"
	case strings.Contains(task, "online"):
		h = "the site does not reach central: check central_site_address and the WAN path, then SOFTWARE_ROOT/logs/subcloud.log"
	default:
		h = "see the playbook's output"
	}
	if f.Log != "" {
		h += " (log: " + f.Log + ")"
	}
	return h + "; " + resumeHint(name)
}

// deployErrors is what `subcloud errors` shows.
type deployErrors struct {
	Subcloud     string         `json:"subcloud"`
	DeployStatus DeployStatus   `json:"deploy_status"`
	State        DeployState    `json:"state"`
	Failure      *DeployFailure `json:"failure"`
}

// openDeploys builds central's deploy engine from its configuration.
func openDeploys(ctx context.Context, c *Central, cfg Config) (*deployEngine, error) {
	store, err := openDeployStore(ctx, c.shell.DB)
	if err != nil {
		return nil, err
	}
	dc := cfg.Deploy
	if dc.Dir == "" {
		dc.Dir = filepath.Join(cfg.Shell.DataDir, "deploys")
	}
	if dc.CentralURL == "" {
		dc.CentralURL = c.shell.URL()
	}
	if dc.CACert == "" {
		dc.CACert = c.shell.CACert
	}
	if dc.SiteAddr == "" {
		dc.SiteAddr = cfg.SiteListen
	}
	return newDeployEngine(dc, store, c.Subclouds, c.log.With("component", "deploy"), func(typ string, v any) { c.stream.Publish(typ, v) })
}
