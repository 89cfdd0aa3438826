package subcloud_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/agenttest"
	"github.com/petrel-edge/petrel/agent/monitor"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/subcloud"
)

// TestAgentRebootCommand: a graceful reboot of a locked host goes to its
// agent, which carries it out once; an agent that has seen a newer
// controller epoch refuses commands of an older one.
func TestAgentRebootCommand(t *testing.T) {
	s := startSite(t, "site-cmd", inventory.MultiServer)
	plat := agenttest.NewPlatform()
	a := newAgentOn(t, s, s.joinToken(t), "", plat, monitor.Config{})
	a.start(t)
	h := waitHost(t, s, a.MachineID(), func(h inventory.Host) bool { return h.Inventory.Cores > 0 })
	ctx := context.Background()
	if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/"+h.UUID+"/action", nil, subcloud.HostActionRequest{Action: "reboot"}, nil); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); plat.Reboots() == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if n := plat.Reboots(); n != 1 {
		t.Fatalf("the agent rebooted %d times; want once", n)
	}

	// An agent that saw a newer epoch (another controller took over)
	// refuses this controller's commands.
	a.cancel()
	<-a.done
	os.WriteFile(filepath.Join(a.stateDir, "controller.epoch"), []byte("1000\n"), 0o600)
	b := newAgentOn(t, s, "", a.stateDir, plat, monitor.Config{})
	b.start(t)
	handed := func() {
		t.Helper()
		if err := s.api.Do(ctx, http.MethodPost, "/v1/hosts/"+h.UUID+"/action", nil, subcloud.HostActionRequest{Action: "reboot"}, nil); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); s.PendingCommands(h.UUID) > 0; {
			if time.Now().After(deadline) {
				t.Fatal("the agent never took its command")
			}
			time.Sleep(10 * time.Millisecond) // polling with a deadline
		}
	}
	// Two in turn: the agent polls one at a time, so once the second is
	// taken the first has been dealt with.
	handed()
	handed()
	if n := plat.Reboots(); n != 1 {
		t.Errorf("a command of an older epoch was carried out (%d reboots)", n)
	}
}
