// Package vbmc is a lab host's chassis, `petrel vbmc`: it owns the host's
// power state and boot sequence. Power-on brings the host's links up and,
// after a delay, boots the active software slot's `petrel host-init` inside
// the host's network namespace and cgroup; power-off takes the links down
// first, then kills every process of the host and drops its TCP state, so the
// host goes silent as a dead machine does. It runs outside the host's
// namespace and cgroup. The lab commands it over a unix socket; host
// management and operators speak to it as to a real BMC, over IPMI v2.0
// (RMCP+, cipher suites 3 and 17; on go-ipmi's BMC server) and Redfish
// (HTTPS, our own handlers), with simulated temperature, fan and power
// sensors (see BMCConfig and ListenBMC). The host's
// agent reads its cgroup's CPU and memory counters from the chassis (GET
// /v1/usage), because the host's own mount namespace has no cgroupfs.
package vbmc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/lab/hostnet"
	"github.com/petrel-edge/petrel/swpatch"
)

// Config is a chassis' configuration file.
type Config struct {
	Prefix       string   `json:"prefix"` // hostnet prefix of the lab
	Site         string   `json:"site"`
	Host         string   `json:"host"`
	SiteIndex    int      `json:"site_index"`
	HostIndex    int      `json:"host_index"`
	SoftwareRoot string   `json:"software_root"` // DIR/hosts/SITE/HOST: sw/a, sw/b, active
	Boot         []string `json:"boot"`          // arguments to the active slot's petrel
	BootDelayMS  int      `json:"boot_delay_ms"` // power-on to boot
	Socket       string   `json:"socket"`        // control socket path
	// SoftOffTimeoutMS bounds a graceful shutdown: after it the chassis
	// powers off whether or not the host's init has exited (default 10 s).
	SoftOffTimeoutMS int `json:"soft_off_timeout_ms,omitempty"`
	// BootTimeoutMS bounds a trial boot of a newly installed slot: if the
	// host's agent has not confirmed it (swpatch.Slots.Confirm, once the
	// host is back at its site) by then, the chassis makes the previous
	// slot active again and power-cycles the host (default 60 s).
	BootTimeoutMS int `json:"boot_timeout_ms,omitempty"`
	// BMC, if it has endpoints, serves IPMI and Redfish.
	BMC *BMCConfig `json:"bmc,omitempty"`
	// MachineID is the host's machine id; the BMC reports a UUID and GUID
	// derived from it (default: site/host).
	MachineID string `json:"machine_id,omitempty"`
	// OS are commands (absolute paths, not from the software root) the
	// machine's operating system runs at every boot, in the host's
	// namespace and cgroup, before the active slot's init: a bare lab
	// machine's sshd (lab add-machine --bare). With OS set, a slot with
	// nothing installed boots the OS alone.
	OS [][]string `json:"os,omitempty"`
}

// Power states.
const (
	On  = "on"
	Off = "off"
)

// Chassis is a running chassis.
type Chassis struct {
	cfg    Config
	log    *slog.Logger
	host   *hostnet.Host
	cgroup monitor.Cgroup // the host's cgroup, for GET /v1/usage

	op    sync.Mutex // one power action at a time, from start to end
	mu    sync.Mutex // guards the fields below
	state string
	init  *exec.Cmd     // the booted host-init, while on
	done  chan struct{} // closed when init exits
	gen   int           // bumps on every power change; a stale boot timer does nothing
	// bmcFault is what the BMC protocols do instead of their job (lab
	// faults); the control socket is never affected.
	bmcFault BMCFault

	bg sync.WaitGroup // graceful shutdowns in progress; Run waits for them
}

// New prepares a chassis for an existing lab host.
func New(cfg Config, log *slog.Logger) (*Chassis, error) {
	if cfg.SoftwareRoot == "" || cfg.Socket == "" || len(cfg.Boot) == 0 {
		return nil, errors.New("vbmc: software_root, socket and boot are required")
	}
	lab, err := hostnet.New(hostnet.Config{Prefix: cfg.Prefix})
	if err != nil {
		return nil, err
	}
	h, err := lab.Host(cfg.Site, cfg.Host, cfg.SiteIndex, cfg.HostIndex)
	if err != nil {
		return nil, err
	}
	return &Chassis{cfg: cfg, log: log, host: h, state: Off, cgroup: monitor.Cgroup{Dir: h.Cgroup()}}, nil
}

