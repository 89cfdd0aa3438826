package central

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/fleet"
	"github.com/petrel-edge/petrel/swpatch/strategy"
	"github.com/petrel-edge/petrel/swpatch/strategy/strategydb"
)

// Fleet patch orchestration (docs/patching.md, "Fleet strategies"):
// central's fleet strategy (swpatch/fleet) runs on the leading central,
// is kept in central's database by strategydb (the table sites use for
// theirs), and drives each site through its own API over the relay, as
// FleetUser.

// FleetUser is the name central's fleet orchestration acts as at sites:
// their audit records show it.
const FleetUser = "central-fleet"

// userKey carries the user a relayed request acts as (SyncUser if none).
type userKey struct{}

func openFleet(ctx context.Context, c *Central) error {
	store, err := strategydb.Open(ctx, c.shell.DB)
	if err != nil {
		return err
	}
	c.fleetStore = store
	c.fleetEx, err = fleet.New(fleet.Config{Store: store, Sites: fleetSites{c}, Alarms: centralAlarms{c},
		Logger: c.log.With("component", "fleet-strategy"), Poll: c.cfg.FleetPoll, OfflineWait: c.cfg.FleetOfflineWait,
		Changed: func(s strategy.Strategy) { c.stream.Publish("strategy", s) }})
	return err
}

func (c *Central) registerStrategies(srv *rest.Server, a *auth.Service) {
	srv.Handle("getStrategy", http.MethodGet, "/v1/strategies/{type}", a.Require(auth.Reader), c.getStrategy)
	srv.Handle("createStrategy", http.MethodPost, "/v1/strategies/{type}", a.Require(auth.Admin), c.createStrategy)
	srv.Handle("deleteStrategy", http.MethodDelete, "/v1/strategies/{type}", a.Require(auth.Admin), c.deleteStrategy)
	srv.Handle("strategyAction", http.MethodPost, "/v1/strategies/{type}/actions", a.Require(auth.Admin), c.strategyAction)
}

func strategyType(r *http.Request) error {
	if t := strategy.Type(rest.Var(r, "type")); !t.Valid() {
		return errs.Field("type", "must be patch")
	}
	return nil
}

func (c *Central) getStrategy(r *http.Request) (int, any, error) {
	if err := strategyType(r); err != nil {
		return 0, nil, err
	}
	s, err := c.fleetStore.Strategy(r.Context(), strategy.Patch)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s, nil
}

// createStrategy plans the fleet strategy: the patches must be uploaded
// here, the group must exist, max_parallel defaults to the group's (1 for
// a serial group). Nothing is stored on any error.
func (c *Central) createStrategy(r *http.Request) (int, any, error) {
	ctx := r.Context()
	if err := strategyType(r); err != nil {
		return 0, nil, err
	}
	var opts strategy.Options
	if err := rest.DecodeJSON(r, &opts); err != nil {
		return 0, nil, err
	}
	group := opts.Group
	if group == "" {
		group = DefaultGroup
	} else if err := ValidateGroupName("group", group); err != nil {
		return 0, nil, err
	}
	g, err := c.Subclouds.SubcloudGroup(ctx, group)
	if errors.Is(err, ErrSubcloudGroupNotFound) {
		return 0, nil, errs.Field("group", "no subcloud group %s (petrel subcloud-group list)", group)
	} else if err != nil {
		return 0, nil, err
	}
	if opts.MaxParallel == 0 {
		opts.MaxParallel = g.MaxParallelSubclouds
		if g.UpdateApplyType == ApplySerial {
			opts.MaxParallel = 1
		}
	}
	if len(opts.Patches) == 0 {
		return 0, nil, errs.Field("patches", "name at least one patch uploaded at central (petrel patch upload FILE)")
	}
	snap := fleet.Snapshot{}
	for _, id := range opts.Patches {
		if !swpatch.ValidID(id) {
			return 0, nil, errs.Field("patches", "%q is not a patch ID", id)
		}
		p, err := c.patches.store.Patch(ctx, id)
		if errors.Is(err, swpatch.ErrPatchNotFound) {
			return 0, nil, errs.Field("patches", "patch %s is not uploaded at central (petrel patch upload FILE)", id)
		} else if err != nil {
			return 0, nil, err
		}
		snap.RebootRequired = snap.RebootRequired || p.RebootRequired
	}
	after := ""
	for {
		scs, next, err := c.Subclouds.Subclouds(ctx, rest.ListOptions{Limit: rest.MaxLimit, After: after})
		if err != nil {
			return 0, nil, err
		}
		for _, sc := range scs {
			snap.Sites = append(snap.Sites, fleet.Site{Name: sc.Name, Group: sc.Group, Managed: sc.Management == Managed})
		}
		if next == "" {
			break
		}
		after = next
	}
	s, err := c.fleetEx.Create(ctx, snap, opts)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusCreated, s, nil
}

