package subcloud_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/internal/version"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/swpatch"
)

// patchKeys writes a trusted public key file and returns it with the
// signing key.
func patchKeys(t *testing.T) (string, ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	path := filepath.Join(t.TempDir(), "patch.pub")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, pub, priv
}

func startPatchSite(t *testing.T, keyFile string) site {
	t.Helper()
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: "site-sx", Shape: inventory.Simplex,
		Shell: servertest.Shell(t), PatchPublicKey: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	return site{s, servertest.Client(t, s, servertest.AdminToken(t, s))}
}

func patchArchive(t *testing.T, key ed25519.PrivateKey, spec swpatch.BuildSpec) []byte {
	t.Helper()
	if spec.Version == "" {
		spec.Version = swpatch.Stamp(version.Get().Version, spec.ID)
	}
	if spec.Files == nil {
		spec.Files = []swpatch.Content{{Path: "bin/petrel", Data: []byte("#!/bin/sh\n")}}
	}
	var b bytes.Buffer
	if _, err := swpatch.Build(&b, spec, key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func upload(s site, b []byte) (swpatch.Record, error) {
	var rec swpatch.Record
	err := s.api.Upload(context.Background(), http.MethodPost, "/v1/patches", bytes.NewReader(b), int64(len(b)), &rec)
	return rec, err
}

func listPatches(t *testing.T, s site) []swpatch.Record {
	t.Helper()
	var l rest.List[swpatch.Record]
	if err := s.api.Do(context.Background(), http.MethodGet, "/v1/patches", nil, nil, &l); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// traversalArchive is correctly signed, its manifest clean, and its
// payload carries an entry that climbs out of the slot.
func traversalArchive(t *testing.T, key ed25519.PrivateKey) []byte {
	t.Helper()
	var payload bytes.Buffer
	zw := gzip.NewWriter(&payload)
	tw := tar.NewWriter(zw)
	ok := []byte("ok\n")
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/ok", Mode: 0o644, Size: int64(len(ok))})
	tw.Write(ok)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "etc/evil", Linkname: "/etc/shadow"})
	tw.Close()
	zw.Close()
	spec := patchArchive(t, key, swpatch.BuildSpec{ID: "EVIL", Files: []swpatch.Content{{Path: "etc/ok", Data: ok}}})
	p, err := swpatch.Verify(bytes.NewReader(spec), int64(len(spec)), key.Public().(ed25519.PublicKey), swpatch.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := swpatch.Seal(&b, p.Manifest, payload.Bytes(), key); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestPatchUploadRefusals: unsigned, tampered, wrongly signed, malicious
// and downgrading archives are refused and leave nothing stored.
func TestPatchUploadRefusals(t *testing.T) {
	keyFile, _, priv := patchKeys(t)
	_, _, otherKey := patchKeys(t)
	s := startPatchSite(t, keyFile)
	good := patchArchive(t, priv, swpatch.BuildSpec{ID: "P1", RebootRequired: true})
	tampered := bytes.Clone(good)
	tampered[len(tampered)-5] ^= 0x55
	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"unsigned", []byte("#!/bin/sh\necho not a patch\n"), errs.Invalid},
		{"tampered", tampered, errs.Invalid},
		{"wrongly signed", patchArchive(t, otherKey, swpatch.BuildSpec{ID: "P1"}), errs.Invalid},
		{"malicious", traversalArchive(t, priv), errs.Invalid},
		{"downgrade", patchArchive(t, priv, swpatch.BuildSpec{ID: "OLD", Version: "0.0.1"}), errs.Conflict},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if rec, err := upload(s, c.b); !errors.Is(err, c.want) {
				t.Fatalf("upload = %+v, %v; want %v", rec, err, c.want)
			}
			if l := listPatches(t, s); len(l) != 0 {
				t.Errorf("patches after a refused upload = %+v; want none", l)
			}
			ents, _ := os.ReadDir(filepath.Join(s.Shell().DataDir(), "patches"))
			if len(ents) != 0 {
				t.Errorf("patch directory after a refused upload holds %d files; want none", len(ents))
			}
		})
	}
	rec, err := upload(s, good)
	if err != nil || rec.State != swpatch.Available || !rec.RebootRequired || rec.ID != "P1" {
		t.Fatalf("upload(good) = %+v, %v", rec, err)
	}
	if _, err := upload(s, good); !errors.Is(err, errs.Conflict) {
		t.Errorf("second upload of P1 = %v; want conflict", err)
	}
	// Once P2 (a newer version) is applied, a patch older than it is refused.
	p2 := patchArchive(t, priv, swpatch.BuildSpec{ID: "P2", Version: "99.0.0"})
	if _, err := upload(s, p2); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(context.Background(), http.MethodPost, "/v1/patches/P2/apply", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := upload(s, patchArchive(t, priv, swpatch.BuildSpec{ID: "P3", Version: "98.0.0"})); !errors.Is(err, errs.Conflict) ||
		!strings.Contains(err.Error(), "P2") {
		t.Errorf("upload of a patch older than applied P2 = %v; want conflict naming P2", err)
	}
	// Every mutating call, refused or not, is an audit event.
	var evs rest.List[faultmgr.Event]
	if err := s.api.Do(context.Background(), http.MethodGet, "/v1/events", url.Values{"type": {"audit"}, "limit": {"1000"}}, nil, &evs); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range evs.Items {
		count[e.Action+" "+e.Result]++
	}
	if count["uploadPatch ok"] != 2 || count["applyPatch ok"] != 1 || count["uploadPatch invalid_argument"] != 4 || count["uploadPatch conflict"] != 3 {
		t.Errorf("audit events = %v; want every upload and apply", count)
	}
}

