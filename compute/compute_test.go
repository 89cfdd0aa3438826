package compute

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewOverlay(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img is not installed; scripts/test.sh installs qemu-utils")
		}
		t.Skip(err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	overlay := filepath.Join(dir, "inst", "disk.qcow2")
	if err := NewOverlay(ctx, base, overlay); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", "-U", overlay).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info: %v: %s", err, out)
	}
	for _, want := range []string{"file format: qcow2", "backing file: " + base, "backing file format: raw"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("qemu-img info lacks %q:\n%s", want, out)
		}
	}
	if err := NewOverlay(ctx, base, overlay); !errors.Is(err, os.ErrExist) {
		t.Errorf("NewOverlay over an existing overlay = %v; want ErrExist", err)
	}
	// A qcow2 base is detected as such.
	over2 := filepath.Join(dir, "inst2", "disk.qcow2")
	if err := NewOverlay(ctx, overlay, over2); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command("qemu-img", "info", "-U", over2).CombinedOutput()
	if !strings.Contains(string(out), "backing file format: qcow2") {
		t.Errorf("overlay on a qcow2 base:\n%s", out)
	}
	if err := NewOverlay(ctx, "rel.raw", overlay+"x"); err == nil {
		t.Error("NewOverlay with a relative base succeeded")
	}
}
