package subcloud

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/version"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/patchdb"
)

// PatchStore keeps the site's patch records (swpatch/patchdb).
type PatchStore interface {
	Create(ctx context.Context, r swpatch.Record, manifest, sig []byte) (swpatch.Record, error)
	Patch(ctx context.Context, id string) (swpatch.Record, error)
	Patches(ctx context.Context) ([]swpatch.Record, error)
	Update(ctx context.Context, id string, fn func(*swpatch.Record) error) (swpatch.Record, error)
	Delete(ctx context.Context, id string, fn func(swpatch.Record) error) error
	// PutArchive and ReadArchive keep archives in the database, which a
	// controller pair replicates: the standby serves them after a swact.
	PutArchive(ctx context.Context, id string, r io.Reader) error
	ReadArchive(ctx context.Context, id string, w io.Writer) (int64, error)
}

// patches is the site's patch service: records in SQL, archives in
// DATA_DIR/patches/ID.patch, verified with the trusted key at upload.
type patches struct {
	store PatchStore
	dir   string
	key   ed25519.PublicKey // nil: no key configured, uploads refused
	lim   swpatch.Limits
	mu    sync.Mutex // one patch state change at a time
}

func (s *Subcloud) openPatches(ctx context.Context) error {
	store, err := patchdb.Open(ctx, s.shell.DB)
	if err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.Shell.DataDir, "patches")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// An upload cut off by a restart left a temporary file only.
	tmps, _ := filepath.Glob(filepath.Join(dir, "*.upload"))
	for _, t := range tmps {
		os.Remove(t)
	}
	p := &patches{store: store, dir: dir}
	if s.cfg.PatchPublicKey != "" {
		if p.key, err = swpatch.LoadPublicKey(s.cfg.PatchPublicKey); err != nil {
			return fmt.Errorf("subcloud: patch_public_key: %w", err)
		}
	}
	s.patches = p
	return nil
}

func (s *Subcloud) registerPatches(srv *rest.Server, a *auth.Service) {
	srv.Handle("listPatches", http.MethodGet, "/v1/patches", a.Require(auth.Reader), s.listPatches)
	srv.Handle("getPatch", http.MethodGet, "/v1/patches/{id}", a.Require(auth.Reader), s.getPatch)
	srv.HandleStream("uploadPatch", http.MethodPost, "/v1/patches", swpatch.DefaultMaxArchive, a.Require(auth.Admin), s.uploadPatch)
	srv.Handle("applyPatch", http.MethodPost, "/v1/patches/{id}/apply", a.Require(auth.Admin), s.patchAction(s.applyPatch))
	srv.Handle("removePatch", http.MethodPost, "/v1/patches/{id}/remove", a.Require(auth.Admin), s.patchAction(s.removePatch))
	srv.Handle("commitPatch", http.MethodPost, "/v1/patches/{id}/commit", a.Require(auth.Admin), s.patchAction(s.commitPatch))
	srv.Handle("deletePatch", http.MethodDelete, "/v1/patches/{id}", a.Require(auth.Admin), s.deletePatch)
	srv.Handle("installHost", http.MethodPost, "/v1/hosts/{id}/install", a.Require(auth.Operator), s.installHost)
	srv.HandleHTTP("agentPatchArchive", http.MethodGet, "/v1/agents/{uuid}/patches/{id}", s.agentGuard, http.HandlerFunc(s.agentPatchArchive))
}