// TestPatchLifecycle: apply refused naming the missing requirement;
// install refused on an unlocked host for a reboot-required patch; install
// through the agent (a fake platform) once locked; the patch deploys when
// the host runs it; a rollback marks it install-failed and raises 900.003.
func TestPatchLifecycle(t *testing.T) {
	keyFile, pub, priv := patchKeys(t)
	s := startPatchSite(t, keyFile)
	ctx := context.Background()
	plat := agenttest.NewPlatform()
	a := newAgentKey(t, s, s.joinToken(t), "", plat, monitor.Config{}, pub)
	a.start(t)
	var hosts rest.List[inventory.Host]
	deadline := time.Now().Add(10 * time.Second)
	for len(hosts.Items) == 0 && time.Now().Before(deadline) {
		s.api.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if len(hosts.Items) != 1 {
		t.Fatal("the agent's host never appeared")
	}
	id := hosts.Items[0].UUID
	pers, name := inventory.Controller, "controller-0"
	if err := s.api.Do(ctx, http.MethodPatch, "/v1/hosts/"+id, nil, subcloud.UpdateHostRequest{Personality: &pers, Hostname: &name}, nil); err != nil {
		t.Fatal(err)
	}
	waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil && h.Software.Slot == "a" })
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/action", nil, map[string]string{"action": "unlock"}, nil); err != nil {
		t.Fatal(err)
	}

	for _, spec := range []swpatch.BuildSpec{{ID: "P1", RebootRequired: true}, {ID: "P2", Requires: []string{"P1"}, RebootRequired: true}} {
		if _, err := upload(s, patchArchive(t, priv, spec)); err != nil {
			t.Fatal(err)
		}
	}
	err := s.api.Do(ctx, http.MethodPost, "/v1/patches/P2/apply", nil, nil, nil)
	if !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "requires P1") {
		t.Fatalf("apply P2 before P1 = %v; want a conflict naming P1", err)
	}
	var rec swpatch.Record
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/P1/apply", nil, nil, &rec); err != nil || rec.State != swpatch.Deploying {
		t.Fatalf("apply P1 = %+v, %v; want deploying", rec, err)
	}
	if rec.Hosts["controller-0"] != swpatch.HostPending {
		t.Errorf("P1 hosts = %v; want controller-0 pending", rec.Hosts)
	}
	waitHost(t, s, id, func(h inventory.Host) bool { return !h.PatchCurrent })
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/install", nil, nil, nil); !errors.Is(err, errs.InvalidTransition) {
		t.Fatalf("install on an unlocked host = %v; want invalid transition (lock first)", err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/action", nil, map[string]string{"action": "force-lock"}, nil); err != nil {
		t.Fatal(err)
	}
	var resp subcloud.InstallResponse
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/install", nil, nil, &resp); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Order.Patches, []string{"P1"}) || resp.Order.InService {
		t.Errorf("install order = %+v; want P1, not in service", resp.Order)
	}
	h := waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil && h.Software.NextSlot == "b" })
	if got := plat.Installed(); !slices.Equal(got, []string{"staged:P1"}) {
		t.Errorf("platform installs = %v; want P1 staged", got)
	}
	if !slices.Equal(h.Software.NextPatches, []string{"P1"}) {
		t.Errorf("staged = %v", h.Software.NextPatches)
	}
	// The host reboots into the slot (the fake platform says so).
	plat.SetSoftware(swpatch.Status{Slot: "b", Version: "0.1.0+P1", Patches: []string{"P1"}})
	h = waitHost(t, s, id, func(h inventory.Host) bool { return h.PatchCurrent })
	deadline = time.Now().Add(10 * time.Second)
	for rec.State != swpatch.Deployed && time.Now().Before(deadline) {
		s.api.Do(ctx, http.MethodGet, "/v1/patches/P1", nil, nil, &rec)
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if rec.State != swpatch.Deployed || rec.Hosts["controller-0"] != swpatch.HostCurrent {
		t.Fatalf("P1 = %+v; want deployed, controller-0 patch-current", rec)
	}
	// P2 now; its slot fails to boot and the chassis rolls back.
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/P2/apply", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/install", nil, nil, &resp); err != nil {
		t.Fatal(err)
	}
	waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil && slices.Contains(h.Software.NextPatches, "P2") })
	plat.SetSoftware(swpatch.Status{Slot: "b", Version: "0.1.0+P1", Patches: []string{"P1"},
		Rollback: &swpatch.RollbackInfo{From: "a", To: "b", Patches: []string{"P1", "P2"}, Reason: "did not come back"}})
	waitAlarms(t, s, "host=controller-0", "200.001 host=controller-0", "900.003 host=controller-0")
	// The settle that raised 900.003 stores P2's host states right after.
	deadline = time.Now().Add(10 * time.Second)
	for s.api.Do(ctx, http.MethodGet, "/v1/patches/P2", nil, nil, &rec); rec.Hosts["controller-0"] != swpatch.HostInstallFailed && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		s.api.Do(ctx, http.MethodGet, "/v1/patches/P2", nil, nil, &rec)
	}
	if rec.Hosts["controller-0"] != swpatch.HostInstallFailed || rec.State != swpatch.Deploying {
		t.Errorf("P2 = %+v; want deploying, controller-0 install-failed", rec)
	}
	// Nothing stored may be removed that P2 requires, and a failed install
	// can be cleared by removing P2 (back to deployed P1 only).
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/P1/remove", nil, nil, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("remove P1 while P2 requires it = %v; want conflict", err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/P2/remove", nil, nil, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.State != swpatch.Available {
		t.Errorf("P2 after remove = %s; want available (no host runs it)", rec.State)
	}
	// With the patch that rolled back removed, 900.003 clears and the host
	// is patch-current again.
	waitAlarms(t, s, "host=controller-0", "200.001 host=controller-0")
	waitHost(t, s, id, func(h inventory.Host) bool { return h.PatchCurrent })
	if err := s.api.Do(ctx, http.MethodDelete, "/v1/patches/P1", nil, nil, nil); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("delete deployed P1 = %v; want invalid transition", err)
	}
	if err := s.api.Do(ctx, http.MethodDelete, "/v1/patches/P2", nil, nil, nil); err != nil {
		t.Errorf("delete available P2 = %v", err)
	}
}