func (c *Chassis) stateFile() string { return filepath.Join(c.cfg.SoftwareRoot, "power") }

// Run restores the persisted power state (on at first start), serves the
// control socket, and powers the host off when ctx ends.
func (c *Chassis) Run(ctx context.Context) error {
	want := On
	if b, err := os.ReadFile(c.stateFile()); err == nil && strings.TrimSpace(string(b)) == Off {
		want = Off
	}
	os.Remove(c.cfg.Socket)
	ln, err := net.Listen("unix", c.cfg.Socket)
	if err != nil {
		return fmt.Errorf("vbmc: control socket: %w", err)
	}
	if err := os.Chmod(c.cfg.Socket, 0o600); err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: c.handler(), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	bmcDone := make(chan error, 1)
	bctx, stopBMC := context.WithCancel(ctx)
	defer stopBMC()
	if c.cfg.BMC != nil && len(c.cfg.BMC.Endpoints) > 0 {
		id := c.cfg.MachineID
		if id == "" {
			id = c.cfg.Site + "/" + c.cfg.Host
		}
		b, err := ListenBMC(ctx, *c.cfg.BMC, faultyPower{c}, id, c.log.With("component", "bmc"))
		if err != nil {
			return err
		}
		go func() { bmcDone <- b.Serve(bctx) }()
	} else {
		bmcDone <- nil
	}
	if err := c.power(ctx, want); err != nil {
		c.log.Error("restoring power state failed", "state", want, "err", err)
	}
	var bmcErr error
	select {
	case <-ctx.Done():
	case bmcErr = <-bmcDone:
		if bmcErr != nil {
			c.log.Error("BMC failed", "err", bmcErr)
		}
	}
	stopBMC()
	// The lab is going down: the host dies with its chassis.
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = c.power(sctx, Off)
	c.bg.Wait()
	return errors.Join(bmcErr, err)
}

// PowerState is On or Off (Power, for the BMC protocols).
func (c *Chassis) PowerState() string { return c.State() }

// PowerAction performs a BMC power action. A graceful shutdown or restart
// returns once started and completes in the background (as the ACPI
// request of a real BMC does); the others complete before it returns.
func (c *Chassis) PowerAction(ctx context.Context, a Action) error {
	switch a {
	case ActionSoftOff, ActionSoftRestart:
		if c.State() == Off {
			if a == ActionSoftRestart {
				return errors.New("vbmc: the host is off")
			}
			return nil
		}
		c.bg.Add(1)
		go func() {
			defer c.bg.Done()
			timeout := time.Duration(c.cfg.SoftOffTimeoutMS) * time.Millisecond
			if timeout <= 0 {
				timeout = 10 * time.Second
			}
			sctx, cancel := context.WithTimeout(context.Background(), timeout+15*time.Second)
			defer cancel()
			if err := c.softOff(sctx, timeout); err != nil {
				c.log.Error("graceful shutdown failed", "err", err)
				return
			}
			if a == ActionSoftRestart {
				if err := c.power(sctx, On); err != nil {
					c.log.Error("graceful restart: power on failed", "err", err)
				}
			}
		}()
		return nil
	case ActionOn, ActionOff, ActionCycle, ActionReset:
		return c.power(ctx, string(a))
	}
	return fmt.Errorf("vbmc: unknown power action %q", a)
}

// softOff asks the host's init to stop (SIGTERM), waits up to timeout for
// it to exit, then powers the chassis off.
func (c *Chassis) softOff(ctx context.Context, timeout time.Duration) error {
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	init, done := c.init, c.done
	c.mu.Unlock()
	if init != nil && done != nil {
		c.log.Info("graceful shutdown: stopping host-init", "pid", init.Process.Pid)
		_ = init.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(timeout)
		select {
		case <-done:
		case <-t.C:
			c.log.Warn("graceful shutdown: host-init still running; powering off", "timeout", timeout)
		case <-ctx.Done():
		}
		t.Stop()
	}
	return c.powerOff(ctx)
}

