package compute_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
)

// fakeHost is an in-process hypervisor host: domains, base images and
// instance files in maps. down makes every call fail as a lost
// connection would.
type fakeHost struct {
	mu      sync.Mutex
	down    bool
	doms    map[string]*fakeDom
	bases   map[string][]byte
	files   map[string]string // instance id -> base checksum
	created map[string]int    // instance id -> CreateInstanceFiles calls
	stopErr error
	site    *fakeSite
	migErr  error         // Migrate fails with it
	migDies bool          // with migErr: the source's guest dies too (its QEMU ended)
	stuck   chan struct{} // non-nil: Migrate runs until AbortMigration closes it
	limits  []time.Duration
}

type fakeDom struct {
	spec      compute.DomainSpec
	state     compute.State
	boots     int
	transient bool // as libvirt: Undefine refuses it; Destroy removes it
}

func newFakeHost() *fakeHost {
	return &fakeHost{doms: map[string]*fakeDom{}, bases: map[string][]byte{}, files: map[string]string{}, created: map[string]int{}}
}

var errConn = errors.New("connection refused")

func (h *fakeHost) check() error {
	if h.down {
		return errConn
	}
	return nil
}

func (h *fakeHost) dom(id string) (*fakeDom, error) {
	if err := h.check(); err != nil {
		return nil, err
	}
	d := h.doms[id]
	if d == nil {
		return nil, compute.ErrNotFound
	}
	return d, nil
}

func (h *fakeHost) Define(_ context.Context, spec compute.DomainSpec) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return err
	}
	if err := spec.Validate(); err != nil {
		return err
	}
	if _, ok := h.files[spec.ID]; !ok {
		return fmt.Errorf("disk %s missing", spec.Disk)
	}
	if d := h.doms[spec.ID]; d != nil {
		d.spec = spec
		return nil
	}
	h.doms[spec.ID] = &fakeDom{spec: spec, state: compute.StateShutoff}
	return nil
}

func (h *fakeHost) Start(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return err
	}
	if d.state != compute.StateRunning {
		d.state = compute.StateRunning
		d.boots++
	}
	return nil
}

func (h *fakeHost) Stop(_ context.Context, id string, _ time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return err
	}
	if h.stopErr != nil {
		return h.stopErr
	}
	d.state = compute.StateShutoff
	return nil
}

func (h *fakeHost) Destroy(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return err
	}
	d.state = compute.StateShutoff
	if d.transient {
		delete(h.doms, id)
	}
	return nil
}

func (h *fakeHost) Undefine(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return err
	}
	if d := h.doms[id]; d != nil && d.transient {
		return errors.New("Requested operation is not valid: cannot undefine transient domain")
	}
	delete(h.doms, id)
	return nil
}

func (h *fakeHost) State(_ context.Context, id string) (compute.State, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return compute.StateUnknown, err
	}
	return d.state, nil
}

func (h *fakeHost) ConsoleLog(_ context.Context, id string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for i := 1; i <= d.boots; i++ {
		fmt.Fprintf(&b, "boot %d\n", i)
	}
	return b.Bytes(), nil
}

func (h *fakeHost) List(context.Context) ([]compute.Domain, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return nil, err
	}
	var out []compute.Domain
	for id, d := range h.doms {
		out = append(out, compute.Domain{ID: id, Name: d.spec.Name, State: d.state})
	}
	return out, nil
}

func (h *fakeHost) Reboot(_ context.Context, id string, _ bool) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return err
	}
	d.boots++
	d.state = compute.StateRunning
	return nil
}

func (h *fakeHost) Stats(_ context.Context, id string) (compute.DomainStats, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return compute.DomainStats{}, err
	}
	return compute.DomainStats{State: d.state, VCPUs: d.spec.VCPUs, MemoryMiB: int64(d.spec.MemoryMiB)}, nil
}

func (h *fakeHost) HostInfo(context.Context) (compute.HostInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return compute.HostInfo{}, err
	}
	return compute.HostInfo{CPUs: 8, MemoryMiB: 16384, Version: "fake"}, nil
}

func (h *fakeHost) Events(ctx context.Context) (<-chan compute.DomainEvent, error) {
	ch := make(chan compute.DomainEvent)
	go func() { <-ctx.Done(); close(ch) }()
	return ch, nil
}

func (h *fakeHost) HasBase(_ context.Context, sum string) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return false, err
	}
	_, ok := h.bases[sum]
	return ok, nil
}

func (h *fakeHost) PutBase(_ context.Context, sum string, _ compute.DiskFormat, size int64, r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return fmt.Errorf("got %d of %d bytes", len(b), size)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return err
	}
	h.bases[sum] = b
	return nil
}

func (h *fakeHost) CreateInstanceFiles(_ context.Context, id, sum string, _ compute.DiskFormat) (compute.InstanceFiles, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return compute.InstanceFiles{}, err
	}
	if _, ok := h.bases[sum]; !ok {
		return compute.InstanceFiles{}, fmt.Errorf("base %s missing", sum)
	}
	h.files[id] = sum
	h.created[id]++
	return compute.InstanceFiles{Disk: "/i/" + id + ".qcow2", ConsoleLog: "/i/" + id + ".console.log"}, nil
}

func (h *fakeHost) DeleteInstanceFiles(_ context.Context, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.check(); err != nil {
		return err
	}
	delete(h.files, id)
	return nil
}

func (h *fakeHost) Close() error { return nil }