// TestAgentVerifiesBeforeInstalling: an agent that does not trust the key
// a patch is signed with refuses it before its platform sees anything;
// the site marks the host install-failed and raises 900.002.
func TestAgentVerifiesBeforeInstalling(t *testing.T) {
	keyFile, _, priv := patchKeys(t)
	_, otherPub, _ := patchKeys(t)
	s := startPatchSite(t, keyFile)
	ctx := context.Background()
	plat := agenttest.NewPlatform()
	a := newAgentKey(t, s, s.joinToken(t), "", plat, monitor.Config{}, otherPub)
	a.start(t)
	var hosts rest.List[inventory.Host]
	deadline := time.Now().Add(10 * time.Second)
	for len(hosts.Items) == 0 && time.Now().Before(deadline) {
		s.api.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if len(hosts.Items) != 1 {
		t.Fatal("the agent's host never appeared")
	}
	id := hosts.Items[0].UUID
	pers, name := inventory.Worker, "worker-0"
	if err := s.api.Do(ctx, http.MethodPatch, "/v1/hosts/"+id, nil, subcloud.UpdateHostRequest{Personality: &pers, Hostname: &name}, nil); err != nil {
		t.Fatal(err)
	}
	waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil })
	if _, err := upload(s, patchArchive(t, priv, swpatch.BuildSpec{ID: "P1", RebootRequired: true})); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/P1/apply", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/worker-0/install", nil, nil, nil); err != nil {
		t.Fatal(err) // a newly assigned host is locked
	}
	h := waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil && h.Software.Failed == "P1" })
	if !strings.Contains(h.Software.FailedReason, "signature") {
		t.Errorf("failed_reason = %q; want the signature's refusal", h.Software.FailedReason)
	}
	if got := plat.Installed(); len(got) != 0 {
		t.Errorf("the platform was handed %v; want nothing", got)
	}
	waitAlarms(t, s, "host=worker-0", "900.002 host=worker-0")
	var rec swpatch.Record
	s.api.Do(ctx, http.MethodGet, "/v1/patches/P1", nil, nil, &rec)
	if rec.Hosts["worker-0"] != swpatch.HostInstallFailed {
		t.Errorf("P1 hosts = %v; want worker-0 install-failed", rec.Hosts)
	}
}

