package central_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// patchKeys makes a signing key pair in a temporary directory.
func patchKeys(t *testing.T) (priv, pub string) {
	t.Helper()
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "patch.key"), filepath.Join(dir, "patch.pub")
	if err := swpatch.GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// buildPatch builds a signed patch carrying one small file.
func buildPatch(t *testing.T, privPath, id string) []byte {
	t.Helper()
	key, err := swpatch.LoadPrivateKey(privPath)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "motd")
	if err := os.WriteFile(src, []byte("patched by "+id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := swpatch.Build(&b, swpatch.BuildSpec{ID: id, Version: "99.0.0+" + id,
		Files: []swpatch.Content{{Path: "etc/motd", Source: src, Mode: 0o644}}}, key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// startPatchCentral starts central trusting pub, with fast fleet steps.
func startPatchCentral(t *testing.T, pub string) fleet {
	t.Helper()
	shell := servertest.Shell(t)
	c, err := central.New(context.Background(), central.Config{Shell: shell, SiteListen: "127.0.0.1:0", UpdateInterval: interval,
		PatchPublicKey: pub, FleetPoll: 20 * time.Millisecond, FleetOfflineWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, c)
	return fleet{c: c, admin: plainClient(t, c, servertest.AdminToken(t, c)), dir: shell.DataDir}
}

func (f fleet) startPatchSite(t *testing.T, name, pub string) {
	t.Helper()
	cert, key := f.siteFiles(t, name)
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: name, Shape: inventory.Simplex, Shell: servertest.Shell(t),
		PatchPublicKey: pub, Central: &subcloud.HomeConfig{Addr: f.c.SiteAddr().String(), CACert: f.c.Shell().CACert,
			CertFile: cert, KeyFile: key, PublicKeyFile: filepath.Join(f.dir, central.RelayPublicKey), Interval: interval}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	f.waitAvailability(t, name, central.Online)
	if err := f.admin.Do(context.Background(), http.MethodPost, "/v1/subclouds/"+name+"/action", nil,
		central.SubcloudActionRequest{Action: "manage"}, nil); err != nil {
		t.Fatal(err)
	}
}

func (f fleet) strategy(t *testing.T) strategy.Strategy {
	t.Helper()
	var s strategy.Strategy
	if err := f.admin.Do(context.Background(), http.MethodGet, "/v1/strategies/patch", nil, nil, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFleetStrategyWithRealSites: a patch uploaded to central reaches two
// real (hostless) site controllers through their links; the fleet
// strategy applies it at both, and the sync map shows patches in sync.
// Bad input is refused with a 4xx naming the field, storing nothing.
func TestFleetStrategyWithRealSites(t *testing.T) {
	priv, pub := patchKeys(t)
	f := startPatchCentral(t, pub)
	ctx := context.Background()
	for _, n := range []string{"site-a", "site-b"} {
		f.startPatchSite(t, n, pub)
	}

	// Patches at central: a bad archive leaves nothing; a good one is kept.
	good := buildPatch(t, priv, "P-7")
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0xff
	if err := f.admin.Upload(ctx, http.MethodPost, "/v1/patches", bytes.NewReader(bad), int64(len(bad)), nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("upload(tampered) = %v; want invalid", err)
	}
	otherPriv, _ := patchKeys(t)
	foreign := buildPatch(t, otherPriv, "P-8")
	if err := f.admin.Upload(ctx, http.MethodPost, "/v1/patches", bytes.NewReader(foreign), int64(len(foreign)), nil); err == nil {
		t.Errorf("upload(signed with another key) accepted")
	}
	var list rest.List[swpatch.Record]
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/patches", nil, nil, &list); err != nil || len(list.Items) != 0 {
		t.Fatalf("patches after refused uploads = %+v, %v; want none", list.Items, err)
	}
	var rec swpatch.Record
	if err := f.admin.Upload(ctx, http.MethodPost, "/v1/patches", bytes.NewReader(good), int64(len(good)), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.ID != "P-7" || rec.State != swpatch.Available {
		t.Errorf("uploaded = %+v", rec)
	}

	// Bad fleet strategies: 4xx, nothing stored.
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"patches": []string{"P-7"}, "group": "no-such-group"}, "group"},
		{map[string]any{"patches": []string{"P-7"}, "max_parallel": 501}, "max_parallel"},
		{map[string]any{"patches": []string{"P-7"}, "max_parallel": -1}, "max_parallel"},
		{map[string]any{"max_parallel": 2}, "patches"},
		{map[string]any{"patches": []string{"P-9"}}, "patches"},
		{map[string]any{"patches": []string{"P-7"}, "instance_action": "teleport"}, "instance_action"},
	} {
		err := f.admin.Do(ctx, http.MethodPost, "/v1/strategies/patch", nil, tc.body, nil)
		var ae *client.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Field != tc.field && !strings.Contains(ae.Message, tc.field) {
			t.Errorf("create %v = %v; want 400 naming %s", tc.body, err, tc.field)
		}
	}
	if err := f.admin.Do(ctx, http.MethodGet, "/v1/strategies/patch", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Fatalf("a refused create stored a strategy: %v", err)
	}
	// A reader may look, not create.
	if _, err := f.c.Shell().Auth.CreateUser(ctx, "watcher", auth.Reader, "reader-pass-1"); err != nil {
		t.Fatal(err)
	}
	tok, _, err := f.c.Shell().Auth.Login(ctx, "watcher", "reader-pass-1")
	if err != nil {
		t.Fatal(err)
	}
	reader := plainClient(t, f.c, tok)
	if err := reader.Do(ctx, http.MethodPost, "/v1/strategies/patch", nil, map[string]any{"patches": []string{"P-7"}}, nil); !errors.Is(err, errs.Forbidden) {
		t.Errorf("create as reader = %v; want forbidden", err)
	}

	var s strategy.Strategy
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/strategies/patch", nil,
		map[string]any{"patches": []string{"P-7"}, "max_parallel": 1}, &s); err != nil {
		t.Fatal(err)
	}
	if s.Scope != strategy.ScopeFleet || len(s.Stages) != 2 || s.Stages[0].Steps[0].Target != "site-a" {
		t.Fatalf("created = %+v", s)
	}
	if err := f.admin.Do(ctx, http.MethodPost, "/v1/strategies/patch/actions", nil, map[string]string{"action": "apply"}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fleet strategy applied", func() (bool, string) {
		s = f.strategy(t)
		return s.State == strategy.Applied || s.State == strategy.ApplyFailed, string(s.State) + " " + s.Reason
	})
	if s.State != strategy.Applied {
		t.Fatalf("fleet strategy %s: %s", s.State, s.Reason)
	}
	for _, n := range []string{"site-a", "site-b"} {
		var at swpatch.Record
		if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+n+"/api/v1/patches/P-7", nil, nil, &at); err != nil || !at.State.Applied() {
			t.Errorf("%s: P-7 = %s, %v; want applied (a hostless site keeps it deploying)", n, at.State, err)
		}
		waitFor(t, n+" patches in-sync", func() (bool, string) {
			var sc central.Subcloud
			if err := f.admin.Do(ctx, http.MethodGet, "/v1/subclouds/"+n, nil, nil, &sc); err != nil {
				return false, err.Error()
			}
			return sc.Sync["patches"] == central.InSync, string(sc.Sync["patches"])
		})
	}
	// In use: central keeps the patch while the strategy could run.
	if err := f.admin.Do(ctx, http.MethodDelete, "/v1/strategies/patch", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := f.admin.Do(ctx, http.MethodDelete, "/v1/patches/P-7", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Every change was audited, refusals included.
	evs, _, err := f.c.Shell().Events.Events(ctx, rest.ListOptions{Limit: 1000, Filters: map[string]string{"type": "audit"}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev.Type == faultmgr.EventAudit {
			seen[ev.Action+" "+ev.Result] = true
		}
	}
	for _, want := range []string{"uploadPatch ok", "uploadPatch invalid_argument", "createStrategy ok", "createStrategy invalid_argument",
		"createStrategy permission_denied", "strategyAction ok", "deleteStrategy ok", "deletePatch ok"} {
		if !seen[want] {
			t.Errorf("no audit event %q", want)
		}
	}
}