// State is the chassis' power state.
func (c *Chassis) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// power sets the power state: "on", "off", or "cycle" (off, then on).
// Actions run one at a time.
func (c *Chassis) power(ctx context.Context, action string) error {
	c.op.Lock()
	defer c.op.Unlock()
	switch action {
	case On:
		return c.powerOn(ctx)
	case Off:
		return c.powerOff(ctx)
	case "cycle", "reset":
		if err := c.powerOff(ctx); err != nil {
			return err
		}
		return c.powerOn(ctx)
	}
	return fmt.Errorf("vbmc: unknown power action %q (on, off, cycle)", action)
}

func (c *Chassis) powerOn(ctx context.Context) error {
	c.mu.Lock()
	if c.state == On {
		c.mu.Unlock()
		return nil
	}
	c.state = On
	c.gen++
	gen := c.gen
	c.mu.Unlock()
	if err := atomicfile.Write(c.stateFile(), []byte(On+"\n"), 0o600); err != nil {
		return err
	}
	if err := c.host.PowerOn(ctx); err != nil {
		return err
	}
	c.log.Info("power on; booting", "delay_ms", c.cfg.BootDelayMS)
	time.AfterFunc(time.Duration(c.cfg.BootDelayMS)*time.Millisecond, func() { c.boot(gen) })
	return nil
}