// TestInServicePatch: a patch that needs no reboot installs on an
// unlocked host into its running slot; the host is then patch-current
// and the patch deployed, without a reboot.
func TestInServicePatch(t *testing.T) {
	keyFile, pub, priv := patchKeys(t)
	s := startPatchSite(t, keyFile)
	ctx := context.Background()
	plat := agenttest.NewPlatform()
	a := newAgentKey(t, s, s.joinToken(t), "", plat, monitor.Config{}, pub)
	a.start(t)
	var hosts rest.List[inventory.Host]
	deadline := time.Now().Add(10 * time.Second)
	for len(hosts.Items) == 0 && time.Now().Before(deadline) {
		s.api.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if len(hosts.Items) != 1 {
		t.Fatal("the agent's host never appeared")
	}
	id := hosts.Items[0].UUID
	pers, name := inventory.Worker, "worker-0"
	if err := s.api.Do(ctx, http.MethodPatch, "/v1/hosts/"+id, nil, subcloud.UpdateHostRequest{Personality: &pers, Hostname: &name}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/worker-0/action", nil, map[string]string{"action": "unlock"}, nil); err != nil {
		t.Fatal(err)
	}
	waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil && h.Administrative == inventory.Unlocked })
	spec := swpatch.BuildSpec{ID: "CONF1", Files: []swpatch.Content{{Path: "etc/tuning.conf", Data: []byte("x=1\n")}}}
	if _, err := upload(s, patchArchive(t, priv, spec)); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/CONF1/apply", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	var resp subcloud.InstallResponse
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/worker-0/install", nil, nil, &resp); err != nil {
		t.Fatalf("install of an in-service patch on an unlocked host = %v", err)
	}
	if !resp.Order.InService {
		t.Errorf("order = %+v; want in service", resp.Order)
	}
	h := waitHost(t, s, id, func(h inventory.Host) bool { return h.PatchCurrent })
	if got := plat.Installed(); !slices.Equal(got, []string{"in-service:CONF1"}) || plat.Reboots() != 0 {
		t.Errorf("platform: installs %v, reboots %d; want CONF1 in service, no reboot", got, plat.Reboots())
	}
	if h.Administrative != inventory.Unlocked {
		t.Errorf("host is %s; want still unlocked", h.Administrative)
	}
	var rec swpatch.Record
	deadline = time.Now().Add(10 * time.Second)
	for rec.State != swpatch.Deployed && time.Now().Before(deadline) {
		s.api.Do(ctx, http.MethodGet, "/v1/patches/CONF1", nil, nil, &rec)
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if rec.State != swpatch.Deployed {
		t.Errorf("CONF1 = %s; want deployed", rec.State)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/worker-0/install", nil, nil, nil); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("install on a patch-current host = %v; want invalid transition (nothing to install)", err)
	}
}