// Migrate moves the domain to the fake host at spec.DestURI, whose files
// must exist (as libvirt requires for an incremental block migration).
func (h *fakeHost) Migrate(_ context.Context, id string, spec compute.MigrateSpec) error {
	h.site.mu.Lock()
	dst := h.site.fake[spec.DestURI]
	h.site.mu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.dom(id)
	if err != nil {
		return err
	}
	if h.migErr != nil {
		if h.migDies {
			d.state = compute.StateCrashed
		}
		return h.migErr
	}
	if stuck := h.stuck; stuck != nil {
		h.mu.Unlock()
		<-stuck
		h.mu.Lock()
		return errors.New("operation aborted: migration job: canceled by client")
	}
	if dst == nil || !strings.HasPrefix(spec.MigrateURI, "tcp://") {
		return fmt.Errorf("bad destination %q / %q", spec.DestURI, spec.MigrateURI)
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.down {
		return errConn
	}
	if _, ok := dst.files[id]; !ok {
		return errors.New("pre-creation of storage targets for incremental storage migration is not supported")
	}
	dst.doms[id] = &fakeDom{spec: d.spec, state: compute.StateRunning, boots: d.boots}
	d.state = compute.StateShutoff
	return nil
}

func (h *fakeHost) MigrationProgress(_ context.Context, id string, completed bool) (compute.MigrationProgress, error) {
	h.mu.Lock()
	stuck := h.stuck
	h.mu.Unlock()
	if stuck != nil && !completed {
		select {
		case <-stuck:
		default: // a job that does not converge: nothing left shrinks
			return compute.MigrationProgress{Active: true, MemoryProcessed: 1 << 20, MemoryRemaining: 64 << 20}, nil
		}
	}
	if completed {
		return compute.MigrationProgress{Elapsed: 10 * time.Millisecond, Downtime: 5 * time.Millisecond}, nil
	}
	return compute.MigrationProgress{}, nil
}

func (h *fakeHost) SetMaxDowntime(_ context.Context, _ string, d time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.limits = append(h.limits, d)
	return nil
}

func (h *fakeHost) AbortMigration(context.Context, string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stuck != nil {
		select {
		case <-h.stuck:
		default:
			close(h.stuck)
		}
	}
	return nil
}

func (h *fakeHost) StartPostCopy(context.Context, string) error { return nil }

func (h *fakeHost) setDown(v bool) { h.mu.Lock(); h.down = v; h.mu.Unlock() }

func (h *fakeHost) domState(id string) (compute.State, int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.doms[id]
	if d == nil {
		return "", 0, false
	}
	return d.state, d.boots, true
}

// fakeSite is the hosts, images and alarms a Manager works with.
type fakeSite struct {
	mu     sync.Mutex
	hosts  []compute.HypervisorHost
	fake   map[string]*fakeHost // by URI
	alarms map[string]string    // "id entity" -> reason fields
	logs   []string
	store  *computedb.Store
	images map[string][]byte // by checksum
	out    syncBuffer        // the manager's log
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (s *fakeSite) HypervisorHosts(context.Context) ([]compute.HypervisorHost, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]compute.HypervisorHost(nil), s.hosts...), nil
}

func (s *fakeSite) setHost(name string, f func(*compute.HypervisorHost)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.hosts {
		if s.hosts[i].Name == name {
			f(&s.hosts[i])
		}
	}
}

func (s *fakeSite) Raise(_ context.Context, id, ent string, f map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alarms[id+" "+ent] = f["detail"]
	return nil
}

func (s *fakeSite) Clear(_ context.Context, id, ent string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.alarms, id+" "+ent)
	return nil
}

func (s *fakeSite) Log(_ context.Context, id, ent string, f map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs = append(s.logs, ent+": "+f["action"])
	return nil
}

func (s *fakeSite) alarm(id, ent string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.alarms[id+" "+ent]
	return ok
}

func (s *fakeSite) Image(ctx context.Context, id string) (compute.Image, error) {
	return s.store.Image(ctx, id)
}

