package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/inventory"
)

// DMIProductUUID is where Linux exposes the board's product UUID.
const DMIProductUUID = "/sys/class/dmi/id/product_uuid"

// MachineID returns the machine's identity: the DMI product UUID when the
// board has a real one, else a UUID generated at first start and kept in
// stateDir/machine-id. The lab writes that file for each host.
func MachineID(stateDir, dmiPath string) (string, error) {
	kept := filepath.Join(stateDir, "machine-id")
	if b, err := os.ReadFile(kept); err == nil {
		id := strings.ToLower(strings.TrimSpace(string(b)))
		if err := inventory.ValidateMachineID("machine-id", id); err != nil {
			return "", fmt.Errorf("agent: %s: %w", kept, err)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if dmiPath != "" {
		if b, err := os.ReadFile(dmiPath); err == nil {
			id := strings.ToLower(strings.TrimSpace(string(b)))
			if inventory.ValidateMachineID("dmi", id) == nil {
				return id, nil
			}
		}
	}
	id := uuid.NewString()
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return "", err
	}
	if err := atomicfile.Write(kept, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}
