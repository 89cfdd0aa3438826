package version

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSlotVersion(t *testing.T) {
	slot := filepath.Join(t.TempDir(), "sw", "b")
	bin := filepath.Join(slot, "bin", "petrel")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := SlotVersion(bin); got != "" {
		t.Errorf("SlotVersion without a record = %q; want empty", got)
	}
	os.WriteFile(filepath.Join(slot, "slot.json"), []byte(`{"version":"0.1.0-dev+P1","patches":["P1"]}`), 0o644)
	if got := SlotVersion(bin); got != "0.1.0-dev+P1" {
		t.Errorf("SlotVersion = %q; want 0.1.0-dev+P1", got)
	}
	if got := SlotVersion(filepath.Join(slot, "petrel")); got != "" {
		t.Errorf("SlotVersion of a binary outside a bin directory = %q; want empty", got)
	}
}