func (s *fakeSite) OpenImage(sum string) (io.ReadCloser, error) {
	b, ok := s.images[sum]
	if !ok {
		return nil, fmt.Errorf("no bytes for %s", sum)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// newSite makes hosts (each 4 threads, 4096 MiB, 100 GiB), two active
// images (img1, img2) and flavors small (1 vCPU, 512 MiB, 10 GiB) and
// huge (2 TiB of memory), and a running Manager.
func newSite(t *testing.T, hosts ...string) (*compute.Manager, *fakeSite) {
	t.Helper()
	ctx := context.Background()
	st, err := computedb.Open(ctx, sqldbtest.Open(t, sqldb.SQLite))
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSite{fake: map[string]*fakeHost{}, alarms: map[string]string{}, store: st, images: map[string][]byte{}}
	for _, h := range hosts {
		uri := "fake://" + h
		s.hosts = append(s.hosts, compute.HypervisorHost{Name: h, URI: uri, VCPUs: 4, MemoryMiB: 4096, DiskGiB: 100,
			MgmtAddr: "10.0.0." + fmt.Sprint(len(s.hosts)+1)})
		s.fake[uri] = newFakeHost()
		s.fake[uri].site = s
	}
	for i, name := range []string{"img1", "img2"} {
		b := []byte(strings.Repeat(name, 1000))
		sum := fmt.Sprintf("%064x", i+1)
		s.images[sum] = b
		im, err := st.CreateImage(ctx, compute.Image{Name: name, DiskFormat: compute.FormatRaw, Visibility: compute.Public,
			Project: "admin", Checksum: sum, Size: int64(len(b))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.TransitionImage(ctx, im.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := st.TransitionImage(ctx, im.ID, compute.ImageSaving, compute.ImageActive, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []compute.Flavor{{Name: "small", VCPUs: 1, RAMMiB: 512, DiskGiB: 10, Public: true, Project: "admin"},
		{Name: "huge", VCPUs: 1, RAMMiB: 1 << 20, DiskGiB: 10, Public: true, Project: "admin"}} {
		if _, err := st.CreateFlavor(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	m := startManager(t, s)
	return m, s
}

func startManager(t *testing.T, s *fakeSite) *compute.Manager {
	t.Helper()
	m, err := compute.NewManager(compute.ManagerConfig{Store: s.store, Images: s, Flavors: s.store, Hosts: s,
		Connect: func(_ context.Context, uri string) (compute.HostConn, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			h := s.fake[uri]
			if h == nil {
				return nil, fmt.Errorf("no host at %s", uri)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if err := h.check(); err != nil {
				return nil, err
			}
			return h, nil
		},
		Alarms: s, Logger: slog.New(slog.NewTextHandler(&s.out, nil)), ReconcileEvery: 20 * time.Millisecond, RetryFor: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return m
}

// waitFor polls the server until ok or the deadline.
func waitFor(t *testing.T, m *compute.Manager, id string, what string, ok func(compute.Server) bool) compute.Server {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var sv compute.Server
	var err error
	for time.Now().Before(deadline) {
		sv, err = m.Server(context.Background(), id)
		if err == nil && ok(sv) {
			return sv
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("server %s: waiting for %s: last %+v, %v", id, what, sv, err)
	return sv
}

// waitAlarm polls until alarm id on ent is raised (want) or not: the
// record changes before its alarm does.
func waitAlarm(t *testing.T, s *fakeSite, id, ent string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.alarm(id, ent) != want {
		if time.Now().After(deadline) {
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("alarm %s on %s: want raised=%v; alarms %v", id, ent, want, s.alarms)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func idle(status compute.ServerStatus) func(compute.Server) bool {
	return func(sv compute.Server) bool { return sv.Status == status && sv.Task == compute.TaskNone }
}

func TestServerLifecycle(t *testing.T) {
	m, s := newSite(t, "compute-0")
	ctx := context.Background()
	h := s.fake["fake://compute-0"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if sv.Status != compute.ServerBuilding || sv.Host != "compute-0" || sv.Flavor.RAMMiB != 512 || sv.Project != "admin" {
		t.Fatalf("created: %+v", sv)
	}
	sv = waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	if st, _, _ := h.domState(sv.ID); st != compute.StateRunning || sv.LaunchedAt == nil || sv.Power != compute.StateRunning {
		t.Fatalf("active server %+v, domain %s", sv, st)
	}
	if _, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small"}); !errors.Is(err, compute.ErrServerExists) {
		t.Errorf("duplicate name: %v", err)
	}

	act := func(a compute.ServerAction, want compute.ServerStatus) compute.Server {
		t.Helper()
		if _, err := m.Act(ctx, "vm1", a); err != nil {
			t.Fatalf("%s: %v", a.Action, err)
		}
		return waitFor(t, m, sv.ID, string(a.Action), idle(want))
	}
	act(compute.ServerAction{Action: compute.ActionStop}, compute.ServerShutoff)
	if st, _, _ := h.domState(sv.ID); st != compute.StateShutoff {
		t.Errorf("after stop the domain is %s", st)
	}
	if _, err := m.Act(ctx, "vm1", compute.ServerAction{Action: compute.ActionStop}); !errors.Is(err, compute.ErrServerState) {
		t.Errorf("stopping a stopped server: %v", err)
	}
	act(compute.ServerAction{Action: compute.ActionStart}, compute.ServerActive)
	_, boots, _ := h.domState(sv.ID)
	act(compute.ServerAction{Action: compute.ActionReboot, Hard: true}, compute.ServerActive)
	if _, b, _ := h.domState(sv.ID); b != boots+1 {
		t.Errorf("boots after reboot = %d; want %d", b, boots+1)
	}
	if st, err := m.ServerStats(ctx, "vm1"); err != nil || st.MemoryMiB != 512 || st.State != compute.StateRunning {
		t.Errorf("stats = %+v, %v", st, err)
	}
	out, err := m.ConsoleLog(ctx, "vm1", 1)
	if err != nil || out != fmt.Sprintf("boot %d\n", boots+1) {
		t.Errorf("console log last line = %q, %v", out, err)
	}
	re := act(compute.ServerAction{Action: compute.ActionRebuild, Image: "img2"}, compute.ServerActive)
	if re.ImageName != "img2" || h.created[sv.ID] != 2 || h.files[sv.ID] != fmt.Sprintf("%064x", 2) {
		t.Errorf("rebuild: server %+v, files created %d on %s", re, h.created[sv.ID], h.files[sv.ID])
	}
	// A rebuild of a stopped server leaves it stopped.
	act(compute.ServerAction{Action: compute.ActionStop}, compute.ServerShutoff)
	act(compute.ServerAction{Action: compute.ActionRebuild}, compute.ServerShutoff)

	if err := m.DeleteServer(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := m.Server(ctx, sv.ID)
		if errors.Is(err, compute.ErrServerNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not deleted: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, _, ok := h.domState(sv.ID); ok {
		t.Error("domain still defined after delete")
	}
	if _, ok := h.files[sv.ID]; ok {
		t.Error("disk still there after delete")
	}
}

func TestCreateRefusals(t *testing.T) {
	m, s := newSite(t, "compute-0", "compute-1")
	ctx := context.Background()
	_, err := m.CreateServer(ctx, compute.CreateServer{Name: "big", Image: "img1", Flavor: "huge"})
	if !errors.Is(err, compute.ErrNoValidHost) || !strings.Contains(err.Error(), "compute-1: needs 1048576 MiB of memory") {
		t.Errorf("huge flavor: %v", err)
	}
	for _, req := range []compute.CreateServer{
		{Name: "x", Image: "nope", Flavor: "small"},
		{Name: "x", Image: "img1", Flavor: "nope"},
		{Name: "bad name", Image: "img1", Flavor: "small"},
		{Name: "x", Image: "img1", Flavor: "small", Group: "nope"},
		{Name: "x", Image: "img1", Flavor: "small", Host: "compute-9"},
	} {
		if _, err := m.CreateServer(ctx, req); err == nil {
			t.Errorf("CreateServer(%+v) succeeded", req)
		}
	}
	all, _ := s.store.AllServers(ctx)
	if len(all) != 0 {
		t.Errorf("refused creates left servers: %+v", all)
	}
	s.setHost("compute-0", func(h *compute.HypervisorHost) { h.Down = "locked" })
	s.setHost("compute-1", func(h *compute.HypervisorHost) { h.Down = "failed" })
	if _, err := m.CreateServer(ctx, compute.CreateServer{Name: "x", Image: "img1", Flavor: "small"}); !errors.Is(err, compute.ErrNoValidHost) ||
		!strings.Contains(err.Error(), "compute-0: locked") {
		t.Errorf("no host up: %v", err)
	}
}

func TestAntiAffinityAndCapacity(t *testing.T) {
	m, _ := newSite(t, "compute-0", "compute-1")
	ctx := context.Background()
	g, err := m.CreateServerGroup(ctx, compute.ServerGroup{Name: "ha", Policy: compute.AntiAffinity})
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]bool{}
	for i := range 2 {
		sv, err := m.CreateServer(ctx, compute.CreateServer{Name: fmt.Sprintf("ha-%d", i), Image: "img1", Flavor: "small", Group: "ha"})
		if err != nil {
			t.Fatal(err)
		}
		hosts[sv.Host] = true
	}
	if len(hosts) != 2 {
		t.Errorf("anti-affinity members share a host: %v", hosts)
	}
	if _, err := m.CreateServer(ctx, compute.CreateServer{Name: "ha-2", Image: "img1", Flavor: "small", Group: "ha"}); !errors.Is(err, compute.ErrNoValidHost) ||
		!strings.Contains(err.Error(), "anti-affinity") {
		t.Errorf("third member: %v", err)
	}
	if err := m.DeleteServerGroup(ctx, g.ID); !errors.Is(err, compute.ErrServerGroupInUse) {
		t.Errorf("deleting a group with members: %v", err)
	}
	// Memory is not overcommitted: 4096 - 512 reserved = 3584 MiB a host,
	// 7 small servers; two are placed.
	n := 0
	for i := range 20 {
		_, err := m.CreateServer(ctx, compute.CreateServer{Name: fmt.Sprintf("fill-%d", i), Image: "img1", Flavor: "small"})
		if errors.Is(err, compute.ErrNoValidHost) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 12 {
		t.Errorf("placed %d more small servers; want 12 (7 a host, 2 there already)", n)
	}
}

// TestUnreachableHypervisorLogged: a hypervisor the manager cannot
// connect to (a daemon down, a certificate refused) is logged once with
// the reason, not at every reconcile, and once more when it answers again.
func TestUnreachableHypervisorLogged(t *testing.T) {
	m, s := newSite(t, "compute-0")
	h := s.fake["fake://compute-0"]
	count := func(msg string) int { return strings.Count(s.out.String(), `msg="`+msg+`"`) }
	waitLog := func(msg string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); count(msg) == 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the manager's log:\n%s", msg, s.out.String())
			}
		}
	}
	h.setDown(true)
	waitLog("cannot connect to hypervisor")
	time.Sleep(10 * 20 * time.Millisecond) // ten reconciles
	if n := count("cannot connect to hypervisor"); n != 1 || !strings.Contains(s.out.String(), errConn.Error()) {
		t.Errorf("%d lines of 'cannot connect to hypervisor' over ten reconciles; want 1 with the reason:\n%s", n, s.out.String())
	}
	h.setDown(false)
	waitLog("hypervisor reachable")
	if hv, err := m.Hypervisors(context.Background()); err != nil || len(hv) != 1 || hv[0].State != "up" {
		t.Errorf("Hypervisors() = %+v, %v; want compute-0 up", hv, err)
	}
}

func TestHostLostAndBack(t *testing.T) {
	m, s := newSite(t, "compute-0")
	ctx := context.Background()
	h := s.fake["fake://compute-0"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	ent := "instance=" + sv.ID

	// Power loss: the hypervisor stops answering, then host management
	// declares the host failed.
	h.setDown(true)
	h.mu.Lock()
	for _, d := range h.doms {
		d.state = compute.StateShutoff
	}
	h.mu.Unlock()
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.Down, hh.Lost = "failed", true })
	got := waitFor(t, m, sv.ID, "error", idle(compute.ServerError))
	waitAlarm(t, s, compute.AlarmInstanceFailed, ent, true)
	if !strings.Contains(got.Fault, "compute-0") {
		t.Errorf("after host loss: %+v", got)
	}
	// Actions fail cleanly while the host is lost.
	if _, err := m.Act(ctx, "vm1", compute.ServerAction{Action: compute.ActionReboot}); err != nil {
		t.Fatal(err)
	}
	got = waitFor(t, m, sv.ID, "reboot failed", idle(compute.ServerError))
	if !strings.Contains(got.Fault, "host lost") {
		t.Errorf("reboot on a lost host: fault %q", got.Fault)
	}

	// The host returns; the domain is shut off: the server is shutoff.
	h.setDown(false)
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.Down, hh.Lost = "", false })
	waitFor(t, m, sv.ID, "shutoff", idle(compute.ServerShutoff))
	waitAlarm(t, s, compute.AlarmInstanceFailed, ent, false)
	waitAlarm(t, s, compute.AlarmInstanceStopped, ent, true)
	if _, err := m.Act(ctx, "vm1", compute.ServerAction{Action: compute.ActionStart}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	waitAlarm(t, s, compute.AlarmInstanceStopped, ent, false)

	// A guest that powers itself off is seen as shutoff with 700.004.
	h.mu.Lock()
	h.doms[sv.ID].state = compute.StateShutoff
	h.mu.Unlock()
	waitFor(t, m, sv.ID, "shutoff", idle(compute.ServerShutoff))
	waitAlarm(t, s, compute.AlarmInstanceStopped, ent, true)

	// Its QEMU dies before host management declares the host lost: seen
	// shutoff first, then error with the host.
	if _, err := m.Act(ctx, "vm1", compute.ServerAction{Action: compute.ActionStart}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	h.mu.Lock()
	h.doms[sv.ID].state = compute.StateShutoff
	h.mu.Unlock()
	waitFor(t, m, sv.ID, "shutoff", idle(compute.ServerShutoff))
	h.setDown(true)
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.Down, hh.Lost = "failed", true })
	waitFor(t, m, sv.ID, "error after the host loss", idle(compute.ServerError))
	h.setDown(false)
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.Down, hh.Lost = "", false })
	waitFor(t, m, sv.ID, "shutoff after the host returned", idle(compute.ServerShutoff))

	// The host restarts between two looks (host management had it back
	// before it was seen lost): recorded failed with the host, then
	// shutoff as its domain is.
	if _, err := m.Act(ctx, "vm1", compute.ServerAction{Action: compute.ActionStart}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.BootID = "boot-1" })
	deadline := time.Now().Add(10 * time.Second)
	for !m.SeenBoot("compute-0", "boot-1") {
		if time.Now().After(deadline) {
			t.Fatal("the reconciler never saw boot-1")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.mu.Lock()
	h.doms[sv.ID].state = compute.StateShutoff
	h.mu.Unlock()
	s.mu.Lock()
	s.logs = nil
	s.mu.Unlock()
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.BootID = "boot-2" })
	// (The reconciler may see the domain stopped before the new boot ID:
	// then shutoff first, and error with the host after.)
	deadline = time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		logs := strings.Join(s.logs, "\n")
		s.mu.Unlock()
		if strings.Contains(logs, "-> error on compute-0: host lost: compute-0 restarted") && strings.Contains(logs, "error -> shutoff") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a restart between looks; logs:\n%s", logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	got = waitFor(t, m, sv.ID, "shutoff after the restart", idle(compute.ServerShutoff))
	waitAlarm(t, s, compute.AlarmInstanceStopped, ent, true)
	waitAlarm(t, s, compute.AlarmInstanceFailed, ent, false)

	// Deleted while its host is lost: the record goes at once, the domain
	// when the host returns.
	h.setDown(true)
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.Down, hh.Lost = "power-off", true })
	if err := m.DeleteServer(ctx, "vm1"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		if _, err := m.Server(ctx, sv.ID); errors.Is(err, compute.ErrServerNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server on a lost host not deleted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.setDown(false)
	s.setHost("compute-0", func(hh *compute.HypervisorHost) { hh.Down, hh.Lost = "", false })
	for {
		if _, _, ok := h.domState(sv.ID); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("orphan domain not removed when the host returned")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTaskResumesAfterRestart(t *testing.T) {
	m, s := newSite(t, "compute-0")
	ctx := context.Background()
	h := s.fake["fake://compute-0"]
	// The hypervisor is unreachable; the task keeps retrying...
	h.setDown(true)
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	// ...and fails after RetryFor: error, with the alarm.
	got := waitFor(t, m, sv.ID, "error", idle(compute.ServerError))
	if !strings.Contains(got.Fault, "connection refused") {
		t.Errorf("fault = %q", got.Fault)
	}
	// A task recorded but not run (a crash right after the record) is
	// run by the next manager.
	h.setDown(false)
	if err := m.DeleteServer(ctx, sv.ID); err != nil {
		t.Fatal(err)
	}
	waitGone := func(id string) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := s.store.Server(ctx, id, ""); errors.Is(err, compute.ErrServerNotFound) {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("server %s not deleted", id)
	}
	waitGone(sv.ID)

	rec, err := s.store.CreateServer(ctx, compute.Server{ID: "0b6c7c2e-2f7a-4a53-9d53-1b1d8c0f4e11", Name: "vm2", Project: "admin",
		Status: compute.ServerBuilding, Task: compute.TaskSpawning, Host: "compute-0", Image: sv.Image, ImageName: "img1",
		Flavor: sv.Flavor})
	if err != nil {
		t.Fatal(err)
	}
	startManager(t, s)
	waitFor(t, m, rec.ID, "active after restart", idle(compute.ServerActive))
}

func TestTenancy(t *testing.T) {
	m, s := newSite(t, "compute-0")
	admin := context.Background()
	tenant := auth.WithPrincipal(admin, auth.Principal{User: "alice", Role: auth.Operator, Project: "p1"})
	other := auth.WithPrincipal(admin, auth.Principal{User: "bob", Role: auth.Operator, Project: "p2"})
	mine, err := m.CreateServer(tenant, compute.CreateServer{Name: "vm", Image: "img1", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	if mine.Project != "p1" {
		t.Errorf("project = %s", mine.Project)
	}
	if _, err := m.CreateServer(other, compute.CreateServer{Name: "vm", Image: "img1", Flavor: "small"}); err != nil {
		t.Errorf("same name in another project: %v", err)
	}
	if _, err := m.Server(other, mine.ID); !errors.Is(err, compute.ErrServerNotFound) {
		t.Errorf("another project's server by ID: %v", err)
	}
	list, _, err := m.ListServers(tenant, page.Options{Limit: 10})
	if err != nil || len(list) != 1 || list[0].ID != mine.ID {
		t.Errorf("tenant's list = %+v, %v", list, err)
	}
	all, _, _ := m.ListServers(admin, page.Options{Limit: 10})
	if len(all) != 2 {
		t.Errorf("admin sees %d servers; want 2", len(all))
	}
	if _, err := m.CreateServer(tenant, compute.CreateServer{Name: "x", Image: "img1", Flavor: "small", Host: "compute-0"}); !errors.Is(err, errs.Forbidden) {
		t.Errorf("tenant picking a host: %v", err)
	}
	if err := m.DeleteServer(other, mine.ID); !errors.Is(err, compute.ErrServerNotFound) {
		t.Errorf("deleting another project's server: %v", err)
	}
	if len(s.hosts) != 1 {
		t.Fatal("one host")
	}
}

func TestLiveMigration(t *testing.T) {
	m, s := newSite(t, "compute-0", "compute-1", "compute-2")
	ctx := context.Background()
	h0, h1 := s.fake["fake://compute-0"], s.fake["fake://compute-1"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small", Host: "compute-0"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	ent := "instance=" + sv.ID

	// Refusals: a tenant, the same host, a locked or unknown host.
	tenant := auth.WithPrincipal(ctx, auth.Principal{User: "t", Role: auth.Operator, Project: "admin"})
	if _, err := m.Act(tenant, sv.ID, compute.ServerAction{Action: compute.ActionMigrate}); !errors.Is(err, errs.Forbidden) {
		t.Errorf("operator migrating: %v", err)
	}
	if _, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate, Host: "compute-0"}); !errors.Is(err, errs.Invalid) {
		t.Errorf("migrating to its own host: %v", err)
	}
	s.setHost("compute-2", func(h *compute.HypervisorHost) { h.Down = "locked" })
	for _, bad := range []string{"compute-2", "compute-9"} {
		if _, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate, Host: bad}); !errors.Is(err, compute.ErrNoValidHost) {
			t.Errorf("migrating to %s: %v", bad, err)
		}
	}
	if got, _ := m.Server(ctx, sv.ID); got.Status != compute.ServerActive || got.Migration != nil {
		t.Errorf("a refused migration changed the server: %+v", got)
	}

	// A migration the scheduler places: onto compute-1, the only host up.
	if _, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, m, sv.ID, "migrated", idle(compute.ServerActive))
	if got.Host != "compute-1" || got.Migration == nil || got.Migration.Phase != compute.MigrationDone || got.Migration.Source != "compute-0" {
		t.Fatalf("after migration: %+v %+v", got, got.Migration)
	}
	if st, _, ok := h1.domState(sv.ID); !ok || st != compute.StateRunning {
		t.Errorf("destination domain: %v %v", st, ok)
	}
	if _, _, ok := h0.domState(sv.ID); ok {
		t.Error("source domain still defined")
	}
	if _, ok := h0.files[sv.ID]; ok {
		t.Error("source files still there")
	}

	// A paused, transient copy left on the source (its libvirtd restarted
	// after the job completed, before it ended the source's QEMU): the
	// reconciler destroys it, since the server runs on its own host.
	h0.mu.Lock()
	h0.doms[sv.ID] = &fakeDom{spec: compute.DomainSpec{ID: sv.ID, Name: compute.DomainName(sv.ID)}, state: compute.StatePaused, transient: true}
	h0.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, _, ok := h0.domState(sv.ID); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the paused copy left on the source was not removed")
		}
	}
	if st, _, _ := h1.domState(sv.ID); st != compute.StateRunning {
		t.Fatalf("the server's own domain: %v", st)
	}

	// A failing job: the guest stays on the source, 700.003, the
	// destination cleaned.
	h1.mu.Lock()
	h1.migErr = errors.New("migration job: connection to the destination lost")
	h1.mu.Unlock()
	if _, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate, Host: "compute-0"}); err != nil {
		t.Fatal(err)
	}
	got = waitFor(t, m, sv.ID, "migration failed", idle(compute.ServerActive))
	if got.Host != "compute-1" || got.Migration.Phase != compute.MigrationFailed || !strings.Contains(got.Migration.Reason, "destination lost") {
		t.Errorf("after a failed migration: %+v %+v", got, got.Migration)
	}
	waitAlarm(t, s, compute.AlarmMigrationFailed, ent, true)
	if _, ok := h0.files[sv.ID]; ok {
		t.Error("the failed destination keeps the server's files")
	}
	h1.mu.Lock()
	h1.migErr = nil
	h1.mu.Unlock()

	// Anti-affinity: a member may not join another member's host.
	if _, err := m.CreateServerGroup(ctx, compute.ServerGroup{Name: "ha", Policy: compute.AntiAffinity}); err != nil {
		t.Fatal(err)
	}
	a, _ := m.CreateServer(ctx, compute.CreateServer{Name: "a", Image: "img1", Flavor: "small", Group: "ha", Host: "compute-0"})
	b, _ := m.CreateServer(ctx, compute.CreateServer{Name: "b", Image: "img1", Flavor: "small", Group: "ha", Host: "compute-1"})
	waitFor(t, m, a.ID, "active", idle(compute.ServerActive))
	waitFor(t, m, b.ID, "active", idle(compute.ServerActive))
	if _, err := m.Act(ctx, "a", compute.ServerAction{Action: compute.ActionMigrate, Host: "compute-1"}); !errors.Is(err, compute.ErrNoValidHost) ||
		!strings.Contains(err.Error(), "anti-affinity") {
		t.Errorf("breaking anti-affinity: %v", err)
	}

	// Back again, and a successful migration clears 700.003.
	if _, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate, Host: "compute-0"}); err != nil {
		t.Fatal(err)
	}
	got = waitFor(t, m, sv.ID, "migrated back", func(sv compute.Server) bool { return idle(compute.ServerActive)(sv) && sv.Host == "compute-0" })
	waitAlarm(t, s, compute.AlarmMigrationFailed, ent, false)
}

// A migration during which the guest's QEMU dies on the source (seen in
// the lab): the destination is cleaned, the guest is booted again on the
// source from its disk, and 700.003 says so; the server stays active
// there.
func TestMigrationSourceDeathRestartsTheGuest(t *testing.T) {
	m, s := newSite(t, "compute-0", "compute-1")
	ctx := context.Background()
	h0, h1 := s.fake["fake://compute-0"], s.fake["fake://compute-1"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small", Host: "compute-0"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	_, boots, _ := h0.domState(sv.ID)
	h0.mu.Lock()
	h0.migErr, h0.migDies = errors.New("procedure interrupted while awaiting response"), true
	h0.mu.Unlock()
	if _, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, m, sv.ID, "migration failed", func(sv compute.Server) bool {
		return sv.Task == compute.TaskNone && sv.Migration != nil && sv.Migration.Phase == compute.MigrationFailed
	})
	if got.Status != compute.ServerActive || got.Host != "compute-0" || got.Fault != "" ||
		!strings.Contains(got.Migration.Reason, "restarted there") {
		t.Errorf("after the source's guest died: %s on %s (fault %q), migration %+v; want active on compute-0, its reason naming the restart",
			got.Status, got.Host, got.Fault, got.Migration)
	}
	if st, b, ok := h0.domState(sv.ID); !ok || st != compute.StateRunning || b != boots+1 {
		t.Errorf("on compute-0: %v, booted %d times (before: %d), defined %v; want running, booted once more", st, b, boots, ok)
	}
	if _, _, ok := h1.domState(sv.ID); ok {
		t.Error("the destination keeps a domain")
	}
	waitAlarm(t, s, compute.AlarmMigrationFailed, "instance="+sv.ID, true)
}

func TestLostHostServersRebuiltElsewhere(t *testing.T) {
	m, s := newSite(t, "compute-0", "compute-1")
	ctx := context.Background()
	h0, h1 := s.fake["fake://compute-0"], s.fake["fake://compute-1"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small", Host: "compute-0"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	h0.setDown(true)
	h0.mu.Lock()
	h0.doms[sv.ID].state = compute.StateShutoff
	h0.mu.Unlock()
	s.setHost("compute-0", func(h *compute.HypervisorHost) { h.Down, h.Lost = "failed", true })
	got := waitFor(t, m, sv.ID, "rebuilt on compute-1", func(sv compute.Server) bool {
		return idle(compute.ServerActive)(sv) && sv.Host == "compute-1"
	})
	if st, _, ok := h1.domState(sv.ID); !ok || st != compute.StateRunning || h1.created[sv.ID] != 1 {
		t.Errorf("on compute-1: %v %v, files made %d times", st, ok, h1.created[sv.ID])
	}
	ent := "instance=" + sv.ID
	waitAlarm(t, s, compute.AlarmInstanceEvacuating, ent, false)
	waitAlarm(t, s, compute.AlarmInstanceFailed, ent, false)
	s.mu.Lock()
	logs := strings.Join(s.logs, "\n")
	s.mu.Unlock()
	if !strings.Contains(logs, "rebuilding on compute-1 from image img1") {
		t.Errorf("no log of the rebuild: %s", logs)
	}
	// compute-0 returns with the old, stopped copy: removed.
	h0.setDown(false)
	s.setHost("compute-0", func(h *compute.HypervisorHost) { h.Down, h.Lost = "", false })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, ok := h0.domState(sv.ID); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lost host's stopped copy was not removed when it returned")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got.Status != compute.ServerActive {
		t.Errorf("server %+v", got)
	}
}

// A site controller restarted mid-migration resumes the task and decides
// by where the guest runs: the job finished while it was down.
func TestMigrationResumedAfterRestart(t *testing.T) {
	m, s := newSite(t, "compute-0", "compute-1")
	ctx := context.Background()
	h0, h1 := s.fake["fake://compute-0"], s.fake["fake://compute-1"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small", Host: "compute-0"})
	if err != nil {
		t.Fatal(err)
	}
	sv = waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	// What a controller killed in the copy phase leaves: the record
	// migrating, the job done in the daemons (the guest on compute-1).
	h0.mu.Lock()
	d := h0.doms[sv.ID]
	h0.mu.Unlock()
	if _, err := h1.CreateInstanceFiles(ctx, sv.ID, h0.files[sv.ID], compute.FormatRaw); err != nil {
		h1.mu.Lock()
		h1.bases[h0.files[sv.ID]] = []byte("x")
		h1.mu.Unlock()
		if _, err := h1.CreateInstanceFiles(ctx, sv.ID, h0.files[sv.ID], compute.FormatRaw); err != nil {
			t.Fatal(err)
		}
	}
	h1.mu.Lock()
	h1.doms[sv.ID] = &fakeDom{spec: d.spec, state: compute.StateRunning}
	h1.mu.Unlock()
	h0.mu.Lock()
	d.state = compute.StateShutoff
	h0.mu.Unlock()
	sv.Status, sv.Task = compute.ServerMigrating, compute.TaskMigrating
	sv.Migration = &compute.Migration{Source: "compute-0", Dest: "compute-1", Phase: compute.MigrationCopying, StartedAt: time.Now()}
	if _, err := s.store.UpdateServer(ctx, sv); err != nil {
		t.Fatal(err)
	}
	startManager(t, s) // the restarted controller
	got := waitFor(t, m, sv.ID, "migration resolved", func(sv compute.Server) bool { return sv.Task == compute.TaskNone })
	if got.Host != "compute-1" || got.Status != compute.ServerActive || got.Migration.Phase != compute.MigrationDone {
		t.Errorf("after the restart: %+v %+v", got, got.Migration)
	}
	if _, _, ok := h0.domState(sv.ID); ok {
		t.Error("the source's copy was not removed")
	}
}

// An action recorded the moment the previous task's outcome is stored
// (before its driver has exited) is still run.
func TestBackToBackActions(t *testing.T) {
	m, _ := newSite(t, "compute-0")
	ctx := context.Background()
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	for i := range 40 {
		a, want := compute.ActionStop, compute.ServerShutoff
		if i%2 == 1 {
			a, want = compute.ActionStart, compute.ServerActive
		}
		for {
			_, err := m.Act(ctx, sv.ID, compute.ServerAction{Action: a})
			if err == nil {
				break
			}
			if !errors.Is(err, compute.ErrServerState) {
				t.Fatal(err)
			}
			// still busy with the last one: try again at once
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := m.Server(ctx, sv.ID)
			if err == nil && got.Task == compute.TaskNone && got.Status == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("action %d (%s) never ran: %+v", i, a, got)
			}
			runtime.Gosched()
		}
	}
}

// A migration that does not converge has its downtime limit raised step
// by step, then is aborted at the time bound: the guest stays on the
// source.
func TestMigrationTimeBound(t *testing.T) {
	m, s := newSite(t, "compute-0", "compute-1")
	ctx := context.Background()
	h0 := s.fake["fake://compute-0"]
	sv, err := m.CreateServer(ctx, compute.CreateServer{Name: "vm1", Image: "img1", Flavor: "small", Host: "compute-0"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, m, sv.ID, "active", idle(compute.ServerActive))
	// A manager with a short bound, alone on the site.
	m2, err := compute.NewManager(compute.ManagerConfig{Store: s.store, Images: s, Flavors: s.store, Hosts: s,
		Connect: func(_ context.Context, uri string) (compute.HostConn, error) { return s.fake[uri], nil },
		Alarms:  s, Logger: slog.New(slog.DiscardHandler), MigrationTimeout: 5 * time.Second, ReconcileEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m2.Run(rctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h0.mu.Lock()
	h0.stuck = make(chan struct{})
	h0.mu.Unlock()
	start := time.Now()
	if _, err := m2.Act(ctx, sv.ID, compute.ServerAction{Action: compute.ActionMigrate, Host: "compute-1"}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, m2, sv.ID, "aborted", func(sv compute.Server) bool { return sv.Task == compute.TaskNone })
	if got.Host != "compute-0" || got.Status != compute.ServerActive || got.Migration.Phase != compute.MigrationFailed ||
		!strings.Contains(got.Migration.Reason, "time bound") || time.Since(start) < 5*time.Second {
		t.Errorf("after the time bound: %+v %+v (%s)", got, got.Migration, time.Since(start))
	}
	h0.mu.Lock()
	limits := fmt.Sprint(h0.limits)
	h0.mu.Unlock()
	if !strings.HasPrefix(limits, "[50ms 100ms") {
		t.Errorf("downtime limits set: %s; want 50ms, then raised", limits)
	}
	waitAlarm(t, s, compute.AlarmMigrationFailed, "instance="+sv.ID, true)
}
