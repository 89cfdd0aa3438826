package agent

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/inventory"
)

// epochFile keeps the newest controller epoch the agent has seen.
const epochFile = "controller.epoch"

func (a *Agent) loadEpoch() uint64 {
	b, err := os.ReadFile(filepath.Join(a.cfg.StateDir, epochFile))
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

func (a *Agent) seeEpoch(n uint64) {
	if n <= a.epoch {
		return
	}
	a.epoch = n
	if err := atomicfile.Write(filepath.Join(a.cfg.StateDir, epochFile), []byte(strconv.FormatUint(n, 10)+"\n"), 0o600); err != nil {
		a.log.Warn("recording the controller's epoch failed", "err", err)
	}
}

// poll takes the site's commands for this host and carries them out. A
// command from an older controller epoch than one already seen is refused
// (a controller that lost its role cannot act through agents), and one
// issued before this boot was overtaken by it.
func (a *Agent) poll(ctx context.Context) error {
	var got inventory.AgentCommands
	if err := a.do(ctx, http.MethodGet, "/v1/agents/"+a.machineID+"/commands", nil, &got); err != nil {
		return err
	}
	booted := a.cfg.Platform.BootedAt()
	for _, c := range got.Commands {
		switch {
		case c.Epoch < a.epoch:
			a.log.Warn("refused a command from an older controller epoch", "command", c.ID, "action", c.Action, "epoch", c.Epoch, "seen", a.epoch)
			continue
		case c.IssuedAt.Before(booted):
			a.log.Info("skipped a command issued before this boot", "command", c.ID, "action", c.Action)
			continue
		}
		a.seeEpoch(c.Epoch)
		switch c.Action {
		case "reboot":
			a.log.Warn("rebooting the host, as the site asks", "command", c.ID)
			if err := a.cfg.Platform.Reboot(ctx); err != nil {
				a.log.Error("reboot failed", "command", c.ID, "err", err)
			}
		case "install":
			if c.Install == nil {
				a.log.Warn("ignored an install command without an order", "command", c.ID)
				continue
			}
			a.install(ctx, c.ID, *c.Install)
		default:
			a.log.Warn("ignored an unknown command", "command", c.ID, "action", c.Action)
		}
	}
	a.seeEpoch(got.Epoch)
	return nil
}
