package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch"
)

// software is the host's software status for a report, or nil when the
// platform has none. An install that failed before the platform saw it
// (a download or a verification) is reported as the failure.
func (a *Agent) software(ctx context.Context) *swpatch.Status {
	st, err := a.cfg.Platform.Software(ctx)
	if errors.Is(err, ErrNoSoftwareSlots) {
		return nil
	}
	if err != nil {
		a.log.Warn("reading the host's software slots failed", "err", err)
		return nil
	}
	if a.installErr != nil && st.Failed == "" {
		st.Failed, st.FailedReason = a.installErr.Failed, a.installErr.FailedReason
	}
	return &st
}

// install carries out the site's install order: each patch archive is
// fetched from the site to the state directory (0600), verified with the
// trusted key before the platform unpacks anything, and handed to the
// platform: staged for the next boot, installed in service, or the slot
// without the removed patches marked.
func (a *Agent) install(ctx context.Context, cmdID string, order inventory.InstallOrder) {
	log := a.log.With("command", cmdID, "patches", order.Patches, "remove", order.Remove)
	a.forceFull = true // whatever happens, the site hears it at once
	a.sentSW = nil
	a.installErr = nil
	fail := func(id string, err error) {
		log.Error("install failed", "patch", id, "err", err)
		a.installErr = &swpatch.Status{Failed: id, FailedReason: err.Error()}
	}
	if len(order.Remove) > 0 {
		if err := a.cfg.Platform.StageRemoval(ctx, order.Remove); err != nil {
			fail(order.Remove[0], err)
			return
		}
		log.Info("removal staged: the host boots its software without the patches at its next boot")
		return
	}
	if a.cfg.PatchPublicKey == nil {
		fail(first(order.Patches), errors.New("this agent trusts no patch signing key (patch_public_key)"))
		return
	}
	start := time.Now()
	var pts []*swpatch.Patch
	defer func() {
		for _, id := range order.Patches {
			os.Remove(filepath.Join(a.cfg.StateDir, "patches", id+".patch"))
		}
	}()
	for _, id := range order.Patches {
		path, err := a.fetchPatch(ctx, id)
		if err != nil {
			fail(id, err)
			return
		}
		p, closeFn, err := swpatch.VerifyFile(path, a.cfg.PatchPublicKey, swpatch.Limits{})
		if err != nil {
			fail(id, err)
			return
		}
		defer closeFn()
		if p.Manifest.ID != id {
			fail(id, fmt.Errorf("the site sent patch %s for %s", p.Manifest.ID, id))
			return
		}
		pts = append(pts, p)
	}
	if order.InService {
		for _, p := range pts {
			if err := a.cfg.Platform.InstallInService(ctx, p); err != nil {
				fail(p.Manifest.ID, err)
				return
			}
		}
		log.Info("installed in service", "took", time.Since(start).Round(time.Millisecond))
		return
	}
	if err := a.cfg.Platform.StageSoftware(ctx, pts); err != nil {
		fail(first(order.Patches), err)
		return
	}
	log.Info("installed for the next boot", "took", time.Since(start).Round(time.Millisecond))
}

func first(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

// fetchPatch downloads a patch archive from the site into the state
// directory.
func (a *Agent) fetchPatch(ctx context.Context, id string) (string, error) {
	if !swpatch.ValidID(id) {
		return "", fmt.Errorf("bad patch id %q", id)
	}
	dir := filepath.Join(a.cfg.StateDir, "patches")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(a.cfg.SiteURL, "/")+"/v1/agents/"+a.machineID+"/patches/"+id, nil)
	if err != nil {
		return "", err
	}
	// A fresh connection, bounded until the answer starts: a pooled one
	// may be dead since the site's active controller changed (its floating
	// address moved, the old connection never answers). The body has no
	// overall timeout: the context bounds it.
	tr, ok := a.client.Transport.(*http.Transport)
	if !ok {
		return "", fmt.Errorf("fetching patch %s: the agent's transport is %T", id, a.client.Transport)
	}
	tr = tr.Clone()
	tr.ResponseHeaderTimeout = 30 * time.Second
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetching patch %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetching patch %s: HTTP %d", id, resp.StatusCode)
	}
	path := filepath.Join(dir, id+".patch")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return "", err
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, swpatch.DefaultMaxArchive+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("fetching patch %s: %w", id, err)
	}
	if n > swpatch.DefaultMaxArchive {
		return "", fmt.Errorf("patch %s: %w", id, swpatch.ErrTooLarge)
	}
	return path, nil
}