func (s *Subcloud) listPatches(r *http.Request) (int, any, error) {
	list, err := s.patches.store.Patches(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[swpatch.Record]{Items: list}, nil
}

func (s *Subcloud) getPatch(r *http.Request) (int, any, error) {
	p, err := s.patches.store.Patch(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, p, nil
}

func (p *patches) archive(id string) string { return filepath.Join(p.dir, id+".patch") }

// deployedVersion is the newest of the site's own software version and
// the versions of the patches applied.
func (s *Subcloud) deployedVersion(ctx context.Context, except string) (string, string, error) {
	best, from := version.Get().Version, "the site's software"
	list, err := s.patches.store.Patches(ctx)
	if err != nil {
		return "", "", err
	}
	for _, r := range list {
		if r.ID != except && r.State.Applied() && swpatch.CompareVersions(r.Version, best) > 0 {
			best, from = r.Version, "patch "+r.ID
		}
	}
	return best, from, nil
}

// uploadPatch takes a patch archive: stored to a temporary file, verified
// (signature, manifest, payload checksum), scanned entry by entry under
// the caps, checked against the deployed version; only then recorded and
// renamed into place. A refused archive leaves nothing.
func (s *Subcloud) uploadPatch(r *http.Request) (int, any, error) {
	ctx := r.Context()
	p := s.patches
	if p.key == nil {
		return 0, nil, errs.Wrapf(errs.Unavailable, "this site trusts no patch signing key (patch_public_key)")
	}
	tmp, err := os.CreateTemp(p.dir, "*.upload")
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // renamed away when kept
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r.Body, swpatch.DefaultMaxArchive+1))
	if err != nil {
		return 0, nil, errs.Wrapf(errs.Invalid, "reading the upload: %v", err)
	}
	if n > swpatch.DefaultMaxArchive {
		return 0, nil, fmt.Errorf("%w: archive over %d bytes", swpatch.ErrTooLarge, swpatch.DefaultMaxArchive)
	}
	if err := tmp.Sync(); err != nil {
		return 0, nil, err
	}
	pt, err := swpatch.Verify(tmp, n, p.key, p.lim)
	if err != nil {
		s.log.Warn("patch upload refused", "err", err)
		return 0, nil, err
	}
	if err := pt.Scan(p.lim); err != nil {
		s.log.Warn("patch upload refused", "patch", pt.Manifest.ID, "err", err)
		return 0, nil, err
	}
	m := pt.Manifest
	p.mu.Lock()
	defer p.mu.Unlock()
	deployed, from, err := s.deployedVersion(ctx, "")
	if err != nil {
		return 0, nil, err
	}
	if swpatch.CompareVersions(m.Version, deployed) < 0 {
		s.log.Warn("patch upload refused: downgrade", "patch", m.ID, "version", m.Version, "deployed", deployed)
		return 0, nil, fmt.Errorf("%w: patch %s brings %s; %s is at %s", swpatch.ErrDowngrade, m.ID, m.Version, from, deployed)
	}
	rec := swpatch.Record{ID: m.ID, Version: m.Version, Requires: m.Requires, RebootRequired: m.RebootRequired,
		Description: m.Description, HasBinary: m.HasBinary(), Files: len(m.Files), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	out, err := p.store.Create(ctx, rec, pt.RawManifest, pt.Signature)
	if err != nil {
		return 0, nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, nil, err
	}
	if err := p.store.PutArchive(ctx, m.ID, tmp); err != nil {
		if derr := p.store.Delete(context.WithoutCancel(ctx), m.ID, nil); derr != nil {
			s.log.Error("patch stored without its archive", "patch", m.ID, "err", derr)
		}
		return 0, nil, err
	}
	if err := os.Rename(tmp.Name(), p.archive(m.ID)); err != nil {
		if derr := p.store.Delete(context.WithoutCancel(ctx), m.ID, nil); derr != nil {
			s.log.Error("patch stored without its archive", "patch", m.ID, "err", derr)
		}
		return 0, nil, err
	}
	s.log.Info("patch uploaded", "patch", m.ID, "version", m.Version, "size", n, "reboot_required", m.RebootRequired)
	return http.StatusCreated, out, nil
}

// patchAction runs a state change of one patch under the service's lock,
// then settles the patches against the hosts.
func (s *Subcloud) patchAction(fn func(ctx context.Context, id string) (swpatch.Record, error)) rest.Handler {
	return func(r *http.Request) (int, any, error) {
		ctx := r.Context()
		s.patches.mu.Lock()
		out, err := fn(ctx, rest.Var(r, "id"))
		s.patches.mu.Unlock()
		if err != nil {
			return 0, nil, err
		}
		s.settlePatches(ctx)
		if again, err := s.patches.store.Patch(ctx, out.ID); err == nil {
			out = again
		}
		return http.StatusOK, out, nil
	}
}

// applyPatch: available (or removing) → deploying, once every
// requirement is applied and the patch is not older than what is.
func (s *Subcloud) applyPatch(ctx context.Context, id string) (swpatch.Record, error) {
	rec, err := s.patches.store.Patch(ctx, id)
	if err != nil {
		return rec, err
	}
	for _, req := range rec.Requires {
		dep, err := s.patches.store.Patch(ctx, req)
		if errors.Is(err, swpatch.ErrPatchNotFound) || err == nil && !dep.State.Applied() {
			return rec, fmt.Errorf("%w: patch %s requires %s, which is not applied here: upload and apply %s first",
				swpatch.ErrMissingRequirement, id, req, req)
		}
		if err != nil {
			return rec, err
		}
	}
	deployed, from, err := s.deployedVersion(ctx, id)
	if err != nil {
		return rec, err
	}
	if swpatch.CompareVersions(rec.Version, deployed) < 0 {
		return rec, fmt.Errorf("%w: patch %s brings %s; %s is at %s", swpatch.ErrDowngrade, id, rec.Version, from, deployed)
	}
	return s.patches.store.Update(ctx, id, func(r *swpatch.Record) error { return r.To(swpatch.Deploying, time.Now()) })
}

// removePatch: deploying or deployed → removing, unless an applied patch
// requires it.
func (s *Subcloud) removePatch(ctx context.Context, id string) (swpatch.Record, error) {
	list, err := s.patches.store.Patches(ctx)
	if err != nil {
		return swpatch.Record{}, err
	}
	for _, o := range list {
		if o.State.Applied() && slices.Contains(o.Requires, id) {
			return swpatch.Record{}, fmt.Errorf("%w: patch %s requires %s; remove it first", errs.Conflict, o.ID, id)
		}
	}
	return s.patches.store.Update(ctx, id, func(r *swpatch.Record) error { return r.To(swpatch.Removing, time.Now()) })
}

// commitPatch: deployed → committed (no longer removable).
func (s *Subcloud) commitPatch(ctx context.Context, id string) (swpatch.Record, error) {
	return s.patches.store.Update(ctx, id, func(r *swpatch.Record) error { return r.To(swpatch.Committed, time.Now()) })
}

// deletePatch drops an available patch and its archive.
func (s *Subcloud) deletePatch(r *http.Request) (int, any, error) {
	id := rest.Var(r, "id")
	s.patches.mu.Lock()
	defer s.patches.mu.Unlock()
	err := s.patches.store.Delete(r.Context(), id, func(rec swpatch.Record) error {
		if rec.State != swpatch.Available {
			return fmt.Errorf("%w: patch %s is %s; only an available patch can be deleted (remove it first)",
				errs.InvalidTransition, id, rec.State)
		}
		return nil
	})
	if err != nil {
		return 0, nil, err
	}
	if err := os.Remove(s.patches.archive(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("patch archive not removed", "patch", id, "err", err)
	}
	return http.StatusNoContent, nil, nil
}

// InstallResponse answers POST /v1/hosts/{id}/install.
type InstallResponse struct {
	Host    string                 `json:"host"`
	Command string                 `json:"command"`
	Order   inventory.InstallOrder `json:"order"`
}

// installHost orders a host's agent to install the applied patches it
// lacks (requirements first) or to take off the ones being removed. A
// reboot-required install or any removal needs the host locked; the
// unlock then boots the new slot.
func (s *Subcloud) installHost(r *http.Request) (int, any, error) {
	resp, err := s.orderInstall(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, resp, nil
}

// orderInstall queues an install order for host id (see installHost).
func (s *Subcloud) orderInstall(ctx context.Context, id string) (InstallResponse, error) {
	h, err := s.Hosts.Host(ctx, id)
	if err != nil {
		return InstallResponse{}, err
	}
	if h.Software == nil {
		return InstallResponse{}, fmt.Errorf("%w: host %s has not reported its software yet", errs.InvalidTransition, h.Name)
	}
	s.patches.mu.Lock()
	list, err := s.patches.store.Patches(ctx)
	s.patches.mu.Unlock()
	if err != nil {
		return InstallResponse{}, err
	}
	order, reboot, err := installOrder(list, *h.Software)
	if err != nil {
		return InstallResponse{}, fmt.Errorf("host %s: %w", h.Name, err)
	}
	if reboot && h.Administrative != inventory.Locked {
		return InstallResponse{}, fmt.Errorf("%w: lock host %s first: its install needs a reboot (host unlock then boots the new software)",
			errs.InvalidTransition, h.Name)
	}
	c := s.queueCommandWith(h.UUID, "install", &order)
	s.log.Info("install ordered", "host", h.Name, "patches", order.Patches, "remove", order.Remove, "in_service", order.InService, "command", c.ID)
	return InstallResponse{Host: h.Name, Command: c.ID, Order: order}, nil
}

// installOrder is what a host must do to match the applied patches.
func installOrder(list []swpatch.Record, st swpatch.Status) (inventory.InstallOrder, bool, error) {
	order := inventory.InstallOrder{Patches: []string{}}
	byID := map[string]swpatch.Record{}
	for _, r := range list {
		byID[r.ID] = r
	}
	// The install rebuilds the inactive slot from the running one, so
	// everything the running slot lacks is installed again, including
	// what an earlier install staged there.
	running := st.Patches
	for _, r := range list {
		if r.State == swpatch.Removing && slices.Contains(running, r.ID) {
			order.Remove = append(order.Remove, r.ID)
		}
	}
	// Requirements first: a depth-first walk over the applied patches.
	seen := map[string]bool{}
	var visit func(id string) error
	visit = func(id string) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		r, ok := byID[id]
		if !ok || !r.State.Applied() {
			return fmt.Errorf("%w: %s is not applied", swpatch.ErrMissingRequirement, id)
		}
		for _, dep := range r.Requires {
			if err := visit(dep); err != nil {
				return err
			}
		}
		if !slices.Contains(running, id) {
			order.Patches = append(order.Patches, id)
		}
		return nil
	}
	for _, r := range list {
		if r.State.Applied() {
			if err := visit(r.ID); err != nil {
				return order, false, err
			}
		}
	}
	switch {
	case len(order.Patches) == 0 && len(order.Remove) == 0:
		return order, false, fmt.Errorf("%w: nothing to install: the host is patch-current", errs.InvalidTransition)
	case len(order.Patches) > 0 && len(order.Remove) > 0:
		return order, false, fmt.Errorf("%w: patches to remove (%s) and to install (%s): remove first, install after",
			errs.InvalidTransition, strings.Join(order.Remove, ", "), strings.Join(order.Patches, ", "))
	case len(order.Remove) > 0:
		return order, true, nil
	}
	order.InService = true
	for _, id := range order.Patches {
		if byID[id].RebootRequired {
			order.InService = false
		}
	}
	if st.NextSlot != "" {
		order.InService = false // a slot is staged: rebuild it with this one too
	}
	return order, !order.InService, nil
}

// materialize writes a patch's archive from the database into the data
// directory, checked against the SHA-256 recorded at upload.
func (p *patches) materialize(ctx context.Context, id string) error {
	rec, err := p.store.Patch(ctx, id)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(p.dir, "*.upload")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // renamed away when kept
	}()
	h := sha256.New()
	if _, err := p.store.ReadArchive(ctx, id, io.MultiWriter(tmp, h)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != rec.SHA256 {
		return fmt.Errorf("patch %s: the stored archive's SHA-256 is %s; the upload's was %s", id, got, rec.SHA256)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p.archive(id))
}

// agentPatchArchive serves a patch's archive to a host's agent.
func (s *Subcloud) agentPatchArchive(w http.ResponseWriter, r *http.Request) {
	id := rest.Var(r, "id")
	if !swpatch.ValidID(id) {
		http.Error(w, "bad patch id", http.StatusBadRequest)
		return
	}
	f, err := os.Open(s.patches.archive(id))
	if errors.Is(err, os.ErrNotExist) {
		// Uploaded to the other controller of the pair: from the database.
		if err = s.patches.materialize(r.Context(), id); err == nil {
			f, err = os.Open(s.patches.archive(id))
		} else {
			s.log.Warn("patch archive not in the database either", "patch", id, "err", err)
		}
	}
	if err != nil {
		http.Error(w, "no such patch", http.StatusNotFound)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, id+".patch", fi.ModTime(), f)
}

// hostSoftware is what the patch states need of a host.
func hostSoftware(h inventory.Host) swpatch.HostSoftware {
	hs := swpatch.HostSoftware{Name: h.Name, Patches: []string{}}
	if h.Software == nil {
		return hs
	}
	hs.Patches, hs.Staged, hs.Failed = h.Software.Patches, h.Software.NextPatches, h.Software.Failed
	if rb := h.Software.Rollback; rb != nil && hs.Failed == "" {
		for _, id := range rb.Patches {
			if !slices.Contains(hs.Patches, id) {
				hs.Failed = id // the newest patch the rolled-back slot had that this one lacks
			}
		}
	}
	return hs
}

// patchCurrent says whether a host runs every applied patch and none
// being removed.
func patchCurrent(list []swpatch.Record, h inventory.Host) bool {
	var running []string
	if h.Software != nil {
		running = h.Software.Patches
	}
	for _, r := range list {
		has := slices.Contains(running, r.ID)
		if r.State.Applied() && !has || r.State == swpatch.Removing && has {
			return false
		}
	}
	return true
}

// settlePatches brings the patch records and the hosts' patch_current up
// to date with what the hosts report, and the hosts' software alarms
// (900.002 install failed, 900.003 rolled back) with their reports.
// Failures are logged: the next report settles again.
func (s *Subcloud) settlePatches(ctx context.Context) {
	if s.patches == nil {
		return
	}
	s.patches.mu.Lock()
	defer s.patches.mu.Unlock()
	hosts, _, err := s.Hosts.Hosts(ctx, rest.ListOptions{Limit: rest.MaxLimit})
	if err != nil {
		s.log.Warn("settling patches: hosts", "err", err)
		return
	}
	list, err := s.patches.store.Patches(ctx)
	if err != nil {
		s.log.Warn("settling patches", "err", err)
		return
	}
	var sw []swpatch.HostSoftware
	for _, h := range hosts {
		if h.Personality == inventory.PersonalityNone {
			continue
		}
		sw = append(sw, hostSoftware(h))
		cur := patchCurrent(list, h)
		if cur != h.PatchCurrent {
			if _, err := (hostUpdater{s}).UpdateHost(ctx, h.UUID, func(h *inventory.Host) error {
				h.PatchCurrent = cur
				return nil
			}); err != nil {
				s.log.Warn("settling patches: host", "host", h.Name, "err", err)
			}
		}
		s.softwareAlarms(ctx, h, list)
	}
	now := time.Now()
	for _, rec := range list {
		if rec.State == swpatch.Available && len(rec.Hosts) == 0 {
			continue
		}
		probe := rec
		if !swpatch.Settle(&probe, sw, now) {
			continue
		}
		if _, err := s.patches.store.Update(ctx, rec.ID, func(r *swpatch.Record) error {
			swpatch.Settle(r, sw, now)
			return nil
		}); err != nil {
			s.log.Warn("settling patches", "patch", rec.ID, "err", err)
			continue
		}
		if probe.State != rec.State {
			s.log.Info("patch state changed", "patch", rec.ID, "from", rec.State, "to", probe.State)
		}
	}
}

// softwareAlarms raises or clears a host's 900.002 (an install failed)
// and 900.003 (its new slot was rolled back): each stands while the patch
// that failed is still applied, until an install succeeds or the patch is
// removed.
func (s *Subcloud) softwareAlarms(ctx context.Context, h inventory.Host, list []swpatch.Record) {
	entity := "host=" + h.Name
	applied := map[string]bool{}
	for _, r := range list {
		applied[r.ID] = r.State.Applied()
	}
	st := h.Software
	rolledBack := false
	if st != nil && st.Rollback != nil {
		for _, id := range st.Rollback.Patches {
			if applied[id] && !slices.Contains(st.Patches, id) {
				rolledBack = true
			}
		}
	}
	if rolledBack {
		s.shell.Alarms.Raise(ctx, "900.003", entity, nil)
	} else {
		s.shell.Alarms.Clear(ctx, "900.003", entity)
	}
	if st != nil && st.Failed != "" && applied[st.Failed] {
		s.shell.Alarms.Raise(ctx, "900.002", entity, nil)
	} else {
		s.shell.Alarms.Clear(ctx, "900.002", entity)
	}
}
