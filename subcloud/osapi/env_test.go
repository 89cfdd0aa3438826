package osapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/auth/authdb"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/computedb"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/page"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/subcloud/osapi"
)

// fakeServers is an in-process compute.Servers: servers become active at
// once on host compute-0 and actions complete at once. It applies the
// interface's tenancy rule: non-admins see their project's servers only.
type fakeServers struct {
	images  compute.ImageStore
	flavors compute.FlavorStore

	mu      sync.Mutex
	servers map[string]compute.Server
	groups  []compute.ServerGroup
	acts    []compute.ServerAction // every action asked, in order
}

func newFakeServers(im compute.ImageStore, fl compute.FlavorStore) *fakeServers {
	return &fakeServers{images: im, flavors: fl, servers: map[string]compute.Server{}}
}

var _ compute.Servers = (*fakeServers)(nil)

func principal(ctx context.Context) auth.Principal {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		panic("fakeServers: no principal in ctx")
	}
	return p
}

func (f *fakeServers) visible(ctx context.Context, sv compute.Server) bool {
	p := principal(ctx)
	return sv.VisibleTo(p.ProjectName(), p.Role.Allows(auth.Admin))
}

func (f *fakeServers) CreateServer(ctx context.Context, req compute.CreateServer) (compute.Server, error) {
	im, err := f.images.Image(ctx, req.Image)
	if err != nil {
		return compute.Server{}, err
	}
	fl, err := f.flavors.Flavor(ctx, req.Flavor)
	if err != nil {
		return compute.Server{}, err
	}
	if err := compute.ValidateName("name", req.Name); err != nil {
		return compute.Server{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, sv := range f.servers {
		if sv.Name == req.Name {
			return compute.Server{}, fmt.Errorf("%w: %s", compute.ErrServerExists, req.Name)
		}
	}
	host := req.Host
	if host == "" {
		host = "compute-0"
	}
	now := time.Now().UTC().Truncate(time.Second)
	sv := compute.Server{ID: uuid.NewString(), Name: req.Name, Project: req.Project, Status: compute.ServerActive,
		Power: compute.StateRunning, Host: host, Image: im.ID, ImageName: im.Name,
		Flavor:    compute.ServerFlavor{ID: fl.ID, Name: fl.Name, VCPUs: fl.VCPUs, RAMMiB: fl.RAMMiB, DiskGiB: fl.DiskGiB},
		CreatedAt: now, UpdatedAt: now, LaunchedAt: &now, Rev: 1}
	f.servers[sv.ID] = sv
	return sv, nil
}

func (f *fakeServers) find(ctx context.Context, id string) (compute.Server, error) {
	for _, sv := range f.servers {
		if (sv.ID == id || sv.Name == id) && f.visible(ctx, sv) {
			return sv, nil
		}
	}
	return compute.Server{}, fmt.Errorf("%w: %s", compute.ErrServerNotFound, id)
}

func (f *fakeServers) Server(ctx context.Context, id string) (compute.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.find(ctx, id)
}

func (f *fakeServers) ListServers(ctx context.Context, opts page.Options) ([]compute.Server, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []compute.Server
	for _, sv := range f.servers {
		if !f.visible(ctx, sv) || sv.Name <= opts.After {
			continue
		}
		if p, ok := opts.Filters["project"]; ok && sv.Project != p {
			continue
		}
		if h, ok := opts.Filters["host"]; ok && sv.Host != h {
			continue
		}
		all = append(all, sv)
	}
	slices.SortFunc(all, func(a, b compute.Server) int { return strings.Compare(a.Name, b.Name) })
	if len(all) > opts.Limit {
		return all[:opts.Limit], all[opts.Limit-1].Name, nil
	}
	return all, "", nil
}

func (f *fakeServers) Act(ctx context.Context, id string, a compute.ServerAction) (compute.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sv, err := f.find(ctx, id)
	if err != nil {
		return compute.Server{}, err
	}
	if err := sv.CheckAction(a.Action); err != nil {
		return compute.Server{}, err
	}
	f.acts = append(f.acts, a)
	switch a.Action {
	case compute.ActionStop:
		sv.Status, sv.Power = compute.ServerShutoff, compute.StateShutoff
	case compute.ActionStart:
		sv.Status, sv.Power = compute.ServerActive, compute.StateRunning
	case compute.ActionRebuild:
		im, err := f.images.Image(ctx, a.Image)
		if err != nil {
			return compute.Server{}, err
		}
		sv.Image, sv.ImageName = im.ID, im.Name
		sv.Status, sv.Power = compute.ServerActive, compute.StateRunning
	}
	sv.Rev++
	f.servers[sv.ID] = sv
	return sv, nil
}

func (f *fakeServers) DeleteServer(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	sv, err := f.find(ctx, id)
	if err != nil {
		return err
	}
	delete(f.servers, sv.ID)
	return nil
}

func (f *fakeServers) ConsoleLog(ctx context.Context, id string, lines int) (string, error) {
	return "", nil
}

func (f *fakeServers) ServerStats(ctx context.Context, id string) (compute.DomainStats, error) {
	sv, err := f.find(ctx, id)
	if err != nil {
		return compute.DomainStats{}, err
	}
	return compute.DomainStats{State: sv.Power, VCPUs: sv.Flavor.VCPUs, MemoryMiB: int64(sv.Flavor.RAMMiB)}, nil
}

func (f *fakeServers) Hypervisors(ctx context.Context) ([]compute.HypervisorInfo, error) {
	return []compute.HypervisorInfo{
		{Host: "compute-0", State: "up", Status: "enabled", VCPUs: 4, VCPUsUsed: 1, MemoryMiB: 8192, MemoryMiBUse: 128,
			DiskGiB: 100, DiskGiBUsed: 1, Servers: 1, URI: "qemu+tcp://compute-0/system", Version: "9.0.0"},
		{Host: "compute-1", State: "down", Status: "disabled", VCPUs: 4, MemoryMiB: 8192, DiskGiB: 100, Version: "9.0.0"},
	}, nil
}

func (f *fakeServers) CreateServerGroup(ctx context.Context, g compute.ServerGroup) (compute.ServerGroup, error) {
	return compute.ServerGroup{}, errs.Wrapf(errs.Invalid, "not in this fake")
}

func (f *fakeServers) ServerGroup(ctx context.Context, id string) (compute.ServerGroup, error) {
	return compute.ServerGroup{}, compute.ErrServerGroupNotFound
}

func (f *fakeServers) ListServerGroups(ctx context.Context) ([]compute.ServerGroup, error) {
	return f.groups, nil
}

func (f *fakeServers) DeleteServerGroup(ctx context.Context, id string) error {
	return compute.ErrServerGroupNotFound
}

// env is a site's OpenStack API on httptest: real auth (SQLite), real
// image and flavor stores, fake servers.
type env struct {
	t       *testing.T
	url     string
	auth    *auth.Service
	store   *computedb.Store
	servers *fakeServers
	images  map[string]compute.Image  // by name
	flavors map[string]compute.Flavor // by name
}

// Users of the test site: name -> role and project. Every password is
// password-of-NAME.
var users = []struct {
	name    string
	role    auth.Role
	project string
}{
	{"root", auth.Admin, auth.DefaultProject},
	{"ops", auth.Operator, "tenant-a"},
	{"ro", auth.Reader, "tenant-a"},
	{"bob", auth.Operator, "tenant-b"},
}

func password(user string) string { return "password-of-" + user }

// newEnv serves the API; withServers false leaves Deps.Servers nil.
func newEnv(t *testing.T, withServers bool) *env {
	t.Helper()
	return newEnvWith(t, withServers, nil)
}

// newEnvWith is newEnv with more of Deps set by deps (nil: none).
func newEnvWith(t *testing.T, withServers bool, deps func(*osapi.Deps, *computedb.Store)) *env {
	t.Helper()
	ctx := context.Background()
	db := sqldbtest.Open(t, sqldb.SQLite)
	as, err := authdb.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{Store: as, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tenant-a", "tenant-b"} {
		if _, err := a.CreateProject(ctx, p, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		if _, err := a.CreateProjectUser(ctx, u.name, u.role, u.project, password(u.name)); err != nil {
			t.Fatal(err)
		}
	}
	store, err := computedb.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, auth: a, store: store, images: map[string]compute.Image{}, flavors: map[string]compute.Flavor{}}
	for _, im := range []struct {
		name, project string
		vis           compute.Visibility
		active        bool
	}{
		{"petrel-test", "admin", compute.Public, true}, {"petrel-test-v2", "admin", compute.Public, true},
		{"private-a", "tenant-a", compute.Private, true}, {"private-b", "tenant-b", compute.Private, true},
		{"queued-a", "tenant-a", compute.Private, false},
	} {
		sum := sha256.Sum256([]byte(im.name))
		rec, err := store.CreateImage(ctx, compute.Image{Name: im.name, DiskFormat: compute.FormatQCOW2, Visibility: im.vis,
			Project: im.project, Checksum: hex.EncodeToString(sum[:]), Size: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if im.active {
			if _, err := store.TransitionImage(ctx, rec.ID, compute.ImageQueued, compute.ImageSaving, nil); err != nil {
				t.Fatal(err)
			}
			if rec, err = store.TransitionImage(ctx, rec.ID, compute.ImageSaving, compute.ImageActive, nil); err != nil {
				t.Fatal(err)
			}
		}
		e.images[im.name] = rec
	}
	for _, f := range []compute.Flavor{
		{Name: "m1.tiny", VCPUs: 1, RAMMiB: 128, DiskGiB: 1, Public: true, Project: "admin"},
		{Name: "m1.small", VCPUs: 2, RAMMiB: 256, DiskGiB: 2, Public: true, Project: "admin"},
		{Name: "a.private", VCPUs: 1, RAMMiB: 96, DiskGiB: 1, Project: "tenant-a"},
		{Name: "b.private", VCPUs: 1, RAMMiB: 96, DiskGiB: 1, Project: "tenant-b"},
	} {
		rec, err := store.CreateFlavor(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		e.flavors[f.Name] = rec
	}
	srv, err := rest.New(rest.Config{Logger: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	a.Register(srv)
	d := osapi.Deps{Images: store, Flavors: store}
	if withServers {
		e.servers = newFakeServers(store, store)
		d.Servers = e.servers
	}
	if deps != nil {
		deps(&d, store)
	}
	osapi.Register(srv, a, d)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	e.url, e.auth = ts.URL, a
	return e
}

// token logs user in through Petrel's own login and returns the secret.
func (e *env) token(user string) string {
	e.t.Helper()
	secret, _, err := e.auth.Login(context.Background(), user, password(user))
	if err != nil {
		e.t.Fatal(err)
	}
	return secret
}
