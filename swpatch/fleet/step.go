package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// stepRun is one patch-subcloud step under way: the site's progress as
// last stored, and what this run did.
type stepRun struct {
	e        *Executor
	i, j     int
	site     string
	patches  []string
	opts     strategy.Options
	progress strategy.SiteProgress
	applied  bool // this run applied (or resumed) the site strategy
	aborted  bool // this run asked the site strategy to abort
	lastErr  string
	abortAt  time.Time
}

// errAborting: the fleet strategy is aborting; the step stops.
var errAborting = errors.New("fleet strategy aborting")

// runStep drives step j of stage i to its end (applied, failed or
// aborted) and stores it; with ctx ended it stays applying, and the next
// leader runs it again from what the site shows.
func (e *Executor) runStep(ctx context.Context, i, j int) {
	s, err := e.update(ctx, func(s *strategy.Strategy) error {
		st := s.Stages[i].Steps[j]
		switch {
		case st.State == strategy.StepApplying:
			return nil
		case s.State != strategy.Applying:
			return errAborting
		}
		if st.Site == nil {
			s.Stages[i].Steps[j].Site = &strategy.SiteProgress{}
		}
		s.Stages[i].Steps[j].Site.Phase, s.Stages[i].Steps[j].Site.UpdatedAt = strategy.PhaseSyncPatches, e.cfg.Now()
		return s.StepTo(i, j, strategy.StepApplying, "", e.cfg.Now())
	})
	if err != nil {
		if !errors.Is(err, errAborting) && ctx.Err() == nil {
			e.cfg.Logger.Error("fleet step not started", "stage", i, "step", j, "err", err)
		}
		return
	}
	step := s.Stages[i].Steps[j]
	r := &stepRun{e: e, i: i, j: j, site: step.Target, patches: s.Patches, opts: s.Options.SiteOnly()}
	if step.Site != nil {
		r.progress = *step.Site
	}
	e.cfg.Logger.Info("fleet step", "site", r.site, "stage", s.Stages[i].Name)
	to, reason := r.drive(ctx)
	if ctx.Err() != nil {
		return
	}
	r.progress.Phase = strategy.PhaseDone
	r.progress.OfflineSince = nil
	r.progress.UpdatedAt = e.cfg.Now()
	if _, err := e.update(context.WithoutCancel(ctx), func(s *strategy.Strategy) error {
		p := r.progress
		s.Stages[i].Steps[j].Site = &p
		return s.StepTo(i, j, to, reason, e.cfg.Now())
	}); err != nil {
		e.cfg.Logger.Error("fleet step not stored", "site", r.site, "err", err)
		return
	}
	e.cfg.Logger.Info("fleet step ended", "site", r.site, "state", to, "reason", reason)
}

// store records the step's progress when it changed (written with the
// executor's next write, at most a poll later) and returns the fleet
// strategy's state.
func (r *stepRun) store(ctx context.Context, p strategy.SiteProgress) (strategy.State, error) {
	same := p.Phase == r.progress.Phase && p.State == r.progress.State && p.StepsDone == r.progress.StepsDone &&
		p.StepsTotal == r.progress.StepsTotal && p.Action == r.progress.Action && slices.Equal(p.Hosts, r.progress.Hosts) &&
		p.Reason == r.progress.Reason && slices.Equal(p.PatchesApplied, r.progress.PatchesApplied) &&
		(p.OfflineSince == nil) == (r.progress.OfflineSince == nil)
	if !same {
		p.UpdatedAt = r.e.cfg.Now()
		r.progress = p
		r.e.progress(r.i, r.j, p)
	}
	return r.e.fleetState(ctx)
}