// boot starts host-init from the active slot, unless the power changed since.
func (c *Chassis) boot(gen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen || c.state != On {
		return
	}
	// The boot loader: a slot marked next boots as a trial; an earlier
	// trial never confirmed is rolled back first (swpatch.Slots).
	slots := swpatch.Slots{Root: c.cfg.SoftwareRoot}
	slot, trial, err := slots.SelectBoot(time.Now())
	if err != nil {
		c.log.Error("boot: choosing the slot failed; booting the active one", "err", err)
		if slot, err = slots.Active(); err != nil {
			slot = "a"
		}
	}
	if trial {
		timeout := c.bootTimeout()
		c.log.Info("trial boot of a new slot", "slot", slot, "timeout", timeout)
		time.AfterFunc(timeout, func() { c.checkTrial(gen, slot, timeout) })
	}
	bin := filepath.Join(c.cfg.SoftwareRoot, "sw", slot, "bin", "petrel")
	console, err := os.OpenFile(filepath.Join(c.cfg.SoftwareRoot, "console.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.log.Error("boot: console", "err", err)
		return
	}
	defer console.Close()
	fmt.Fprintf(console, "--- %s boot from slot %s\n", time.Now().UTC().Format(time.RFC3339Nano), slot)
	for _, argv := range c.cfg.OS {
		osCmd := exec.Command(argv[0], argv[1:]...)
		osCmd.Stdout, osCmd.Stderr = console, console
		osCmd.Env = append(os.Environ(), "PETREL_LAB_HOST="+c.cfg.Site+"/"+c.cfg.Host)
		if err := c.host.Start(osCmd); err != nil {
			c.log.Error("boot: the OS failed", "cmd", argv[0], "err", err)
			continue
		}
		go func() { _ = osCmd.Wait() }() // ends with the host's cgroup
		c.log.Info("booted the OS", "cmd", argv[0], "pid", osCmd.Process.Pid)
	}
	if _, err := os.Stat(bin); err != nil && len(c.cfg.OS) > 0 {
		fmt.Fprintf(console, "nothing installed in slot %s: the OS runs alone\n", slot)
		c.log.Info("nothing installed; the OS runs alone", "slot", slot)
		return
	}
	cmd := exec.Command(bin, c.cfg.Boot...)
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Env = append(os.Environ(), "PETREL_LAB_HOST="+c.cfg.Site+"/"+c.cfg.Host)
	if err := c.host.Start(cmd); err != nil {
		c.log.Error("boot failed", "slot", slot, "err", err)
		return
	}
	done := make(chan struct{})
	c.init, c.done = cmd, done
	go func() {
		err := cmd.Wait()
		close(done)
		c.log.Info("host-init exited", "err", err)
	}()
	c.log.Info("booted", "slot", slot, "pid", cmd.Process.Pid)
}

func (c *Chassis) bootTimeout() time.Duration {
	if c.cfg.BootTimeoutMS > 0 {
		return time.Duration(c.cfg.BootTimeoutMS) * time.Millisecond
	}
	return time.Minute
}

// checkTrial rolls a trial boot back when its host has not confirmed it:
// the previous slot becomes active (recorded in rollback.json, which the
// host's agent reports and the site alarms as 900.003) and the host is
// power-cycled into it. A power change since the boot makes it moot (the
// next boot decides).
func (c *Chassis) checkTrial(gen int, slot string, timeout time.Duration) {
	c.mu.Lock()
	same := c.gen == gen && c.state == On
	c.mu.Unlock()
	if !same {
		return
	}
	slots := swpatch.Slots{Root: c.cfg.SoftwareRoot}
	t, err := slots.Trial()
	if err != nil || t == nil || t.Slot != slot {
		return // confirmed
	}
	reason := fmt.Sprintf("the host did not come back to its site within %s of booting slot %s", timeout, slot)
	c.log.Warn("rolling back to the previous slot", "from", slot, "to", t.Previous, "reason", reason)
	if err := slots.Rollback(reason, time.Now()); err != nil {
		c.log.Error("rollback failed", "err", err)
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.power(ctx, "cycle"); err != nil {
			c.log.Error("rollback: power cycle failed", "err", err)
		}
	}()
}

func (c *Chassis) powerOff(ctx context.Context) error {
	c.mu.Lock()
	c.state = Off
	c.gen++
	done := c.done
	c.init, c.done = nil, nil
	c.mu.Unlock()
	if err := atomicfile.Write(c.stateFile(), []byte(Off+"\n"), 0o600); err != nil {
		return err
	}
	// Links down first, then kill everything, then forget TCP state.
	if err := c.host.PowerOff(ctx); err != nil {
		return err
	}
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.log.Info("power off")
	return nil
}

// PowerRequest is the body of POST /v1/power.
type PowerRequest struct {
	Action string `json:"action"` // on | off | cycle
}

// PowerStatus answers GET /v1/power.
type PowerStatus struct {
	State string `json:"state"`
	Pids  []int  `json:"pids"`
}

func (c *Chassis) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/power", func(w http.ResponseWriter, r *http.Request) {
		pids, _ := c.host.Pids()
		writeJSON(w, http.StatusOK, PowerStatus{State: c.State(), Pids: pids})
	})
	mux.HandleFunc("POST /v1/power", func(w http.ResponseWriter, r *http.Request) {
		var req PowerRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be {\"action\": \"on|off|cycle\"}"})
			return
		}
		// A power action, once asked, completes whatever happens to the
		// caller: the host's own agent asking for a cycle dies with its
		// host halfway through the request.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
		defer cancel()
		if err := c.power(ctx, req.Action); err != nil {
			c.log.Error("power action failed", "action", req.Action, "err", err)
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		pids, _ := c.host.Pids()
		writeJSON(w, http.StatusOK, PowerStatus{State: c.State(), Pids: pids})
	})
	// The host's cgroup counters, as the host's agent would read them on a
	// real machine: CPU time and capacity, memory in use and its limit.
	c.faultHandlers(mux)
	mux.HandleFunc("GET /v1/usage", func(w http.ResponseWriter, r *http.Request) {
		u := monitor.Usage{At: time.Now()}
		c.cgroup.Read(&u)
		writeJSON(w, http.StatusOK, u)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Client commands a chassis over its control socket.
type Client struct{ hc *http.Client }

// Dial returns a client for the chassis listening on socket.
func Dial(socket string) *Client {
	return &Client{hc: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}}}}
}

// Power asks for a power action and returns the resulting status.
func (cl *Client) Power(ctx context.Context, action string) (PowerStatus, error) {
	b, _ := json.Marshal(PowerRequest{Action: action})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://vbmc/v1/power", strings.NewReader(string(b)))
	return cl.do(req)
}

// Status returns the power status.
func (cl *Client) Status(ctx context.Context) (PowerStatus, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://vbmc/v1/power", nil)
	return cl.do(req)
}

func (cl *Client) do(req *http.Request) (PowerStatus, error) {
	var st PowerStatus
	resp, err := cl.hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("vbmc: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return st, fmt.Errorf("vbmc: %s", e["error"])
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}
