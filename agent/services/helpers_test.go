package services_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/services"
	"github.com/petrel-edge/petrel/agent/services/servicestest"
	"github.com/petrel-edge/petrel/servicemgr"
)

// helperArg makes the test binary a member's process (see TestMain):
// `services.test svc-helper MODE ARGS...`.
const helperArg = "svc-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == helperArg {
		os.Exit(helperMain(os.Args[2], os.Args[3:]))
	}
	// Helpers built with -race would otherwise sleep a second as they exit.
	os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	os.Exit(m.Run())
}

// seen is what a helper process records of itself.
type seen struct {
	Pid  int               `json:"pid"`
	Args []string          `json:"args"`
	Env  map[string]string `json:"env"`  // PETREL_*
	Role string            `json:"role"` // role.json when it ran
	At   int64             `json:"at"`   // UnixNano
	Dir  string            `json:"dir"`
}

func record(file string, args []string) {
	s := seen{Pid: os.Getpid(), Args: args, Env: map[string]string{}, At: time.Now().UnixNano()}
	for _, kv := range os.Environ() {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "PETREL_") {
			s.Env[k] = v
		}
	}
	if b, err := os.ReadFile(filepath.Join(os.Getenv("PETREL_STATE_DIR"), "role.json")); err == nil {
		s.Role = strings.TrimSpace(string(b))
	}
	s.Dir, _ = os.Getwd()
	b, _ := json.Marshal(s)
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(9)
	}
	f.Write(append(b, '\n'))
	f.Close()
}

// helperMain runs a helper mode:
//
//	run FILE ARGS...      record itself in FILE, then run until killed
//	ignore-term FILE      ignore SIGTERM, start a child (`run FILE.child`) in its group, record itself, run
//	exit N                exit with status N at once
//	record FILE ARGS...   record itself in FILE and exit 0 (an action)
//	exists FILE           exit 0 if FILE exists, 1 otherwise (a health command)
//	spew N                write N bytes of output in lines of 100, then run until killed
//	agent DIR             a Runner in DIR with one active member, web (see agentMain)
func helperMain(mode string, args []string) int {
	switch mode {
	case "run":
		record(args[0], args[1:])
		select {}
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		exe, _ := os.Executable()
		child, err := os.StartProcess(exe, []string{exe, helperArg, "run", args[0] + ".child"}, &os.ProcAttr{
			Files: []*os.File{nil, os.Stdout, os.Stderr}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 8
		}
		_ = child
		record(args[0], args)
		select {}
	case "exit":
		n, _ := strconv.Atoi(args[0])
		return n
	case "record":
		record(args[0], args[1:])
		return 0
	case "exists":
		if _, err := os.Stat(args[0]); err != nil {
			fmt.Println("no", args[0])
			return 1
		}
		return 0
	case "agent":
		return agentMain(args[0])
	case "spew":
		n, _ := strconv.Atoi(args[0])
		line := strings.Repeat("x", 99) + "\n"
		for i := 0; i < n; i += 100 {
			os.Stdout.WriteString(line)
		}
		select {}
	}
	return 7
}

// agentMain runs a Runner on dir, as an agent would, with member web
// active on 10.20.0.9/24 (a fake platform), until it is killed.
func agentMain(dir string) int {
	r, err := services.New(services.Config{StateDir: dir, Host: "h", Platform: &servicestest.Addresses{},
		Report: func(context.Context, servicemgr.AgentStatus) error { return nil }, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 6
	}
	exe, _ := os.Executable()
	go r.Run(context.Background())
	r.Apply(servicemgr.AgentServices{Version: 1, ControllerEpoch: 1, Members: []servicemgr.Assignment{{
		Group: "web", Role: servicemgr.RoleActive, Epoch: 7, Floating: "10.20.0.9/24", Network: "mgmt",
		Health: servicemgr.HealthCheck{Type: "process", IntervalMS: 20}, Actions: servicemgr.Actions{Start: []string{exe, helperArg, "run", "{state_dir}/run.json"}}}}})
	select {}
}

// helper is the argv of a helper mode.
func helper(t testing.TB, mode string, args ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{exe, helperArg, mode}, args...)
}

// readSeen reads what helper processes recorded in file (none yet: nil).
func readSeen(t testing.TB, file string) []seen {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []seen
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var s seen
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			continue // a line being written
		}
		out = append(out, s)
	}
	return out
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline
	}
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z' && s[i+2] != 'X'
	}
	return true
}

// testLogger logs to t and fails the test on an invalid state transition.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(&checkHandler{Handler: slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}), t: t})
}