// permanent reports whether a site's answer will not change by asking
// again (a refused upload, a conflicting strategy, a bad option).
func permanent(err error) bool {
	for _, k := range []error{errs.Invalid, errs.Conflict, errs.InvalidTransition, errs.Forbidden, errs.TooLarge, errs.Unauthenticated} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// drive runs the step's phases, each checked against what the site shows
// (so a resumed step adopts what an earlier run did), until its end.
func (r *stepRun) drive(ctx context.Context) (strategy.StepState, string) {
	e := r.e
	t := time.NewTicker(e.cfg.Poll)
	defer t.Stop()
	for {
		to, reason, done := r.attempt(ctx)
		if done {
			return to, reason
		}
		select {
		case <-ctx.Done():
			return strategy.StepApplying, ""
		case <-t.C:
		}
	}
}

// attempt makes one pass: it moves the step as far as the site allows now.
func (r *stepRun) attempt(ctx context.Context) (strategy.StepState, string, bool) {
	e := r.e
	p := r.progress
	fleetState, err := r.store(ctx, p)
	if err != nil {
		return "", "", ctx.Err() != nil
	}
	aborting := fleetState == strategy.Aborting
	// An unreachable site: wait, up to OfflineWait.
	if !e.cfg.Sites.Reachable(r.site) || r.lastErr != "" {
		now := e.cfg.Now()
		if p.OfflineSince == nil {
			p.OfflineSince = &now
			r.store(ctx, p)
		}
		why := "its link is down"
		if r.lastErr != "" && e.cfg.Sites.Reachable(r.site) {
			why = r.lastErr
		}
		if now.Sub(*p.OfflineSince) > e.cfg.OfflineWait {
			if aborting && p.State == "" {
				return strategy.StepAborted, "aborted; site " + r.site + " unreachable: " + why, true
			}
			return strategy.StepFailed, fmt.Sprintf("site %s unreachable for %s: %s", r.site, e.cfg.OfflineWait, why), true
		}
		if !e.cfg.Sites.Reachable(r.site) {
			return "", "", false
		}
	}
	r.lastErr = ""
	to, reason, done, err := r.advance(ctx, aborting)
	if err != nil {
		if ctx.Err() != nil {
			return "", "", true
		}
		if permanent(err) {
			return strategy.StepFailed, err.Error(), true
		}
		r.lastErr = err.Error() // transient: retried, bounded like an offline site
		return "", "", false
	}
	if r.progress.OfflineSince != nil {
		p := r.progress
		p.OfflineSince = nil
		r.store(ctx, p)
	}
	return to, reason, done
}

// advance is one pass over the phases with the site reachable.
func (r *stepRun) advance(ctx context.Context, aborting bool) (strategy.StepState, string, bool, error) {
	e, sites, site := r.e, r.e.cfg.Sites, r.site
	p := r.progress
	p.OfflineSince = nil
	cur, err := sites.Strategy(ctx, site)
	exists := err == nil
	if err != nil && !errors.Is(err, errs.NotFound) {
		return "", "", false, err
	}
	// Ours: a site strategy for these patches that this step created, or
	// an earlier run of it (adopted, not recreated). One aborted before
	// this run applied it is replaced.
	ours := exists && r.covers(cur) && !(cur.State == strategy.Aborted && !r.applied)
	if aborting && !(ours && (cur.State == strategy.Applying || cur.State == strategy.Aborting || cur.State == strategy.Aborted)) {
		// No site strategy of ours is running: nothing to abort there.
		// Patches this step applied and no host installed go back.
		if ours && cur.State == strategy.Applied {
			return strategy.StepApplied, "the site finished before the abort reached it", true, nil
		}
		if ours && cur.State == strategy.ReadyToApply {
			if err := sites.DeleteStrategy(ctx, site); err != nil && !errors.Is(err, errs.NotFound) {
				return "", "", false, err
			}
		}
		var left []string
		for _, id := range p.PatchesApplied {
			if err := sites.RemovePatch(ctx, site, id); err != nil {
				left = append(left, id+": "+err.Error())
			}
		}
		reason := "aborted before the site strategy started"
		if len(p.PatchesApplied) > 0 && len(left) == 0 {
			reason += "; applied patches removed again (" + joinNames(p.PatchesApplied) + ")"
		} else if len(left) > 0 {
			reason += "; patches left applied: " + joinNames(left)
		}
		if exists {
			pr := cur.Progress()
			pr.Phase, pr.PatchesApplied = p.Phase, p.PatchesApplied
			r.progress = pr
		}
		return strategy.StepAborted, reason, true, nil
	}
	if !ours {
		// Patches at the site: synced, then applied.
		p.Phase = strategy.PhaseSyncPatches
		if _, err := r.store(ctx, p); err != nil {
			return "", "", false, err
		}
		allDeployed := true
		for _, id := range r.patches {
			st, err := r.patchState(ctx, id)
			if errors.Is(err, errs.NotFound) {
				if err := sites.SyncPatch(ctx, site, id); err != nil {
					return "", "", false, fmt.Errorf("syncing patch %s to %s: %w", id, site, err)
				}
				st = swpatch.Available
			} else if err != nil {
				return "", "", false, err
			}
			if st == swpatch.Available || st == swpatch.Removing {
				p.Phase = strategy.PhaseApplyPatch
				if err := sites.ApplyPatch(ctx, site, id); err != nil {
					return "", "", false, fmt.Errorf("applying patch %s at %s: %w", id, site, err)
				}
				if !slices.Contains(p.PatchesApplied, id) {
					p.PatchesApplied = append(p.PatchesApplied, id)
				}
				// A site whose hosts all run it has it deployed at once.
				if st, err = r.patchState(ctx, id); err != nil {
					return "", "", false, err
				}
			}
			if st != swpatch.Deployed && st != swpatch.Committed {
				allDeployed = false
			}
		}
		p.Phase = strategy.PhaseApplyPatch
		if _, err := r.store(ctx, p); err != nil {
			return "", "", false, err
		}
		if allDeployed {
			r.progress.State = ""
			return strategy.StepApplied, "every host already runs the patches", true, nil
		}
		// The site strategy: one of its own (for other patches) stops
		// us; an ended one is replaced.
		if exists {
			switch cur.State {
			case strategy.Applied, strategy.Aborted:
				if err := sites.DeleteStrategy(ctx, site); err != nil && !errors.Is(err, errs.NotFound) {
					return "", "", false, err
				}
			default:
				return "", "", false, fmt.Errorf("%w: site %s has a %s patch strategy of its own (patches %s): finish or delete it there",
					errs.Conflict, site, cur.State, joinNames(cur.Patches))
			}
		}
		p.Phase = strategy.PhaseCreate
		if _, err := r.store(ctx, p); err != nil {
			return "", "", false, err
		}
		created, err := sites.CreateStrategy(ctx, site, r.opts)
		if errors.Is(err, errs.Conflict) && r.createdMeanwhile(ctx) {
			return "", "", false, nil // look again at the next pass
		}
		if errors.Is(err, errs.Conflict) && r.deployed(ctx) {
			return strategy.StepApplied, "every host already runs the patches", true, nil
		}
		if err != nil {
			return "", "", false, fmt.Errorf("creating the site strategy at %s: %w", site, err)
		}
		cur = created
	}
	// Ours: apply it, follow it, abort it.
	pr := cur.Progress()
	pr.PatchesApplied = p.PatchesApplied
	pr.Phase = strategy.PhaseApply
	switch cur.State {
	case strategy.ReadyToApply:
		if _, err := sites.StrategyAction(ctx, site, "apply"); err != nil {
			return "", "", false, fmt.Errorf("applying the site strategy at %s: %w", site, err)
		}
		r.applied = true
	case strategy.ApplyFailed:
		if !r.applied {
			// Adopted failed (an earlier run, or a resume): once again.
			if _, err := sites.StrategyAction(ctx, site, "apply"); err != nil {
				return "", "", false, fmt.Errorf("resuming the site strategy at %s: %w", site, err)
			}
			r.applied = true
			break
		}
		r.progress = pr
		return strategy.StepFailed, fmt.Sprintf("site strategy apply-failed: %s", cur.Reason), true, nil
	case strategy.Applying:
		r.applied = true
		if aborting && !r.aborted {
			pr.Phase = strategy.PhaseAbort
			r.abortAt = e.cfg.Now()
			if _, err := sites.StrategyAction(ctx, site, "abort"); err != nil && !errors.Is(err, errs.InvalidTransition) {
				return "", "", false, fmt.Errorf("aborting the site strategy at %s: %w", site, err)
			}
			r.aborted = true
		}
	case strategy.Aborting:
		pr.Phase = strategy.PhaseAbort
		if !r.abortAt.IsZero() && e.cfg.Now().Sub(r.abortAt) > e.cfg.AbortWait {
			r.progress = pr
			return strategy.StepFailed, fmt.Sprintf("the site strategy at %s did not finish aborting within %s", site, e.cfg.AbortWait), true, nil
		}
	case strategy.Applied:
		r.progress = pr
		return strategy.StepApplied, "", true, nil
	case strategy.Aborted:
		r.progress = pr
		if aborting || r.aborted {
			return strategy.StepAborted, "site strategy aborted: " + cur.Reason, true, nil
		}
		return strategy.StepFailed, "the site strategy was aborted at the site: " + cur.Reason, true, nil
	}
	if _, err := r.store(ctx, pr); err != nil {
		return "", "", false, err
	}
	return "", "", false, nil
}

// covers reports whether a site strategy installs this step's patches
// (one the step, or an earlier run of it, created).
func (r *stepRun) covers(s strategy.Strategy) bool {
	for _, id := range r.patches {
		if !slices.Contains(s.Patches, id) {
			return false
		}
	}
	return true
}

// createdMeanwhile: a create refused as a conflict because a strategy
// appeared since the pass read the site.
func (r *stepRun) createdMeanwhile(ctx context.Context) bool {
	_, err := r.e.cfg.Sites.Strategy(ctx, r.site)
	return err == nil
}

func (r *stepRun) patchState(ctx context.Context, id string) (swpatch.State, error) {
	rec, err := r.e.cfg.Sites.Patch(ctx, r.site, id)
	return rec.State, err
}

// deployed: every patch of the step is deployed at the site, or applied
// with every host current (a create refused because no host needs them).
func (r *stepRun) deployed(ctx context.Context) bool {
	for _, id := range r.patches {
		rec, err := r.e.cfg.Sites.Patch(ctx, r.site, id)
		if err != nil || !rec.State.Applied() {
			return false
		}
		for _, hs := range rec.Hosts {
			if hs != swpatch.HostCurrent {
				return false
			}
		}
	}
	return true
}
