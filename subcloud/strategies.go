package subcloud

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategydb"
)

// openStrategies opens the strategy store and builds the executor; Run
// runs it (on the active controller only: a pair runs this site
// controller on its active member).
func (s *Subcloud) openStrategies(ctx context.Context) error {
	store, err := strategydb.Open(ctx, s.shell.DB)
	if err != nil {
		return err
	}
	s.strategyDB = store
	s.strategies = strategy.New(strategy.Config{Site: s.cfg.Site, Store: store, Target: strategySite{s},
		Logger: s.log.With("component", "strategy"), Timeouts: s.cfg.StrategyTimeouts})
	return nil
}

func (s *Subcloud) registerStrategies(srv *rest.Server, a *auth.Service) {
	srv.Handle("getStrategy", http.MethodGet, "/v1/strategies/{type}", a.Require(auth.Reader), s.getStrategy)
	srv.Handle("createStrategy", http.MethodPost, "/v1/strategies/{type}", a.Require(auth.Admin), s.createStrategy)
	srv.Handle("deleteStrategy", http.MethodDelete, "/v1/strategies/{type}", a.Require(auth.Admin), s.deleteStrategy)
	srv.Handle("strategyAction", http.MethodPost, "/v1/strategies/{type}/actions", a.Require(auth.Admin), s.strategyAction)
}

// StrategyActionRequest is the body of POST /v1/strategies/{type}/actions.
type StrategyActionRequest struct {
	Action string `json:"action"` // apply | abort
}

func strategyType(r *http.Request) (strategy.Type, error) {
	t := strategy.Type(rest.Var(r, "type"))
	if !t.Valid() {
		return t, errs.Field("type", "must be patch")
	}
	return t, nil
}

func (s *Subcloud) getStrategy(r *http.Request) (int, any, error) {
	t, err := strategyType(r)
	if err != nil {
		return 0, nil, err
	}
	st, err := s.strategyStore().Strategy(r.Context(), t)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, st, nil
}

func (s *Subcloud) strategyStore() strategy.Store { return s.strategyDB }

