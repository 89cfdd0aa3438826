package subcloud_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/servicemgr"
)

// The service group API on a site with its embedded etcd: groups are
// validated against the inventory (nothing applied on bad input), placed
// on the hosts whose agents report, and deleted.
func TestServiceGroupAPI(t *testing.T) {
	s := newSite(t)
	ctx := context.Background()
	c := servertest.Client(t, s, servertest.AdminToken(t, s))
	for i, name := range []string{"worker-0", "worker-1"} {
		h := inventory.Host{UUID: "3f1c0e52-0000-4000-8000-00000000000" + string(rune('1'+i)), Name: name,
			Personality: inventory.Worker, Provisioning: inventory.Provisioned, Administrative: inventory.Unlocked,
			Operational: inventory.Enabled, Availability: inventory.Available}
		if _, err := s.Hosts.PutHost(ctx, h, 0); err != nil {
			t.Fatal(err)
		}
	}
	spec := servicemgr.Spec{Name: "web", Model: "1+1", Hosts: []string{"worker-0", "worker-1"},
		Actions: servicemgr.Actions{Start: []string{"petrel", "demo-service"}}}
	// Coordination starts with Run: wait until the API serves groups.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var l rest.List[servicemgr.Group]
		err := c.Do(ctx, http.MethodGet, "/v1/service-groups", nil, nil, &l)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service groups never served: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	bad := spec
	bad.Hosts = []string{"worker-0", "worker-7"}
	if err := c.Do(ctx, http.MethodPost, "/v1/service-groups", nil, bad, nil); !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "worker-7") {
		t.Errorf("unknown host = %v; want invalid naming worker-7", err)
	}
	bad = spec
	bad.Model = "2+1"
	if err := c.Do(ctx, http.MethodPost, "/v1/service-groups", nil, bad, nil); !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "needs 3 hosts") {
		t.Errorf("2+1 over 2 hosts = %v; want invalid", err)
	}
	var l rest.List[servicemgr.Group]
	if err := c.Do(ctx, http.MethodGet, "/v1/service-groups", nil, nil, &l); err != nil || len(l.Items) != 0 {
		t.Fatalf("groups after refused creates = %+v, %v; want none", l.Items, err)
	}
	var g servicemgr.Group
	if err := c.Do(ctx, http.MethodPost, "/v1/service-groups", nil, spec, &g); err != nil || g.N != 1 || g.M != 1 || g.Health.Type != "process" {
		t.Fatalf("create = %+v, %v; want 1+1 with the default health check", g, err)
	}
	if err := c.Do(ctx, http.MethodPost, "/v1/service-groups", nil, spec, nil); !errors.Is(err, errs.Conflict) {
		t.Errorf("second create = %v; want conflict", err)
	}
	if err := c.Do(ctx, http.MethodDelete, "/v1/service-groups/web", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(ctx, http.MethodGet, "/v1/service-groups/web", nil, nil, nil); !errors.Is(err, errs.NotFound) {
		t.Errorf("after delete = %v; want not found", err)
	}
}
