package fleetsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// What central's fleet strategy calls at a site (central/fleet.go): the
// patch API (upload verified with the configured key, apply, show) and
// the strategy API, whose strategy is simulated: it applies for
// Config.StrategyDuration, its steps (one per host) done in proportion,
// then every host is patch-current and the patches deployed.

// simStrategy is the site's simulated patch strategy.
type simStrategy struct {
	state     strategy.State
	patches   []string
	options   strategy.Options
	created   time.Time
	applyAt   time.Time // when the current apply started
	doneSteps int       // steps done before the current apply (a resume)
	reason    string
}

// failKind answers an error with the wire code of kind, as a site does.
func failKind(w http.ResponseWriter, status int, kind error, msg string) {
	writeJSON(w, status, rest.ErrorBody{Error: rest.ErrorDetail{Code: errs.Code(kind), Message: msg}})
}

func (st *site) hostNames() []string {
	out := make([]string, 0, st.hosts)
	for i := range st.hosts {
		out = append(out, fmt.Sprintf("host-%d", i))
	}
	return out
}

// advance moves an applying strategy along the clock.
func (st *site) advance(now time.Time) {
	s := st.strat
	if s == nil || s.state != strategy.Applying {
		return
	}
	d := st.sim.cfg.StrategyDuration
	if now.Sub(s.applyAt) < d*time.Duration(st.hosts-s.doneSteps)/time.Duration(max(st.hosts, 1)) {
		return
	}
	s.state, s.doneSteps = strategy.Applied, st.hosts
	for _, id := range s.patches {
		if p := st.patches[id]; p != nil {
			p.State = swpatch.Deployed
			for h := range p.Hosts {
				p.Hosts[h] = swpatch.HostCurrent
			}
		}
	}
}

// view is the strategy as GET /v1/strategies/patch shows it.
func (st *site) view(now time.Time) strategy.Strategy {
	s := st.strat
	done := s.doneSteps
	if s.state == strategy.Applying {
		per := st.sim.cfg.StrategyDuration / time.Duration(max(st.hosts, 1))
		done = min(st.hosts, s.doneSteps+int(now.Sub(s.applyAt)/max(per, time.Nanosecond)))
	}
	out := strategy.Strategy{Type: strategy.Patch, Scope: strategy.ScopeSite, State: s.state, Options: s.options,
		Patches: slices.Clone(s.patches), Reason: s.reason, CreatedAt: s.created, UpdatedAt: now,
		Stages: []strategy.Stage{{Name: strategy.StageWorkers, State: strategy.StepInitial}}}
	for k, h := range st.hostNames() {
		step := strategy.Step{Action: strategy.SwPatchHosts, Target: h, Hosts: []string{h}, State: strategy.StepInitial}
		switch {
		case k < done:
			step.State = strategy.StepApplied
		case k == done && s.state == strategy.Applying:
			step.State = strategy.StepApplying
		case s.state == strategy.Aborted:
			step.State = strategy.StepAborted
		}
		out.Stages[0].Steps = append(out.Stages[0].Steps, step)
	}
	switch {
	case s.state == strategy.Applied:
		out.Stages[0].State = strategy.StepApplied
	case s.state == strategy.Aborted:
		out.Stages[0].State = strategy.StepAborted
	case s.state == strategy.Applying:
		out.Stages[0].State = strategy.StepApplying
	}
	return out
}

func (st *site) patchesAPI(w http.ResponseWriter, r *http.Request, rest string, body []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.advance(time.Now())
	id, action, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	id, _ = url.PathUnescape(id)
	switch {
	case r.Method == http.MethodGet && id == "":
		list := make([]swpatch.Record, 0, len(st.patches))
		for _, p := range st.patches {
			list = append(list, *p)
		}
		slices.SortFunc(list, func(a, b swpatch.Record) int { return strings.Compare(a.ID, b.ID) })
		writeJSON(w, http.StatusOK, map[string]any{"items": list})
	case r.Method == http.MethodPost && id == "":
		st.uploadPatch(w, body)
	case r.Method == http.MethodGet && action == "":
		p := st.patches[id]
		if p == nil {
			failKind(w, http.StatusNotFound, errs.NotFound, "patch not found")
			return
		}
		writeJSON(w, http.StatusOK, p)
	case r.Method == http.MethodDelete && action == "":
		p := st.patches[id]
		if p == nil {
			failKind(w, http.StatusNotFound, errs.NotFound, "patch not found")
			return
		}
		if p.State != swpatch.Available {
			failKind(w, http.StatusConflict, errs.InvalidTransition, "only an available patch can be deleted")
			return
		}
		delete(st.patches, id)
		writeJSON(w, http.StatusNoContent, nil)
	case r.Method == http.MethodPost && (action == "apply" || action == "remove"):
		p := st.patches[id]
		if p == nil {
			failKind(w, http.StatusNotFound, errs.NotFound, "patch not found")
			return
		}
		to := swpatch.Deploying
		if action == "remove" {
			to = swpatch.Available // no host installed it in the simulation's aborts
		}
		if !swpatch.CanTransition(p.State, to) && !(action == "remove" && p.State == swpatch.Deploying) {
			failKind(w, http.StatusConflict, errs.InvalidTransition, fmt.Sprintf("patch %s is %s", id, p.State))
			return
		}
		p.State = to
		writeJSON(w, http.StatusOK, p)
	default:
		failKind(w, http.StatusNotFound, errs.NotFound, "not simulated: "+r.Method+" /v1/patches"+rest)
	}
}

