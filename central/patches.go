package central

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sync"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/syncproto"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/patchdb"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// centralPatches is central's patch service: operators upload signed
// patches here once; central verifies them with its trusted key, keeps
// them (record and archive) in its database, and syncs them to the
// managed sites (resource "patches") ahead of a fleet strategy. Central
// never applies a patch itself: its records stay available.
type centralPatches struct {
	store *patchdb.Store
	syncs *SyncStore
	key   ed25519.PublicKey // nil: no key configured, uploads refused
	tmp   string            // where uploads are spooled before verification
	mu    sync.Mutex        // one upload or delete at a time
}

// patchDoc is a patch's sync record: what a site needs to check it holds
// the same archive.
type patchDoc struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	SHA256  string `json:"sha256"`
	Size    int64  `json:"size"`
}

func openPatches(ctx context.Context, c *Central, syncs *SyncStore, keyFile string) (*centralPatches, error) {
	store, err := patchdb.Open(ctx, c.shell.DB)
	if err != nil {
		return nil, err
	}
	p := &centralPatches{store: store, syncs: syncs, tmp: c.cfg.Shell.DataDir}
	if keyFile != "" {
		if p.key, err = swpatch.LoadPublicKey(keyFile); err != nil {
			return nil, fmt.Errorf("central: patch_public_key: %w", err)
		}
	}
	return p, nil
}

func (c *Central) registerPatches(srv *rest.Server, a *auth.Service) {
	srv.Handle("listPatches", http.MethodGet, "/v1/patches", a.Require(auth.Reader), c.listPatches)
	srv.Handle("getPatch", http.MethodGet, "/v1/patches/{id}", a.Require(auth.Reader), c.getPatch)
	srv.HandleStream("uploadPatch", http.MethodPost, "/v1/patches", swpatch.DefaultMaxArchive, a.Require(auth.Admin), c.uploadPatch)
	srv.Handle("deletePatch", http.MethodDelete, "/v1/patches/{id}", a.Require(auth.Admin), c.deletePatch)
}

func (c *Central) listPatches(r *http.Request) (int, any, error) {
	list, err := c.patches.store.Patches(r.Context())
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, rest.List[swpatch.Record]{Items: list}, nil
}