func (s *Subcloud) createStrategy(r *http.Request) (int, any, error) {
	if _, err := strategyType(r); err != nil {
		return 0, nil, err
	}
	var opts strategy.Options
	if err := rest.DecodeJSON(r, &opts); err != nil {
		return 0, nil, err
	}
	st, err := s.strategies.Create(r.Context(), s.cfg.Shape, opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, st, nil
}

func (s *Subcloud) deleteStrategy(r *http.Request) (int, any, error) {
	t, err := strategyType(r)
	if err != nil {
		return 0, nil, err
	}
	if err := s.strategies.Delete(r.Context(), t); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

func (s *Subcloud) strategyAction(r *http.Request) (int, any, error) {
	t, err := strategyType(r)
	if err != nil {
		return 0, nil, err
	}
	var req StrategyActionRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	var st strategy.Strategy
	switch req.Action {
	case "apply":
		st, err = s.strategies.Apply(r.Context(), t)
	case "abort":
		st, err = s.strategies.Abort(r.Context(), t)
	default:
		return 0, nil, errs.Field("action", "must be apply or abort")
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, st, nil
}

// strategySite is the site as the executor drives it: the same host
// actions, installs and server actions as the API's, with their checks.
type strategySite struct{ s *Subcloud }

func (a strategySite) patchList(ctx context.Context) ([]swpatch.Record, error) {
	a.s.patches.mu.Lock()
	defer a.s.patches.mu.Unlock()
	return a.s.patches.store.Patches(ctx)
}

func (a strategySite) Hosts(ctx context.Context) ([]strategy.HostStatus, error) {
	hosts, _, err := a.s.Hosts.Hosts(ctx, rest.ListOptions{Limit: rest.MaxLimit})
	if err != nil {
		return nil, err
	}
	list, err := a.patchList(ctx)
	if err != nil {
		return nil, err
	}
	servers, err := a.allServers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]strategy.HostStatus, 0, len(hosts))
	for _, h := range hosts {
		st := strategy.HostStatus{Name: h.Name, Personality: h.Personality, Subfunctions: slices.Clone(h.Subfunctions),
			Administrative: h.Administrative, Operational: h.Operational, Availability: h.Availability,
			Active: a.s.cfg.HA != nil && h.Name == a.s.cfg.HA.Controller, PatchCurrent: patchCurrent(list, h)}
		if h.Personality == inventory.Controller && IsHypervisor(a.s.cfg.Shape, h) && !slices.Contains(st.Subfunctions, "worker") {
			st.Subfunctions = append(st.Subfunctions, "worker")
		}
		st.Installed = st.PatchCurrent || stagedCurrent(list, h)
		if f := hostSoftware(h).Failed; f != "" && !st.PatchCurrent && slices.ContainsFunc(list, func(r swpatch.Record) bool { return r.ID == f && r.State.Applied() }) {
			st.InstallFailed = f
		}
		if h.LastReport != nil {
			st.ReportedAt = *h.LastReport
		}
		for _, sv := range servers {
			if sv.Host != h.Name || sv.Status == compute.ServerDeleted {
				continue
			}
			st.Servers = append(st.Servers, sv.ID)
			if sv.Status == compute.ServerActive || sv.Status == compute.ServerMigrating {
				st.Running = append(st.Running, sv.ID)
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// stagedCurrent: the slot a host boots next holds every applied patch
// and none being removed.
func stagedCurrent(list []swpatch.Record, h inventory.Host) bool {
	if h.Software == nil || h.Software.NextSlot == "" {
		return false
	}
	next := h.Software.NextPatches
	for _, r := range list {
		has := slices.Contains(next, r.ID)
		if r.State.Applied() && !has || r.State == swpatch.Removing && has {
			return false
		}
	}
	return true
}

func (a strategySite) allServers(ctx context.Context) ([]compute.Server, error) {
	if a.s.servers == nil {
		return nil, nil
	}
	var out []compute.Server
	opts := rest.ListOptions{Limit: rest.MaxLimit}
	for {
		page, next, err := a.s.servers.ListServers(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		opts.After = next
	}
}

func (a strategySite) Patches(ctx context.Context) ([]string, bool, error) {
	list, err := a.patchList(ctx)
	if err != nil {
		return nil, false, err
	}
	var ids []string
	reboot := false
	for _, r := range list {
		if r.State != swpatch.Deploying && r.State != swpatch.Removing {
			continue // deployed and committed patches run everywhere already
		}
		ids = append(ids, r.ID)
		if r.RebootRequired || r.State == swpatch.Removing {
			reboot = true
		}
	}
	return ids, reboot, nil
}

func (a strategySite) Alarms(ctx context.Context) ([]strategy.Alarm, error) {
	var out []strategy.Alarm
	opts := rest.ListOptions{Limit: rest.MaxLimit, Filters: map[string]string{"suppressed": "false"}}
	for {
		list, next, err := a.s.shell.Alarms.Store().Alarms(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, al := range list {
			out = append(out, strategy.Alarm{ID: al.AlarmID, Entity: al.EntityInstanceID, Severity: string(al.Severity), MgmtAffecting: al.MgmtAffecting})
		}
		if next == "" {
			return out, nil
		}
		opts.After = next
	}
}

func (a strategySite) Lock(ctx context.Context, host string, force bool) error {
	h, err := a.s.Hosts.Host(ctx, host)
	if err != nil || h.Administrative == inventory.Locked {
		return err
	}
	action := "lock"
	if force {
		action = "force-lock"
	}
	_, _, err = a.s.doHostAction(ctx, host, HostActionRequest{Action: action})
	return err
}

func (a strategySite) Unlock(ctx context.Context, host string) error {
	h, err := a.s.Hosts.Host(ctx, host)
	if err != nil || h.Administrative == inventory.Unlocked {
		return err
	}
	_, _, err = a.s.doHostAction(ctx, host, HostActionRequest{Action: "unlock"})
	return err
}

// Swact hands the site to the peer controller; this site controller
// stops on the way (docs/ha.md), and the peer's executor resumes.
func (a strategySite) Swact(ctx context.Context, host string) error {
	if a.s.cfg.HA == nil || a.s.cfg.HA.Controller != host {
		return nil
	}
	_, _, err := a.s.doHostAction(ctx, host, HostActionRequest{Action: "swact"})
	return err
}

func (a strategySite) Install(ctx context.Context, host string) error {
	_, err := a.s.orderInstall(ctx, host)
	return err
}

func (a strategySite) serverAction(ctx context.Context, ids []string, act compute.Action, from, to compute.ServerStatus) error {
	for _, id := range ids {
		sv, err := a.s.servers.Server(ctx, id)
		if err != nil {
			return err
		}
		if sv.Status == from && sv.Task == "" {
			if _, err := a.s.servers.Act(ctx, id, compute.ServerAction{Action: act}); err != nil {
				return fmt.Errorf("server %s: %w", sv.Name, err)
			}
		}
	}
	// Wait for them: a host is locked only once its servers are off.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		done := true
		for _, id := range ids {
			sv, err := a.s.servers.Server(ctx, id)
			if err != nil {
				return err
			}
			if sv.Status != to || sv.Task != "" {
				done = false
			}
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("servers not %s after 5m", to)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (a strategySite) StopServers(ctx context.Context, ids []string) error {
	return a.serverAction(ctx, ids, compute.ActionStop, compute.ServerActive, compute.ServerShutoff)
}

func (a strategySite) StartServers(ctx context.Context, ids []string) error {
	return a.serverAction(ctx, ids, compute.ActionStart, compute.ServerShutoff, compute.ServerActive)
}

func (a strategySite) Raise(ctx context.Context, id, entity string, fields map[string]string) error {
	_, _, err := a.s.shell.Alarms.Raise(ctx, id, entity, fields)
	return err
}

func (a strategySite) Clear(ctx context.Context, id, entity string) error {
	_, err := a.s.shell.Alarms.Clear(ctx, id, entity)
	return err
}
