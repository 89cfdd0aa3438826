package subcloud_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent"
	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server/servertest"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

type site struct {
	*subcloud.Subcloud
	api *client.Client
}

func startSite(t *testing.T, name string, shape inventory.Shape) site {
	t.Helper()
	s, err := subcloud.New(context.Background(), subcloud.Config{Site: name, Shape: shape, Shell: servertest.Shell(t)})
	if err != nil {
		t.Fatal(err)
	}
	servertest.Start(t, s)
	return site{s, servertest.Client(t, s, servertest.AdminToken(t, s))}
}

func (s site) joinToken(t *testing.T) string {
	t.Helper()
	var it subcloud.IssuedJoinToken
	if err := s.api.Do(context.Background(), http.MethodPost, "/v1/join-tokens", nil, subcloud.CreateJoinTokenRequest{Description: "test"}, &it); err != nil {
		t.Fatal(err)
	}
	return it.Token
}

type testAgent struct {
	*agent.Agent
	stateDir, sysRoot string
	done              chan struct{} // closed when Run returns
	cancel            context.CancelFunc
}

// newAgent builds an agent for s with its own state dir and fake machine.
func newAgent(t *testing.T, s site, token string, stateDir string) *testAgent {
	t.Helper()
	return newAgentOn(t, s, token, stateDir, agenttest.NewPlatform(), monitor.Config{})
}

// newAgentOn builds an agent for s on platform plat, its monitors
// configured by mon.
func newAgentOn(t *testing.T, s site, token string, stateDir string, plat agent.Platform, mon monitor.Config) *testAgent {
	return newAgentKey(t, s, token, stateDir, plat, mon, nil)
}