func (c *Central) getPatch(r *http.Request) (int, any, error) {
	p, err := c.patches.store.Patch(r.Context(), rest.Var(r, "id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, p, nil
}

// uploadPatch takes a signed patch archive as a site does: spooled to a
// temporary file, verified (signature, manifest, payload checksum) and
// scanned under the caps; only then recorded, with its archive, and made
// a sync record. A refused archive leaves nothing.
func (c *Central) uploadPatch(r *http.Request) (int, any, error) {
	ctx := r.Context()
	p := c.patches
	if p.key == nil {
		return 0, nil, errs.Wrapf(errs.Unavailable, "central trusts no patch signing key (patch_public_key)")
	}
	tmp, err := os.CreateTemp(p.tmp, "patch-*.upload")
	if err != nil {
		return 0, nil, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r.Body, swpatch.DefaultMaxArchive+1))
	if err != nil {
		return 0, nil, errs.Wrapf(errs.Invalid, "reading the upload: %v", err)
	}
	if n > swpatch.DefaultMaxArchive {
		return 0, nil, fmt.Errorf("%w: archive over %d bytes", swpatch.ErrTooLarge, swpatch.DefaultMaxArchive)
	}
	pt, err := swpatch.Verify(tmp, n, p.key, swpatch.Limits{})
	if err != nil {
		c.log.Warn("patch upload refused", "err", err)
		return 0, nil, err
	}
	if err := pt.Scan(swpatch.Limits{}); err != nil {
		c.log.Warn("patch upload refused", "patch", pt.Manifest.ID, "err", err)
		return 0, nil, err
	}
	m := pt.Manifest
	p.mu.Lock()
	defer p.mu.Unlock()
	rec := swpatch.Record{ID: m.ID, Version: m.Version, Requires: m.Requires, RebootRequired: m.RebootRequired,
		Description: m.Description, HasBinary: m.HasBinary(), Files: len(m.Files), Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}
	out, err := p.store.Create(ctx, rec, pt.RawManifest, pt.Signature)
	if err != nil {
		return 0, nil, err
	}
	undo := func(err error) (int, any, error) {
		if derr := p.store.Delete(context.WithoutCancel(ctx), m.ID, nil); derr != nil {
			c.log.Error("patch kept without its archive", "patch", m.ID, "err", derr)
		}
		return 0, nil, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return undo(err)
	}
	if err := p.store.PutArchive(ctx, m.ID, tmp); err != nil {
		return undo(err)
	}
	doc, _ := json.Marshal(patchDoc{ID: m.ID, Version: m.Version, SHA256: rec.SHA256, Size: n})
	if _, err := p.syncs.Put(ctx, syncproto.Patches, m.ID, doc); err != nil {
		return undo(err)
	}
	c.sync.changed()
	c.log.Info("patch uploaded", "patch", m.ID, "version", m.Version, "size", n)
	return http.StatusCreated, out, nil
}

// errPatchInUse: a fleet strategy that is not over names the patch.
var errPatchInUse = errs.New(errs.Conflict, "patch in use by the fleet strategy")

// deletePatch drops a patch central holds (refused while the fleet
// strategy installs it); sites that hold it only as available drop it
// too, through the sync; a site that applied it keeps it.
func (c *Central) deletePatch(r *http.Request) (int, any, error) {
	ctx := r.Context()
	id := rest.Var(r, "id")
	if s, err := c.fleetStore.Strategy(ctx, strategy.Patch); err == nil && slices.Contains(s.Patches, id) &&
		(s.State == strategy.Applying || s.State == strategy.Aborting) {
		return 0, nil, fmt.Errorf("%w: the fleet strategy is %s with patch %s; abort it first", errPatchInUse, s.State, id)
	} else if err != nil && !errors.Is(err, strategy.ErrNotFound) {
		return 0, nil, err
	}
	c.patches.mu.Lock()
	defer c.patches.mu.Unlock()
	if err := c.patches.store.Delete(ctx, id, nil); err != nil {
		return 0, nil, err
	}
	if _, err := c.patches.syncs.Delete(ctx, syncproto.Patches, id); err != nil {
		c.log.Error("patch deleted but its sync tombstone not written", "patch", id, "err", err)
	}
	c.sync.changed()
	return http.StatusNoContent, nil, nil
}

// patchSite is what the patch syncer needs of a site: its patch API.
type patchSite interface {
	// SitePatches lists the site's patches.
	SitePatches(ctx context.Context) ([]swpatch.Record, error)
	// UploadPatch sends central's archive of patch id to the site.
	UploadPatch(ctx context.Context, id string) error
	// DeleteSitePatch deletes an available patch at the site.
	DeleteSitePatch(ctx context.Context, id string) error
}

// patchSyncer keeps central's patches at the managed sites: uploaded
// once (the site verifies the archive with its own key), deleted when
// central deletes them, unless the site applied them.
type patchSyncer struct{}

func (patchSyncer) resource() string { return syncproto.Patches }

func decodePatchDoc(rec SyncRecord) (patchDoc, error) {
	var d patchDoc
	if err := json.Unmarshal(rec.Doc, &d); err != nil {
		return d, fmt.Errorf("patch record %s: %w", rec.Key, err)
	}
	return d, nil
}

func (patchSyncer) apply(ctx context.Context, s syncSite, rec SyncRecord) error {
	ps, ok := s.(patchSite)
	if !ok {
		return errs.Wrapf(errs.Unavailable, "the site's patch API is not reachable")
	}
	have, err := ps.SitePatches(ctx)
	if err != nil {
		return err
	}
	var held *swpatch.Record
	for k := range have {
		if have[k].ID == rec.Key {
			held = &have[k]
		}
	}
	if rec.Deleted {
		if held == nil || held.State != swpatch.Available {
			return nil // gone, or applied there: the site keeps what it runs
		}
		if err := ps.DeleteSitePatch(ctx, rec.Key); err != nil && !errors.Is(err, errs.NotFound) {
			return err
		}
		return nil
	}
	want, err := decodePatchDoc(rec)
	if err != nil {
		return err
	}
	if held != nil {
		if held.SHA256 != want.SHA256 {
			return syncRefusal{fmt.Sprintf("the site holds another archive of patch %s", rec.Key)}
		}
		return nil
	}
	// An upload that meets the same archive at the site (a fleet step
	// sent it meanwhile) succeeds (Central.sendPatch).
	err = ps.UploadPatch(ctx, rec.Key)
	switch {
	case errors.Is(err, errs.Invalid), errors.Is(err, errs.Conflict), errors.Is(err, errs.TooLarge):
		return syncRefusal{fmt.Sprintf("the site refused patch %s: %v", rec.Key, err)}
	}
	return err
}

func (patchSyncer) audit(ctx context.Context, s syncSite, desired []SyncRecord) ([]SyncRecord, error) {
	if len(desired) == 0 {
		return nil, nil // nothing of central's to hold: the site is not asked
	}
	ps, ok := s.(patchSite)
	if !ok {
		return nil, errs.Wrapf(errs.Unavailable, "the site's patch API is not reachable")
	}
	have, err := ps.SitePatches(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]swpatch.Record, len(have))
	for _, p := range have {
		byID[p.ID] = p
	}
	var repairs []SyncRecord
	for _, rec := range desired {
		p, held := byID[rec.Key]
		if rec.Deleted {
			if held && p.State == swpatch.Available {
				repairs = append(repairs, rec)
			}
			continue
		}
		want, err := decodePatchDoc(rec)
		if err != nil {
			return nil, err
		}
		if !held || p.SHA256 != want.SHA256 {
			repairs = append(repairs, rec)
		}
	}
	return repairs, nil
}
