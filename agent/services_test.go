package agent

import (
	"context"
	"encoding/json"
	"github.com/petrel-edge/petrel/swpatch"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/agent/services/servicestest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/servicemgr"
)

// svcPlatform is a platform for this test: it changes nothing.
type svcPlatform struct{ servicestest.Addresses }

func (*svcPlatform) Kind() string                                 { return "test" }
func (*svcPlatform) BootedAt() time.Time                          { return time.Time{} }
func (*svcPlatform) Reboot(context.Context) error                 { return nil }
func (*svcPlatform) Usage(context.Context) (monitor.Usage, error) { return monitor.Usage{}, nil }
func (*svcPlatform) Software(context.Context) (swpatch.Status, error) {
	return swpatch.Status{}, ErrNoSoftwareSlots
}
func (*svcPlatform) StageSoftware(context.Context, []*swpatch.Patch) error { return ErrNoSoftwareSlots }
func (*svcPlatform) StageRemoval(context.Context, []string) error          { return ErrNoSoftwareSlots }
func (*svcPlatform) InstallInService(context.Context, *swpatch.Patch) error {
	return ErrNoSoftwareSlots
}
func (*svcPlatform) ConfirmBoot(context.Context) (bool, error) { return false, nil }

// svcSite is a site's services endpoints: 404 until it serves, then the
// desired state, held while it has not changed from the version asked.
type svcSite struct {
	mu       sync.Mutex
	serving  bool
	desired  servicemgr.AgentServices
	changed  chan struct{} // closed when desired changes
	queries  []string
	statuses []servicemgr.AgentStatus
}

func (s *svcSite) set(as servicemgr.AgentServices) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serving, s.desired = true, as
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *svcSite) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agents/{id}/services", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.queries = append(s.queries, r.URL.RawQuery)
		if !s.serving {
			s.mu.Unlock()
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		if v := q.Get("version"); v != "" && v == jsonNumber(s.desired.Version) {
			if q.Get("wait") != "25s" {
				t.Errorf("long poll with wait=%q; want 25s", q.Get("wait"))
			}
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			case <-time.After(25 * time.Second):
			}
			s.mu.Lock()
		}
		as := s.desired
		s.mu.Unlock()
		json.NewEncoder(w).Encode(as)
	})
	mux.HandleFunc("PUT /v1/agents/{id}/services/status", func(w http.ResponseWriter, r *http.Request) {
		var st servicemgr.AgentStatus
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil {
			t.Errorf("status body: %v", err)
		}
		s.mu.Lock()
		s.statuses = append(s.statuses, st)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func jsonNumber(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// lastMember is the latest reported status of group.
func (s *svcSite) lastMember(group string) (servicemgr.MemberStatus, string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.statuses) == 0 {
		return servicemgr.MemberStatus{}, "", false
	}
	last := s.statuses[len(s.statuses)-1]
	for _, m := range last.Members {
		if m.Group == group {
			return m, last.BootID, true
		}
	}
	return servicemgr.MemberStatus{}, last.BootID, false
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling with a deadline
	}
}

// TestServicesLongPoll: a site that does not serve services is asked
// again slowly and sent no reports; once it serves, the agent runs what
// it says, reports it with its boot id, and follows a change at once
// through the long poll.
func TestServicesLongPoll(t *testing.T) {
	sleepBin, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1) to run as a member")
	}
	site := &svcSite{changed: make(chan struct{})}
	srv := httptest.NewServer(site.handler(t))
	defer srv.Close()
	plat := &svcPlatform{}
	a, err := New(Config{SiteURL: srv.URL, CACert: "unused", StateDir: t.TempDir(), DMIPath: "/nonexistent",
		Platform: plat, Logger: servertest.Logger(t), MonitorDisable: true})
	if err != nil {
		t.Fatal(err)
	}
	a.client = srv.Client()
	a.svcNotServed = 20 * time.Millisecond
	stop := a.startServices(t.Context())
	defer stop()

	waitUntil(t, "3 polls of a site without services", func() bool {
		site.mu.Lock()
		defer site.mu.Unlock()
		return len(site.queries) >= 3
	})
	if _, _, ok := site.lastMember("web"); ok || len(site.statuses) != 0 {
		t.Errorf("reports went to a site that does not serve services: %+v", site.statuses)
	}

	member := servicemgr.Assignment{Group: "web", Role: servicemgr.RoleStandby, Epoch: 1, Slot: -1,
		Health: servicemgr.HealthCheck{Type: "process", IntervalMS: 20}, Actions: servicemgr.Actions{Start: []string{sleepBin, "60"}}}
	site.set(servicemgr.AgentServices{Version: 1, ControllerEpoch: 1, Host: "host-9", Members: []servicemgr.Assignment{member}})
	waitUntil(t, "web reported standby", func() bool {
		m, _, ok := site.lastMember("web")
		return ok && m.State == servicemgr.MemberStandby
	})
	if _, boot, _ := site.lastMember("web"); boot != a.bootID || boot == "" {
		t.Errorf("boot_id = %q; want the agent's %q", boot, a.bootID)
	}
	waitUntil(t, "a long poll at version 1", func() bool {
		site.mu.Lock()
		defer site.mu.Unlock()
		return slices.Contains(site.queries, "boot_id="+a.bootID+"&version=1&wait=25s")
	})

	member.Role, member.Epoch, member.Slot, member.Floating, member.Network = servicemgr.RoleActive, 2, 0, "10.20.0.9/24", "mgmt"
	t0 := time.Now()
	site.set(servicemgr.AgentServices{Version: 2, ControllerEpoch: 1, Host: "host-9", Members: []servicemgr.Assignment{member}})
	waitUntil(t, "web reported active", func() bool {
		m, _, ok := site.lastMember("web")
		return ok && m.State == servicemgr.MemberActive && m.Epoch == 2
	})
	t.Logf("site's change -> agent reports active (long poll, activation, report): %v", time.Since(t0))
	if !plat.Holds("mgmt", "10.20.0.9/24") {
		t.Error("the active member does not hold its floating address")
	}
	if rf := a.svc.Status(); rf.Version != 2 {
		t.Errorf("applied version = %d; want 2", rf.Version)
	}

	stop()
	if plat.Held() != 0 {
		t.Error("the floating address outlived the agent's services")
	}
	site.mu.Lock()
	defer site.mu.Unlock()
	for _, q := range site.queries {
		if q != "boot_id="+a.bootID && !strings.HasPrefix(q, "boot_id="+a.bootID+"&version=") {
			t.Errorf("poll query %q; want the agent's boot_id, then version and wait", q)
		}
	}
}