// uploadPatch verifies the archive with the configured key, as a site does.
func (st *site) uploadPatch(w http.ResponseWriter, body []byte) {
	if st.sim.patchKey == nil {
		failKind(w, http.StatusServiceUnavailable, errs.Unavailable, "this site trusts no patch signing key")
		return
	}
	pt, err := swpatch.Verify(bytes.NewReader(body), int64(len(body)), st.sim.patchKey, swpatch.Limits{})
	if err != nil {
		failKind(w, http.StatusBadRequest, errs.Invalid, err.Error())
		return
	}
	m := pt.Manifest
	if st.patches[m.ID] != nil {
		failKind(w, http.StatusConflict, errs.Conflict, "patch already uploaded")
		return
	}
	sum := sha256.Sum256(body)
	hosts := map[string]swpatch.HostState{}
	for _, h := range st.hostNames() {
		hosts[h] = swpatch.HostPending
	}
	now := time.Now().UTC()
	rec := &swpatch.Record{ID: m.ID, Version: m.Version, State: swpatch.Available, Requires: m.Requires, RebootRequired: m.RebootRequired,
		Hosts: hosts, Files: len(m.Files), Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:]), CreatedAt: now, UpdatedAt: now}
	st.patches[m.ID] = rec
	writeJSON(w, http.StatusCreated, rec)
}

func (st *site) strategyAPI(w http.ResponseWriter, r *http.Request, rest string, body []byte) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	st.advance(now)
	s := st.strat
	switch {
	case rest == "" && r.Method == http.MethodGet:
		if s == nil {
			failKind(w, http.StatusNotFound, errs.NotFound, "strategy not found")
			return
		}
		writeJSON(w, http.StatusOK, st.view(now))
	case rest == "" && r.Method == http.MethodPost:
		if s != nil {
			failKind(w, http.StatusConflict, errs.Conflict, "a strategy of this type already exists; delete it first")
			return
		}
		var opts strategy.Options
		if err := json.Unmarshal(body, &opts); err != nil {
			failKind(w, http.StatusBadRequest, errs.Invalid, err.Error())
			return
		}
		var ids []string
		for id, p := range st.patches {
			if p.State == swpatch.Deploying {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			failKind(w, http.StatusConflict, errs.Conflict, "no host needs a patch: apply a patch first (petrel patch apply)")
			return
		}
		slices.Sort(ids)
		st.strat = &simStrategy{state: strategy.ReadyToApply, patches: ids, options: opts.WithDefaults(), created: now.UTC()}
		writeJSON(w, http.StatusCreated, st.view(now))
	case rest == "" && r.Method == http.MethodDelete:
		if s == nil {
			failKind(w, http.StatusNotFound, errs.NotFound, "strategy not found")
			return
		}
		if s.state == strategy.Applying || s.state == strategy.Aborting {
			failKind(w, http.StatusConflict, errs.InvalidTransition, "abort it first")
			return
		}
		st.strat = nil
		writeJSON(w, http.StatusNoContent, nil)
	case rest == "/actions" && r.Method == http.MethodPost:
		if s == nil {
			failKind(w, http.StatusNotFound, errs.NotFound, "strategy not found")
			return
		}
		var req struct{ Action string }
		json.Unmarshal(body, &req)
		switch {
		case req.Action == "apply" && (s.state == strategy.ReadyToApply || s.state == strategy.ApplyFailed):
			s.state, s.applyAt = strategy.Applying, now
		case req.Action == "abort" && (s.state == strategy.ReadyToApply || s.state == strategy.Applying || s.state == strategy.ApplyFailed):
			v := st.view(now)
			s.doneSteps = 0
			for _, step := range v.Stages[0].Steps {
				if step.State == strategy.StepApplied {
					s.doneSteps++
				}
			}
			s.state, s.reason = strategy.Aborted, "aborted by an operator"
		default:
			failKind(w, http.StatusConflict, errs.InvalidTransition, fmt.Sprintf("the strategy is %s", s.state))
			return
		}
		writeJSON(w, http.StatusAccepted, st.view(now))
	default:
		failKind(w, http.StatusNotFound, errs.NotFound, "not simulated: "+r.Method+" /v1/strategies/patch"+rest)
	}
}
