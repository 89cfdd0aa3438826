package subcloud_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/faultmgr"
	"github.com/petrel-edge/petrel/internal/rest"
	"github.com/petrel-edge/petrel/internal/server"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// alarmsOn lists the site's active alarms whose entity starts with prefix,
// as "ALARM_ID ENTITY" sorted.
func alarmsOn(t *testing.T, s site, prefix string) ([]string, []faultmgr.Alarm) {
	t.Helper()
	var l rest.List[faultmgr.Alarm]
	if err := s.api.Do(context.Background(), http.MethodGet, "/v1/alarms", url.Values{"entity_instance_id": {prefix}, "limit": {"1000"}}, nil, &l); err != nil {
		t.Fatal(err)
	}
	keys := []string{}
	for _, a := range l.Items {
		keys = append(keys, a.AlarmID+" "+a.EntityInstanceID)
	}
	slices.Sort(keys)
	return keys, l.Items
}

// waitAlarms polls until the active alarms on prefix are want.
func waitAlarms(t *testing.T, s site, prefix string, want ...string) []faultmgr.Alarm {
	t.Helper()
	slices.Sort(want)
	if want == nil {
		want = []string{}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, as := alarmsOn(t, s, prefix)
		if slices.Equal(got, want) {
			return as
		}
		if time.Now().After(deadline) {
			t.Fatalf("alarms on %s = %q; want %q", prefix, got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func TestAgentResourceAlarms(t *testing.T) {
	s := startSite(t, "site-std", inventory.MultiServer)
	plat := agenttest.NewPlatform()
	a := newAgentOn(t, s, s.joinToken(t), "", plat, monitor.Config{Interval: 100 * time.Millisecond,
		CPU: monitor.Threshold{Samples: 2}})
	a.start(t)
	h := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	host := "host=" + h.Name
	ctx := context.Background()
	// Alarms the agent does not own: another subsystem's alarm on this host,
	// and a CPU alarm on a host whose name starts with this one's.
	for _, r := range []server.RaiseRequest{
		{AlarmID: "200.013", EntityInstanceID: host},
		{AlarmID: "100.101", EntityInstanceID: host + "0", Fields: map[string]string{"threshold": "90"}},
	} {
		if err := s.api.Do(ctx, http.MethodPost, "/v1/alarms", nil, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	others := []string{"200.013 " + host, "100.101 " + host + "0"}
	waitAlarms(t, s, host, others...)

	// High CPU: after two readings at 100 ms the site has 100.101.
	start := time.Now()
	plat.SetLoad(95, 10, 10)
	as := waitAlarms(t, s, host, append(others, "100.101 "+host)...)
	t.Logf("100.101 raised at the site %s after the CPU went up", time.Since(start).Round(time.Millisecond))
	for _, al := range as {
		if al.AlarmID == "100.101" && al.EntityInstanceID == host &&
			(al.ReasonText != "CPU usage of "+h.Name+" above 90%" || al.MgmtAffecting != "none" || al.Severity != faultmgr.Major) {
			t.Errorf("100.101 = %+v; want reason %q, major, not management-affecting", al, "CPU usage of "+h.Name+" above 90%")
		}
	}
	if h := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return len(h.ResourceAlarms) == 1 }); h.ResourceAlarms[0].AlarmID != "100.101" {
		t.Errorf("host resource_alarms = %+v; want 100.101", h.ResourceAlarms)
	}
	// Back to low: cleared; the alarms the agent does not own stay.
	plat.SetLoad(5, 10, 10)
	waitAlarms(t, s, host, others...)

	// Memory and the software root's file system.
	plat.SetLoad(5, 95, 95)
	waitAlarms(t, s, host, append(others, "100.103 "+host, "100.104 "+host+".filesystem=software-root")...)
	_, as = alarmsOn(t, s, host+".filesystem=")
	if len(as) != 1 || as[0].ReasonText != "File system /srv/petrel of "+h.Name+" above 90% full" {
		t.Errorf("100.104 = %+v; want the software root's path in the reason", as)
	}

	// Renamed (assigned), the host keeps its resource alarms under its new
	// name at once; the old name keeps only what the agent does not own.
	pers, name := inventory.Worker, "worker-7"
	if err := s.api.Do(ctx, http.MethodPatch, "/v1/hosts/"+h.UUID, nil, subcloud.UpdateHostRequest{Personality: &pers, Hostname: &name}, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := alarmsOn(t, s, "host=worker-7"); !slices.Equal(got, []string{"100.103 host=worker-7", "100.104 host=worker-7.filesystem=software-root"}) {
		t.Errorf("alarms on the new name right after the rename = %q", got)
	}
	if got, _ := alarmsOn(t, s, host); !slices.Equal(got, others) {
		t.Errorf("alarms on the old name after the rename = %q; want %q", got, others)
	}
	plat.SetLoad(5, 10, 95)
	waitAlarms(t, s, "host=worker-7", "100.104 host=worker-7.filesystem=software-root")

	// Deleting the host clears its alarms.
	a.cancel()
	<-a.done
	if err := s.api.Do(ctx, http.MethodDelete, "/v1/hosts/worker-7", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := alarmsOn(t, s, "host=worker-7"); len(got) != 0 {
		t.Errorf("alarms of a deleted host = %q; want none", got)
	}
}

// sendReport PUTs rep as machineID's agent and returns the status and ack.
func sendReport(t *testing.T, hc *http.Client, s site, machineID string, rep inventory.Report) (int, inventory.ReportAck, string) {
	t.Helper()
	b, _ := json.Marshal(rep)
	req, _ := http.NewRequest(http.MethodPut, s.Shell().URL()+"/v1/agents/"+machineID+"/report", bytes.NewReader(b))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ack inventory.ReportAck
	json.Unmarshal(body, &ack)
	return resp.StatusCode, ack, string(body)
}

func TestAgentAlarmsAtTheBoundary(t *testing.T) {
	s := startSite(t, "site-std", inventory.MultiServer)
	a := newAgent(t, s, s.joinToken(t), "")
	b := newAgent(t, s, s.joinToken(t), "")
	a.start(t)
	b.start(t)
	ha := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	hb := waitHost(t, s, b.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	a.cancel() // the test speaks for a's agent from here
	<-a.done
	hc := agentClient(t, s, a.stateDir)
	hostA := "host=" + ha.Name
	cpu := func(res string) inventory.ResourceAlarm {
		return inventory.ResourceAlarm{AlarmID: "100.101", Resource: res, Fields: map[string]string{"threshold": "90"}}
	}
	fsAlarm := inventory.ResourceAlarm{AlarmID: "100.104", Resource: "filesystem=var-log", Fields: map[string]string{"threshold": "85", "filesystem": "/var/log"}}
	gen := uint64(100)
	full := func(alarms ...inventory.ResourceAlarm) inventory.Report {
		return inventory.Report{Full: true, BootID: "boot-1", Generation: gen, Hardware: &inventory.Hardware{Cores: 4}, Alarms: alarms}
	}
	many := make([]inventory.ResourceAlarm, inventory.MaxResourceAlarms+1)
	for i := range many {
		many[i] = inventory.ResourceAlarm{AlarmID: "100.104", Resource: fmt.Sprintf("filesystem=fs%d", i), Fields: map[string]string{"threshold": "90"}}
	}
	for name, tc := range map[string]struct {
		alarms []inventory.ResourceAlarm
		code   int
	}{
		"another host's entity":         {[]inventory.ResourceAlarm{cpu("host=" + hb.Name)}, 403},
		"a host key below the resource": {[]inventory.ResourceAlarm{{AlarmID: "100.104", Resource: "filesystem=x.host=" + hb.Name, Fields: map[string]string{"threshold": "90"}}}, 403},
		"an alarm agents do not own":    {[]inventory.ResourceAlarm{{AlarmID: "200.004", Fields: map[string]string{"threshold": "90"}}}, 400},
		"an unknown alarm":              {[]inventory.ResourceAlarm{{AlarmID: "999.999", Fields: map[string]string{"threshold": "90"}}}, 400},
		"a resource on a CPU alarm":     {[]inventory.ResourceAlarm{cpu("filesystem=root")}, 400},
		"a file system without a name":  {[]inventory.ResourceAlarm{{AlarmID: "100.104", Fields: map[string]string{"threshold": "90"}}}, 400},
		"a malformed file system name":  {[]inventory.ResourceAlarm{{AlarmID: "100.104", Resource: "filesystem=/var", Fields: map[string]string{"threshold": "90"}}}, 400},
		"no threshold":                  {[]inventory.ResourceAlarm{{AlarmID: "100.103"}}, 400},
		"a threshold that is no number": {[]inventory.ResourceAlarm{{AlarmID: "100.103", Fields: map[string]string{"threshold": "high"}}}, 400},
		"a threshold over 100":          {[]inventory.ResourceAlarm{{AlarmID: "100.103", Fields: map[string]string{"threshold": "150"}}}, 400},
		"an unknown field":              {[]inventory.ResourceAlarm{{AlarmID: "100.103", Fields: map[string]string{"threshold": "90", "host": "x"}}}, 400},
		"the same alarm twice":          {[]inventory.ResourceAlarm{cpu(""), cpu("")}, 400},
		"too many":                      {many, 400},
	} {
		code, _, body := sendReport(t, hc, s, a.MachineID(), full(tc.alarms...))
		if code != tc.code {
			t.Errorf("%s: %d %s; want %d", name, code, body, tc.code)
		}
	}
	// Nothing changed: no alarm anywhere, the host's report untouched.
	if got, _ := alarmsOn(t, s, "host="); len(got) != 0 {
		t.Errorf("alarms after refused reports = %q; want none", got)
	}
	var h inventory.Host
	s.api.Do(context.Background(), http.MethodGet, "/v1/hosts/"+a.MachineID(), nil, nil, &h)
	if h.ReportGeneration != ha.ReportGeneration || h.Inventory.Cores != ha.Inventory.Cores {
		t.Errorf("host after refused reports: generation %d, cores %d; want %d, %d", h.ReportGeneration, h.Inventory.Cores, ha.ReportGeneration, ha.Inventory.Cores)
	}

	// Accepted, and again (a retry of the same report): one alarm, one set event.
	for range 2 {
		if code, ack, body := sendReport(t, hc, s, a.MachineID(), full(cpu(""), fsAlarm)); code != 200 || ack.Generation != gen || ack.NeedFull {
			t.Fatalf("full report with alarms: %d %s", code, body)
		}
	}
	waitAlarms(t, s, hostA, "100.101 "+hostA, "100.104 "+hostA+".filesystem=var-log")
	var ev rest.List[faultmgr.Event]
	if err := s.api.Do(context.Background(), http.MethodGet, "/v1/events", url.Values{"entity_instance_id": {hostA}, "type": {"set"}}, nil, &ev); err != nil {
		t.Fatal(err)
	}
	if len(ev.Items) != 2 {
		t.Errorf("set events after a report and its retry = %d; want 2 (one per alarm)", len(ev.Items))
	}
	// A delta that does not continue the site's generation changes nothing.
	stale := inventory.Report{BootID: "boot-1", Generation: gen + 5}
	if code, ack, _ := sendReport(t, hc, s, a.MachineID(), stale); code != 200 || !ack.NeedFull {
		t.Errorf("stale delta: %d %+v; want need_full", code, ack)
	}
	// An older full report (a late duplicate) changes nothing either.
	gen--
	if code, ack, _ := sendReport(t, hc, s, a.MachineID(), full()); code != 200 || ack.Generation != gen+1 {
		t.Errorf("older full report: %d %+v; want the site's generation", code, ack)
	}
	waitAlarms(t, s, hostA, "100.101 "+hostA, "100.104 "+hostA+".filesystem=var-log")
	// The next delta asserts only the file system: the CPU alarm clears.
	gen += 2
	if code, ack, body := sendReport(t, hc, s, a.MachineID(), inventory.Report{BootID: "boot-1", Generation: gen, Alarms: []inventory.ResourceAlarm{fsAlarm}}); code != 200 || ack.NeedFull {
		t.Fatalf("delta: %d %s", code, body)
	}
	waitAlarms(t, s, hostA, "100.104 "+hostA+".filesystem=var-log")
	// A new boot's full report with no alarms clears the rest.
	gen = 1
	if code, _, body := sendReport(t, hc, s, a.MachineID(), inventory.Report{Full: true, BootID: "boot-2", Generation: 1, Hardware: &inventory.Hardware{Cores: 4}}); code != 200 {
		t.Fatalf("new boot: %d %s", code, body)
	}
	waitAlarms(t, s, hostA)
	// b's host never got any alarm.
	if got, _ := alarmsOn(t, s, "host="+hb.Name); len(got) != 0 {
		t.Errorf("alarms on the other host = %q; want none", got)
	}
	if !strings.HasPrefix(hb.Name, "unprovisioned-") {
		t.Errorf("host b = %q", hb.Name)
	}
}

// TestResourceAlarmsAreInTheCatalogue: every alarm an agent may assert can
// be raised.
func TestResourceAlarmsAreInTheCatalogue(t *testing.T) {
	cat, err := faultmgr.LoadCatalog(faultmgr.EmbeddedCatalog())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{inventory.AlarmCPU, inventory.AlarmMemory, inventory.AlarmFilesystem} {
		d, ok := cat.Lookup(id)
		if !ok || d.Entity != "host" || d.MgmtAffecting != "none" {
			t.Errorf("catalogue %s = %+v, %v; want a host alarm, not management-affecting", id, d, ok)
		}
	}
}
