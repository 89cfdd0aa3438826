package subcloud_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
	"github.com/petrel-edge/petrel/swpatch"
	"github.com/petrel-edge/petrel/swpatch/strategy"
)

// TestStrategyThroughTheAPI runs an in-service patch strategy on a site
// with one host and a real agent (fake platform): nothing to do without
// an applied patch; the plan; strict alarm restrictions refuse the apply
// naming the alarm; applied once it clears, the host patch-current
// without a lock; every mutating call audited.
// strategySite starts a site with one host in service (controller-0,
// unlocked, available) run by a real agent on a fake platform.
func strategySite(t *testing.T) (site, *agenttest.Platform, ed25519.PrivateKey, string) {
	t.Helper()
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
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/action", nil, map[string]string{"action": "unlock"}, nil); err != nil {
		t.Fatal(err)
	}
	waitHost(t, s, id, func(h inventory.Host) bool { return h.Software != nil && h.Administrative == inventory.Unlocked })
	// This site runs no host maintenance (no heartbeats): the test
	// speaks for it and declares the host in service.
	for {
		h, err := s.Hosts.Host(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		h.Operational, h.Availability = inventory.Enabled, inventory.Available
		if _, err := s.Hosts.PutHost(ctx, h, h.Rev); err == nil {
			break
		} else if !errors.Is(err, errs.Conflict) {
			t.Fatal(err)
		}
	}

	return s, plat, priv, id
}

func TestStrategyThroughTheAPI(t *testing.T) {
	s, plat, priv, id := strategySite(t)
	ctx := context.Background()
	path := "/v1/strategies/patch"
	if err := s.api.Do(ctx, http.MethodPost, path, nil, strategy.Options{}, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("create without an applied patch = %v; want conflict (nothing to do)", err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/strategies/upgrade", nil, strategy.Options{}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("create of an unknown type = %v; want invalid", err)
	}
	spec := swpatch.BuildSpec{ID: "CONF1", Files: []swpatch.Content{{Path: "etc/tuning.conf", Data: []byte("x=1\n")}}}
	if _, err := upload(s, patchArchive(t, priv, spec)); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/CONF1/apply", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	// As on the other controller of a pair after a swact: the archive is
	// not in this controller's data directory, only in the database.
	if err := os.Remove(filepath.Join(s.Shell().DataDir(), "patches", "CONF1.patch")); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, path, nil, strategy.Options{MaxParallelWorkerHosts: 11}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("create with max-parallel 11 = %v; want invalid", err)
	}
	var st strategy.Strategy
	if err := s.api.Do(ctx, http.MethodPost, path, nil, strategy.Options{}, &st); err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, stg := range st.Stages {
		for _, step := range stg.Steps {
			acts = append(acts, string(step.Action)+" "+step.Target)
		}
	}
	if st.State != strategy.ReadyToApply || strings.Join(acts, "; ") != "query-alarms ; sw-patch-hosts controller-0; system-stabilize controller-0" {
		t.Fatalf("plan %s: %v; want an in-service install without a lock", st.State, acts)
	}
	if err := s.api.Do(ctx, http.MethodPost, path, nil, strategy.Options{}, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("a second create = %v; want conflict", err)
	}

	// Strict: a management-affecting alarm refuses the apply, named.
	if _, _, err := s.Shell().Alarms.Raise(ctx, "400.002", "service_group=controller", nil); err != nil {
		t.Fatal(err)
	}
	err := s.api.Do(ctx, http.MethodPost, path+"/actions", nil, map[string]string{"action": "apply"}, nil)
	if !errors.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "400.002") {
		t.Fatalf("apply with 400.002 raised = %v; want conflict naming 400.002", err)
	}
	if err := s.api.Do(ctx, http.MethodPost, path+"/actions", nil, map[string]string{"action": "go"}, nil); !errors.Is(err, errs.Invalid) {
		t.Errorf("action go = %v; want invalid", err)
	}
	if _, err := s.Shell().Alarms.Clear(ctx, "400.002", "service_group=controller"); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, path+"/actions", nil, map[string]string{"action": "apply"}, &st); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for st.State != strategy.Applied && st.State != strategy.ApplyFailed && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		s.api.Do(ctx, http.MethodGet, path, nil, nil, &st)
	}
	if st.State != strategy.Applied {
		t.Fatalf("strategy %s: %s", st.State, st.Reason)
	}
	h := waitHost(t, s, id, func(h inventory.Host) bool { return h.PatchCurrent })
	if h.Administrative != inventory.Unlocked || plat.Reboots() != 0 {
		t.Errorf("host %s, %d reboots; want never locked, no reboot", h.Administrative, plat.Reboots())
	}
	if err := s.api.Do(ctx, http.MethodDelete, path, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodGet, path, nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("get after delete = %v; want not found", err)
	}
	// Every mutating call, refused or not, is an audit event.
	var evs rest.List[faultmgr.Event]
	if err := s.api.Do(ctx, http.MethodGet, "/v1/events", url.Values{"type": {"audit"}, "limit": {"1000"}}, nil, &evs); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range evs.Items {
		if strings.Contains(e.Action, "Strategy") || strings.HasPrefix(e.Action, "strategy") {
			count[e.Action+" "+e.Result]++
		}
	}
	want := map[string]int{"createStrategy conflict": 2, "createStrategy invalid_argument": 2, "createStrategy ok": 1,
		"strategyAction conflict": 1, "strategyAction invalid_argument": 1, "strategyAction ok": 1, "deleteStrategy ok": 1}
	if fmt.Sprint(count) != fmt.Sprint(want) {
		t.Errorf("audit events = %v; want %v", count, want)
	}
}