// newAgentKey is newAgentOn with a trusted patch key.
func newAgentKey(t *testing.T, s site, token string, stateDir string, plat agent.Platform, mon monitor.Config, key ed25519.PublicKey) *testAgent {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	tokFile := filepath.Join(t.TempDir(), "join.token")
	os.WriteFile(tokFile, []byte(token+"\n"), 0o600)
	root := agenttest.SysRoot(t)
	a, err := agent.New(agent.Config{SiteURL: s.Shell().URL(), CACert: s.Shell().CACert, JoinTokenFile: tokFile,
		StateDir: stateDir, DMIPath: "/nonexistent", SysRoot: root, Platform: plat, Version: "test-1",
		Logger: servertest.Logger(t), CheckInterval: 50 * time.Millisecond, Monitor: mon, PatchPublicKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return &testAgent{Agent: a, stateDir: stateDir, sysRoot: root}
}

func (a *testAgent) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func() {
		defer close(a.done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent Run() = %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-a.done })
}

// waitHost polls the site's API until cond holds for the agent's host.
func waitHost(t *testing.T, s site, id string, cond func(inventory.Host) bool) inventory.Host {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var h inventory.Host
	for time.Now().Before(deadline) {
		err := s.api.Do(context.Background(), http.MethodGet, "/v1/hosts/"+id, nil, nil, &h)
		if err == nil && cond(h) {
			return h
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline, not waiting a fixed time
	}
	t.Fatalf("host %s never reached the expected state; last %+v", id, h)
	return h
}

func TestAgentJoinsAndIsInventoried(t *testing.T) {
	s := startSite(t, "site-std", inventory.MultiServer)
	a := newAgent(t, s, s.joinToken(t), "")
	start := time.Now()
	a.start(t)
	h := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	t.Logf("new host inventoried %s after the agent started", time.Since(start))
	if h.Provisioning != inventory.Unprovisioned || h.Personality != "" || h.Administrative != inventory.Locked ||
		h.Availability != inventory.Online || h.SoftwareVersion != "test-1" {
		t.Errorf("discovered host = %+v; want unprovisioned, no personality, locked, online", h)
	}
	if h.Inventory.NUMANodes != 2 || len(h.Inventory.NICs) != 2 || h.Inventory.NICs[1].MAC != "52:54:00:aa:00:01" || len(h.Inventory.PCI) != 1 {
		t.Errorf("inventory = %+v", h.Inventory)
	}
	// The key never left the agent; state files are private.
	for _, f := range []string{"host.key", "host.crt", "machine-id"} {
		if fi, err := os.Stat(filepath.Join(a.stateDir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	// A change on the machine reaches the site as a delta.
	agenttest.Write(t, a.sysRoot, "sys/class/net/data0/address", "52:54:00:cc:00:01")
	waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return len(h.Inventory.NICs) == 3 })

	// Assign it a personality and a name (StarlingX host-update).
	var assigned inventory.Host
	pers := inventory.Worker
	name := "worker-2"
	if err := s.api.Do(context.Background(), http.MethodPatch, "/v1/hosts/"+h.UUID, nil,
		subcloud.UpdateHostRequest{Personality: &pers, Hostname: &name}, &assigned); err != nil {
		t.Fatal(err)
	}
	if assigned.Name != "worker-2" || assigned.Personality != inventory.Worker || assigned.Provisioning != inventory.Provisioned ||
		len(assigned.Subfunctions) != 1 {
		t.Errorf("assigned host = %+v", assigned)
	}
	// Reports keep flowing to the renamed host.
	agenttest.Write(t, a.sysRoot, "sys/class/net/data1/address", "52:54:00:cc:00:02")
	waitHost(t, s, "worker-2", func(h inventory.Host) bool { return len(h.Inventory.NICs) == 4 })
}

func TestJoinRefusals(t *testing.T) {
	s := startSite(t, "site-sx", inventory.Simplex)
	ctx := context.Background()
	count := func() int {
		var l rest.List[inventory.Host]
		if err := s.api.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &l); err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	tok := s.joinToken(t)
	first := newAgent(t, s, tok, "")
	first.start(t)
	<-first.Joined()
	// The same token again: refused, nothing recorded, the agent gives up.
	second := newAgent(t, s, tok, "")
	if err := second.Run(ctx); err == nil || !bytes.Contains([]byte(err.Error()), []byte("401")) {
		t.Errorf("join with a used token: %v; want a refusal (401)", err)
	}
	if n := count(); n != 1 {
		t.Errorf("hosts after a refused join = %d; want 1", n)
	}
	// Garbage and malformed requests.
	hc := servertest.HTTPClient(t, s)
	for name, body := range map[string]string{
		"unknown token": `{"join_token":"pj_nope","machine_id":"6e0ad5f4-7c1b-4d3e-9a7b-2f1e0c9d8b7a","csr":"x"}`,
		"bad machine":   `{"join_token":"` + s.joinToken(t) + `","machine_id":"not-a-uuid","csr":"x"}`,
		"bad csr":       `{"join_token":"` + s.joinToken(t) + `","machine_id":"6e0ad5f4-7c1b-4d3e-9a7b-2f1e0c9d8b7a","csr":"x"}`,
	} {
		resp, err := hc.Post(s.Shell().URL()+"/v1/join", "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 && resp.StatusCode != 401 {
			t.Errorf("%s: %d; want 400 or 401", name, resp.StatusCode)
		}
	}
	if n := count(); n != 1 {
		t.Errorf("hosts after refused joins = %d; want 1", n)
	}
	// Join tokens are listed without secrets, and the used one says by whom.
	var toks rest.List[inventory.JoinToken]
	if err := s.api.Do(ctx, http.MethodGet, "/v1/join-tokens", nil, nil, &toks); err != nil {
		t.Fatal(err)
	}
	used := 0
	for _, jt := range toks.Items {
		if jt.UsedAt != nil && jt.UsedBy == first.MachineID() {
			used++
		}
	}
	if used != 1 {
		t.Errorf("join tokens = %+v; want exactly one used by %s", toks.Items, first.MachineID())
	}
}

// agentClient is an HTTP client holding an agent's certificate.
func agentClient(t *testing.T, s site, stateDir string) *http.Client {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "host.crt"), filepath.Join(stateDir, "host.key"))
	if err != nil {
		t.Fatal(err)
	}
	hc := servertest.HTTPClient(t, s)
	tr := hc.Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.Certificates = []tls.Certificate{pair}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func putReport(t *testing.T, hc *http.Client, s site, machineID string) (int, string) {
	t.Helper()
	b, _ := json.Marshal(inventory.Report{Full: true, BootID: "x", Generation: 99, Hardware: &inventory.Hardware{Cores: 1}})
	req, _ := http.NewRequest(http.MethodPut, s.Shell().URL()+"/v1/agents/"+machineID+"/report", bytes.NewReader(b))
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestAgentCertificatesAreBound(t *testing.T) {
	s := startSite(t, "site-std", inventory.MultiServer)
	a := newAgent(t, s, s.joinToken(t), "")
	b := newAgent(t, s, s.joinToken(t), "")
	a.start(t)
	b.start(t)
	<-a.Joined()
	<-b.Joined()
	waitHost(t, s, b.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	hcA := agentClient(t, s, a.stateDir)
	if code, _ := putReport(t, hcA, s, a.MachineID()); code != 200 {
		t.Errorf("A reports as A: %d; want 200", code)
	}
	// A host presenting its certificate for another host is refused.
	if code, body := putReport(t, hcA, s, b.MachineID()); code != 403 {
		t.Errorf("A reports as B: %d %s; want 403", code, body)
	}
	// No certificate: 401. Operators' tokens do not open the agent API.
	if code, _ := putReport(t, servertest.HTTPClient(t, s), s, a.MachineID()); code != 401 {
		t.Errorf("report without a certificate: %d; want 401", code)
	}
	// A certificate from another site's agent CA is not accepted at this one.
	other := startSite(t, "site-dx", inventory.Duplex)
	c := newAgent(t, other, other.joinToken(t), "")
	c.start(t)
	<-c.Joined()
	if code, _ := putReport(t, agentClient(t, s, c.stateDir), s, c.MachineID()); code == 200 {
		t.Error("another site's host certificate was accepted")
	}
	// Deleting a host revokes its certificate at once.
	if err := s.api.Do(context.Background(), http.MethodDelete, "/v1/hosts/"+a.MachineID(), nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if code, _ := putReport(t, hcA, s, a.MachineID()); code != 401 {
		t.Errorf("report with a deleted host's certificate: %d; want 401", code)
	}
}

func TestAgentRestartKeepsIdentity(t *testing.T) {
	s := startSite(t, "site-sx", inventory.Simplex)
	state := t.TempDir()
	a := newAgent(t, s, s.joinToken(t), state)
	a.start(t)
	waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	a.cancel()
	<-a.done
	// Restarted with no usable join token: it uses its certificate.
	b := newAgent(t, s, "pj_spent", state)
	if b.MachineID() != a.MachineID() {
		t.Fatalf("machine id changed across restart: %s -> %s", a.MachineID(), b.MachineID())
	}
	b.start(t)
	<-b.Joined()
	h := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.ReportGeneration >= 1 && h.BootID != "" })
	var l rest.List[inventory.Host]
	s.api.Do(context.Background(), http.MethodGet, "/v1/hosts", nil, nil, &l)
	if len(l.Items) != 1 || h.UUID != a.MachineID() {
		t.Errorf("after restart: %d hosts; want the one host, unchanged identity", len(l.Items))
	}
}

func TestUpdateHostBadInput(t *testing.T) {
	s := startSite(t, "site-sx", inventory.Simplex)
	a := newAgent(t, s, s.joinToken(t), "")
	a.start(t)
	<-a.Joined()
	waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	ctx := context.Background()
	patch := func(id string, body any) error {
		return s.api.Do(ctx, http.MethodPatch, "/v1/hosts/"+id, nil, body, nil)
	}
	for name, tc := range map[string]struct {
		id   string
		body any
		kind error
	}{
		"unknown host":        {"ghost-9", map[string]string{"personality": "worker"}, errs.NotFound},
		"invalid personality": {a.MachineID(), map[string]string{"personality": "router"}, errs.Invalid},
		"invalid hostname":    {a.MachineID(), map[string]string{"personality": "worker", "hostname": "Worker 2"}, errs.Invalid},
		"unknown field":       {a.MachineID(), map[string]string{"rack": "r1"}, errs.Invalid},
		"nothing":             {a.MachineID(), map[string]string{}, errs.Invalid},
	} {
		if err := patch(tc.id, tc.body); !errors.Is(err, tc.kind) {
			t.Errorf("%s: %v; want %v", name, err, tc.kind)
		}
	}
	var h inventory.Host
	s.api.Do(ctx, http.MethodGet, "/v1/hosts/"+a.MachineID(), nil, nil, &h)
	if h.Provisioning != inventory.Unprovisioned || h.Personality != "" {
		t.Errorf("host after refused updates = %+v; want unchanged", h)
	}
	// The simplex controller is all-in-one.
	if err := patch(a.MachineID(), map[string]string{"personality": "controller", "hostname": "controller-0"}); err != nil {
		t.Fatal(err)
	}
	s.api.Do(ctx, http.MethodGet, "/v1/hosts/controller-0", nil, nil, &h)
	if len(h.Subfunctions) != 2 || h.Subfunctions[1] != "worker" {
		t.Errorf("simplex controller subfunctions = %v; want controller, worker", h.Subfunctions)
	}
	if err := patch("controller-0", map[string]string{"personality": "worker"}); !errors.Is(err, errs.InvalidTransition) {
		t.Errorf("changing an assigned personality: %v; want invalid_transition", err)
	}
}