func (c *Central) deleteStrategy(r *http.Request) (int, any, error) {
	if err := strategyType(r); err != nil {
		return 0, nil, err
	}
	if err := c.fleetEx.Delete(r.Context()); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// StrategyActionRequest is the body of POST /v1/strategies/{type}/actions.
type StrategyActionRequest struct {
	Action string `json:"action"` // apply | abort
}

func (c *Central) strategyAction(r *http.Request) (int, any, error) {
	if err := strategyType(r); err != nil {
		return 0, nil, err
	}
	var req StrategyActionRequest
	if err := rest.DecodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	var s strategy.Strategy
	var err error
	switch req.Action {
	case "apply":
		s, err = c.fleetEx.Apply(r.Context())
	case "abort":
		s, err = c.fleetEx.Abort(r.Context())
	default:
		return 0, nil, errs.Field("action", "must be apply or abort")
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, s, nil
}

// centralAlarms raises central's own alarms for the fleet executor.
type centralAlarms struct{ c *Central }

func (a centralAlarms) Raise(ctx context.Context, id, entity string, fields map[string]string) error {
	_, _, err := a.c.shell.Alarms.Raise(ctx, id, entity, fields)
	return err
}

func (a centralAlarms) Clear(ctx context.Context, id, entity string) error {
	_, err := a.c.shell.Alarms.Clear(ctx, id, entity)
	return err
}

// siteAPI is a site's REST API through the relay, acting as user.
func (c *Central) siteAPI(site string) (*client.Client, error) {
	return client.New(client.Config{URL: "http://" + relayHost(site), HTTPClient: c.relaySites.client})
}

// sendPatch uploads central's archive of patch id to site, streamed from
// the database.
func (c *Central) sendPatch(ctx context.Context, site, id string) error {
	rec, err := c.patches.store.Patch(ctx, id)
	if err != nil {
		return err
	}
	api, err := c.siteAPI(site)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := c.patches.store.ReadArchive(ctx, id, pw)
		pw.CloseWithError(err)
	}()
	err = api.Upload(ctx, http.MethodPost, "/v1/patches", pr, rec.Size, nil)
	pr.CloseWithError(errors.New("upload ended"))
	if errors.Is(err, errs.Conflict) {
		// Held already (an earlier upload whose answer was lost, or the
		// sync engine's): the same archive is success.
		var have swpatch.Record
		if gerr := api.Do(ctx, http.MethodGet, "/v1/patches/"+url.PathEscape(id), nil, nil, &have); gerr == nil && have.SHA256 == rec.SHA256 {
			return nil
		}
	}
	return err
}

// relaySite's patch API (patchSite).

func (s *relaySite) SitePatches(ctx context.Context) ([]swpatch.Record, error) {
	api, err := s.r.c.siteAPI(s.name)
	if err != nil {
		return nil, err
	}
	var list rest.List[swpatch.Record]
	if err := api.Do(ctx, http.MethodGet, "/v1/patches", nil, nil, &list); err != nil {
		return nil, siteAPIErr(s.name, err)
	}
	return list.Items, nil
}

func (s *relaySite) UploadPatch(ctx context.Context, id string) error {
	return siteAPIErr(s.name, s.r.c.sendPatch(ctx, s.name, id))
}

func (s *relaySite) DeleteSitePatch(ctx context.Context, id string) error {
	api, err := s.r.c.siteAPI(s.name)
	if err != nil {
		return err
	}
	return siteAPIErr(s.name, api.Do(ctx, http.MethodDelete, "/v1/patches/"+url.PathEscape(id), nil, nil, nil))
}

// siteAPIErr keeps a site's answer's kind and says which site answered;
// an error without a kind (the link) is unavailable.
func siteAPIErr(site string, err error) error {
	var ae *client.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return fmt.Errorf("site %s: %w", site, err)
	}
	return errs.Wrapf(errs.Unavailable, "site %s: %v", site, err)
}

// fleetSites is the fleet as the fleet executor drives it (fleet.Sites):
// each site's API through its dial-home link, as FleetUser.
type fleetSites struct{ c *Central }

func (f fleetSites) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, userKey{}, FleetUser)
}

func (f fleetSites) call(ctx context.Context, site, method, path string, in, out any) error {
	api, err := f.c.siteAPI(site)
	if err != nil {
		return err
	}
	return siteAPIErr(site, api.Do(f.ctx(ctx), method, path, nil, in, out))
}

func (f fleetSites) Reachable(site string) bool { return f.c.links.get(site) != nil }

func (f fleetSites) SyncPatch(ctx context.Context, site, id string) error {
	if err := f.c.sendPatch(f.ctx(ctx), site, id); err != nil {
		return siteAPIErr(site, err)
	}
	f.c.sync.changed()
	return nil
}

func (f fleetSites) Patch(ctx context.Context, site, id string) (swpatch.Record, error) {
	var rec swpatch.Record
	err := f.call(ctx, site, http.MethodGet, "/v1/patches/"+url.PathEscape(id), nil, &rec)
	return rec, err
}

func (f fleetSites) ApplyPatch(ctx context.Context, site, id string) error {
	return f.call(ctx, site, http.MethodPost, "/v1/patches/"+url.PathEscape(id)+"/apply", nil, nil)
}

func (f fleetSites) RemovePatch(ctx context.Context, site, id string) error {
	return f.call(ctx, site, http.MethodPost, "/v1/patches/"+url.PathEscape(id)+"/remove", nil, nil)
}

func (f fleetSites) Strategy(ctx context.Context, site string) (strategy.Strategy, error) {
	var s strategy.Strategy
	err := f.call(ctx, site, http.MethodGet, "/v1/strategies/patch", nil, &s)
	return s, err
}

func (f fleetSites) CreateStrategy(ctx context.Context, site string, opts strategy.Options) (strategy.Strategy, error) {
	var s strategy.Strategy
	err := f.call(ctx, site, http.MethodPost, "/v1/strategies/patch", opts.SiteOnly(), &s)
	return s, err
}

func (f fleetSites) DeleteStrategy(ctx context.Context, site string) error {
	return f.call(ctx, site, http.MethodDelete, "/v1/strategies/patch", nil, nil)
}

func (f fleetSites) StrategyAction(ctx context.Context, site, action string) (strategy.Strategy, error) {
	var s strategy.Strategy
	err := f.call(ctx, site, http.MethodPost, "/v1/strategies/patch/actions", StrategyActionRequest{Action: action}, &s)
	return s, err
}