type checkHandler struct {
	slog.Handler
	t testing.TB
}

func (h *checkHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "invalid member state transition" {
		h.t.Errorf("invalid member state transition logged")
	}
	return h.Handler.Handle(ctx, r)
}

func (h *checkHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &checkHandler{Handler: h.Handler.WithAttrs(as), t: h.t}
}

func (h *checkHandler) WithGroup(name string) slog.Handler {
	return &checkHandler{Handler: h.Handler.WithGroup(name), t: h.t}
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// env is a running Runner with a fake address platform and a recording
// site.
type env struct {
	t     *testing.T
	r     *services.Runner
	addrs *servicestest.Addresses
	dir   string
	site  *site
	stop  func() // stops Run and waits for it
}

// site records the reports.
type site struct {
	mu       sync.Mutex
	reports  []servicemgr.AgentStatus
	block    chan struct{} // when set, Report waits for it
	inFlight int
	maxIn    int
}

func (s *site) report(ctx context.Context, st servicemgr.AgentStatus) error {
	s.mu.Lock()
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	block := s.block
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
		}
	}
	s.mu.Lock()
	s.inFlight--
	s.reports = append(s.reports, st)
	s.mu.Unlock()
	return nil
}

func (s *site) all() []servicemgr.AgentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reports)
}

// newEnv runs a Runner on a fresh state directory (or dir, when given).
func newEnv(t *testing.T, dir string, adjust func(*services.Config)) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := &env{t: t, addrs: &servicestest.Addresses{}, dir: dir, site: &site{}}
	cfg := services.Config{StateDir: dir, Host: "host-1", Platform: e.addrs, Report: e.site.report, Logger: testLogger(t),
		Addrs:      func() map[string]string { return map[string]string{"mgmt": "127.0.0.1", "cluster": "127.0.0.2"} },
		BackoffMin: 20 * time.Millisecond, BackoffMax: 80 * time.Millisecond, StopGrace: time.Second, StartGrace: 50 * time.Millisecond}
	if adjust != nil {
		adjust(&cfg)
	}
	r, err := services.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.r = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()
	var once sync.Once
	e.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(e.stop)
	return e
}

// member is the status of group, if the runner lists it.
func (e *env) member(group string) (servicemgr.MemberStatus, bool) {
	for _, m := range e.r.Status().Members {
		if m.Group == group {
			return m, true
		}
	}
	return servicemgr.MemberStatus{}, false
}

// await waits until group is in state st.
func (e *env) await(group string, st servicemgr.MemberState) servicemgr.MemberStatus {
	e.t.Helper()
	var m servicemgr.MemberStatus
	waitFor(e.t, fmt.Sprintf("%s to be %s", group, st), func() bool {
		var ok bool
		m, ok = e.member(group)
		return ok && m.State == st
	})
	return m
}

// memberDir is group's state directory.
func (e *env) memberDir(group string) string { return filepath.Join(e.dir, "services", group) }

// started waits until group's `run` helper has recorded n starts, and
// returns them.
func (e *env) started(group string, n int) []seen {
	e.t.Helper()
	var runs []seen
	waitFor(e.t, fmt.Sprintf("%d starts of %s", n, group), func() bool {
		runs = readSeen(e.t, filepath.Join(e.memberDir(group), "run.json"))
		return len(runs) >= n
	})
	return runs
}

// roleFile reads group's role.json.
func (e *env) roleFile(group string) servicemgr.RoleFile {
	e.t.Helper()
	var rf servicemgr.RoleFile
	b, err := os.ReadFile(filepath.Join(e.memberDir(group), "role.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rf); err != nil {
		e.t.Fatal(err)
	}
	return rf
}

// apply applies members as version v.
func (e *env) apply(v uint64, members ...servicemgr.Assignment) {
	e.r.Apply(servicemgr.AgentServices{Version: v, ControllerEpoch: 1, Members: members})
}

// assignment is group's member with a process health check, running
// the `run` helper that records itself in {state_dir}/run.json.
func assignment(t testing.TB, group string, role servicemgr.Role, epoch uint64) servicemgr.Assignment {
	a := servicemgr.Assignment{Group: group, Role: role, Epoch: epoch, Slot: -1,
		Health:  servicemgr.HealthCheck{Type: "process", IntervalMS: 20},
		Actions: servicemgr.Actions{Start: helper(t, "run", "{state_dir}/run.json")}}
	if role == servicemgr.RoleActive {
		a.Slot = 0
	}
	return a
}
