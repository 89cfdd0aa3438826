package subcloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/inventory"
)

// EpochFile counts the controller's starts: its epoch, carried by every
// command to agents.
const EpochFile = "controller.epoch"

// nextEpoch reads the last epoch, and records and returns the next.
func nextEpoch(dataDir string) (uint64, error) {
	path := filepath.Join(dataDir, EpochFile)
	var last uint64
	if b, err := os.ReadFile(path); err == nil {
		if last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return 0, fmt.Errorf("subcloud: %s: %w", path, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return last + 1, atomicfile.Write(path, []byte(strconv.FormatUint(last+1, 10)+"\n"), 0o600)
}

// commandTTL is how long a command waits for its agent.
const commandTTL = time.Minute

// agentCommands are commands waiting for their agents' next poll.
type agentCommands struct {
	mu      sync.Mutex
	pending map[string][]inventory.AgentCommand // host UUID -> commands
}

// queue adds a command for a host's agent; it is handed over once.
func (s *Subcloud) queueCommand(hostUUID, action string) inventory.AgentCommand {
	return s.queueCommandWith(hostUUID, action, nil)
}

// queueCommandWith queues a command carrying an install order.
func (s *Subcloud) queueCommandWith(hostUUID, action string, order *inventory.InstallOrder) inventory.AgentCommand {
	id, _ := uuid.NewV7()
	c := inventory.AgentCommand{ID: id.String(), Action: action, Epoch: s.controllerEpoch(), IssuedAt: time.Now().UTC(), Install: order}
	s.cmds.mu.Lock()
	defer s.cmds.mu.Unlock()
	if s.cmds.pending == nil {
		s.cmds.pending = map[string][]inventory.AgentCommand{}
	}
	s.cmds.pending[hostUUID] = append(s.cmds.pending[hostUUID], c)
	return c
}

// agentPoll answers GET /v1/agents/{uuid}/commands: the commands waiting
// for this agent, handed over once.
func (s *Subcloud) agentPoll(r *http.Request) (int, any, error) {
	id := r.Context().Value(agentKey{}).(string)
	s.cmds.mu.Lock()
	waiting := s.cmds.pending[id]
	delete(s.cmds.pending, id)
	s.cmds.mu.Unlock()
	cmds := []inventory.AgentCommand{}
	for _, c := range waiting {
		if time.Since(c.IssuedAt) < commandTTL {
			cmds = append(cmds, c) // older ones were overtaken by the next recovery step
		}
	}
	for _, c := range cmds {
		s.log.Info("command handed to an agent", "machine_id", id, "action", c.Action, "command", c.ID, "epoch", c.Epoch)
	}
	return http.StatusOK, inventory.AgentCommands{Epoch: s.controllerEpoch(), Commands: cmds}, nil
}

// agentReboot asks a host's agent to reboot its host (host management's
// first recovery step, and the operator's graceful reboot).
func (s *Subcloud) agentReboot(_ context.Context, hostUUID string) error {
	s.queueCommand(hostUUID, "reboot")
	return nil
}

// PendingCommands is how many commands wait for a host's agent.
func (s *Subcloud) PendingCommands(hostUUID string) int {
	s.cmds.mu.Lock()
	defer s.cmds.mu.Unlock()
	return len(s.cmds.pending[hostUUID])
}

// withdrawCommands drops the commands a host's agent has not taken yet.
func (s *Subcloud) withdrawCommands(hostUUID string) {
	s.cmds.mu.Lock()
	defer s.cmds.mu.Unlock()
	delete(s.cmds.pending, hostUUID)
}