// An install that fails stops the strategy at that step: apply-failed
// naming the host and the patch, 900.004 raised and 900.001 cleared;
// abort then ends it, and 900.004 clears when it is applied again.
func TestStrategyStopsAtAFailedInstall(t *testing.T) {
	s, plat, priv, _ := strategySite(t)
	ctx := context.Background()
	plat.SetInstallError(errors.New("disk full"))
	spec := swpatch.BuildSpec{ID: "CONF2", Files: []swpatch.Content{{Path: "etc/x.conf", Data: []byte("x=2\n")}}}
	if _, err := upload(s, patchArchive(t, priv, spec)); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, "/v1/patches/CONF2/apply", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	path := "/v1/strategies/patch"
	var st strategy.Strategy
	if err := s.api.Do(ctx, http.MethodPost, path, nil, strategy.Options{}, &st); err != nil {
		t.Fatal(err)
	}
	if err := s.api.Do(ctx, http.MethodPost, path+"/actions", nil, map[string]string{"action": "apply"}, &st); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for st.State == strategy.Applying && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		s.api.Do(ctx, http.MethodGet, path, nil, nil, &st)
	}
	if st.State != strategy.ApplyFailed || !strings.Contains(st.Reason, "CONF2") || !strings.Contains(st.Reason, "controller-0") {
		t.Fatalf("strategy %s: %q; want apply-failed naming CONF2 and controller-0", st.State, st.Reason)
	}
	active := func(id string) bool {
		var l rest.List[faultmgr.Alarm]
		s.api.Do(ctx, http.MethodGet, "/v1/alarms", url.Values{"alarm_id": {id}}, nil, &l)
		return len(l.Items) > 0
	}
	// The executor raises and clears right after it stores the failure.
	deadline = time.Now().Add(10 * time.Second)
	for (!active("900.004") || active("900.001")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if !active("900.004") || active("900.001") {
		t.Errorf("after the failure: 900.004 active %t, 900.001 active %t; want true, false", active("900.004"), active("900.001"))
	}
	if err := s.api.Do(ctx, http.MethodPost, path+"/actions", nil, map[string]string{"action": "abort"}, &st); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for st.State != strategy.Aborted && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
		s.api.Do(ctx, http.MethodGet, path, nil, nil, &st)
	}
	if st.State != strategy.Aborted {
		t.Fatalf("strategy %s after abort; want aborted", st.State)
	}
	if err := s.api.Do(ctx, http.MethodDelete, path, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}
