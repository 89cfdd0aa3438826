package swpatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// Slots is a host's software root with two software slots (brief §6):
//
//	ROOT/sw/a, ROOT/sw/b   the slots; each has bin/petrel and slot.json
//	ROOT/active            the slot the host boots
//	ROOT/next              the slot to boot once next time (an install marks it)
//	ROOT/trial.json        written at the boot that switched slots; the
//	                       agent removes it once the host is back at its
//	                       site (Confirm); the chassis rolls back if it stays
//	ROOT/rollback.json     what the last rollback undid (until the next install)
//
// The agent installs (Stage, InService, Confirm); the chassis boots
// (SelectBoot, Rollback). Every write is inside ROOT.
type Slots struct{ Root string }

// SlotNames are the two slots.
var SlotNames = [2]string{"a", "b"}

// SlotInfo is a slot's own record, sw/X/slot.json.
type SlotInfo struct {
	Version     string    `json:"version,omitempty"` // "" : the version built into its binary
	Patches     []string  `json:"patches"`
	InstalledAt time.Time `json:"installed_at,omitzero"`
}

// Trial is the record of a boot into a newly installed slot.
type Trial struct {
	Slot     string    `json:"slot"`
	Previous string    `json:"previous"`
	Since    time.Time `json:"since"`
}

// RollbackInfo records a rollback the chassis made.
type RollbackInfo struct {
	From    string    `json:"from_slot"`
	To      string    `json:"to_slot"`
	Version string    `json:"version"` // of the slot rolled back from
	Patches []string  `json:"patches"` // of the slot rolled back from
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}

// Status is what a host reports about its software.
type Status struct {
	Slot        string        `json:"slot"`
	Version     string        `json:"version,omitempty"`
	Patches     []string      `json:"patches"`
	NextSlot    string        `json:"next_slot,omitempty"`
	NextVersion string        `json:"next_version,omitempty"`
	NextPatches []string      `json:"next_patches,omitempty"`
	Trial       bool          `json:"trial,omitempty"`
	Rollback    *RollbackInfo `json:"rollback,omitempty"`
	// Failed names the patch whose last install failed here, and why.
	Failed       string `json:"failed,omitempty"`
	FailedReason string `json:"failed_reason,omitempty"`
}

func (s Slots) f(rel string) string { return filepath.Join(s.Root, rel) }

// SlotDir is the directory of slot name.
func (s Slots) SlotDir(name string) string { return filepath.Join(s.Root, "sw", name) }

func validSlot(name string) bool { return slices.Contains(SlotNames[:], name) }

func other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

func (s Slots) readMarker(name string) (string, error) {
	b, err := os.ReadFile(s.f(name))
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if !validSlot(v) {
		return "", fmt.Errorf("swpatch: %s names no slot: %q", s.f(name), v)
	}
	return v, nil
}

// Active is the slot the host boots; "a" when none is marked.
func (s Slots) Active() (string, error) {
	v, err := s.readMarker("active")
	if errors.Is(err, fs.ErrNotExist) {
		return "a", nil
	}
	return v, err
}

// Next is the slot marked for the next boot, "" if none.
func (s Slots) Next() (string, error) {
	v, err := s.readMarker("next")
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	return v, err
}

// Info reads slot name's record (an empty one when it has none).
func (s Slots) Info(name string) (SlotInfo, error) {
	info := SlotInfo{Patches: []string{}}
	b, err := os.ReadFile(filepath.Join(s.SlotDir(name), SlotFile))
	if errors.Is(err, fs.ErrNotExist) {
		return info, nil
	}
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("swpatch: slot %s: %w", name, err)
	}
	if info.Patches == nil {
		info.Patches = []string{}
	}
	return info, nil
}

func (s Slots) writeInfo(name string, info SlotInfo) error {
	b, _ := json.MarshalIndent(info, "", "  ")
	return atomicfile.Write(filepath.Join(s.SlotDir(name), SlotFile), append(b, '\n'), 0o644)
}

// Trial returns the record of a boot not yet confirmed, or nil.
func (s Slots) Trial() (*Trial, error) {
	var t Trial
	if err := readJSON(s.f("trial.json"), &t); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &t, nil
}

// Rollback returns the last rollback's record, or nil.
func (s Slots) LastRollback() (*RollbackInfo, error) {
	var r RollbackInfo
	if err := readJSON(s.f("rollback.json"), &r); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return &r, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func writeJSON(path string, v any) error {
	b, _ := json.MarshalIndent(v, "", "  ")
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// Status reads what the host reports.
func (s Slots) Status() (Status, error) {
	var st Status
	var err error
	if st.Slot, err = s.Active(); err != nil {
		return st, err
	}
	info, err := s.Info(st.Slot)
	if err != nil {
		return st, err
	}
	st.Version, st.Patches = info.Version, info.Patches
	if st.NextSlot, err = s.Next(); err != nil {
		return st, err
	}
	if st.NextSlot != "" {
		ni, err := s.Info(st.NextSlot)
		if err != nil {
			return st, err
		}
		st.NextVersion, st.NextPatches = ni.Version, ni.Patches
	}
	t, err := s.Trial()
	if err != nil {
		return st, err
	}
	st.Trial = t != nil
	if st.Rollback, err = s.LastRollback(); err != nil {
		return st, err
	}
	var f struct{ Patch, Reason string }
	if err := readJSON(s.f("failed.json"), &f); err == nil {
		st.Failed, st.FailedReason = f.Patch, f.Reason
	}
	return st, nil
}

// HookRunner runs a patch's hook (argv, its first element a path inside
// dir) in dir.
type HookRunner func(ctx context.Context, dir string, argv []string) error

// RunHook is the default HookRunner: the command, in the slot, with a
// 60 s limit and PETREL_SLOT_DIR set; its output is returned on failure.
func RunHook(ctx context.Context, dir string, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, argv[0]), argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PETREL_SLOT_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("hook %s: %w: %s", argv[0], err, strings.TrimSpace(string(tail(out, 512))))
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Stage installs patches (verified, in the order given: requirements
// first) for the next boot: the active slot is copied to the inactive
// one, each patch's files are unpacked into it and checked against their
// checksums, its pre-check runs, the slot's record names the patches and
// the last one's version, and the slot is marked next. A failure leaves
// the active slot and markers as they were (and records the failure).
func (s Slots) Stage(ctx context.Context, patches []*Patch, lim Limits, run HookRunner, now time.Time) (err error) {
	if len(patches) == 0 {
		return errors.New("swpatch: nothing to install")
	}
	failing := patches[0].Manifest.ID // the patch a failure is charged to
	defer func() { s.recordFailure(failing, err) }()
	active, err := s.Active()
	if err != nil {
		return err
	}
	target := other(active)
	info, err := s.Info(active)
	if err != nil {
		return err
	}
	// A slot about to be rewritten is never one the host may boot.
	if err := s.clearMarker("next"); err != nil {
		return err
	}
	if err := copySlot(s.SlotDir(active), s.SlotDir(target)); err != nil {
		return fmt.Errorf("swpatch: copying slot %s to %s: %w", active, target, err)
	}
	root, err := os.OpenRoot(s.SlotDir(target))
	if err != nil {
		return err
	}
	defer root.Close()
	for _, p := range patches {
		failing = p.Manifest.ID
		if err := p.Extract(root, lim); err != nil {
			return fmt.Errorf("patch %s: %w", p.Manifest.ID, err)
		}
		if err := CheckFiles(root, p.Manifest); err != nil {
			return fmt.Errorf("patch %s: %w", p.Manifest.ID, err)
		}
		if len(p.Manifest.PreCheck) > 0 && run != nil {
			if err := run(ctx, s.SlotDir(target), p.Manifest.PreCheck); err != nil {
				return fmt.Errorf("patch %s: pre-check: %w", p.Manifest.ID, err)
			}
		}
		if !slices.Contains(info.Patches, p.Manifest.ID) {
			info.Patches = append(info.Patches, p.Manifest.ID)
		}
		info.Version = p.Manifest.Version
	}
	info.InstalledAt = now.UTC()
	if err := s.writeInfo(target, info); err != nil {
		return err
	}
	if err := atomicfile.Write(s.f("next"), []byte(target+"\n"), 0o644); err != nil {
		return err
	}
	os.Remove(s.f("rollback.json")) // a new install supersedes the last rollback
	for _, p := range patches {
		failing = p.Manifest.ID
		if len(p.Manifest.PostInstall) > 0 && run != nil {
			if err := run(ctx, s.SlotDir(target), p.Manifest.PostInstall); err != nil {
				_ = s.clearMarker("next") // the host keeps booting what it runs
				return fmt.Errorf("patch %s: post-install: %w", p.Manifest.ID, err)
			}
		}
	}
	return nil
}

// InService installs a patch that needs no reboot into the running slot:
// files unpacked and checked, the pre-check, the slot's record, then the
// post-install hook, with nothing restarted.
func (s Slots) InService(ctx context.Context, p *Patch, lim Limits, run HookRunner, now time.Time) (err error) {
	if p.Manifest.RebootRequired {
		return fmt.Errorf("patch %s needs a reboot: %w", p.Manifest.ID, ErrInvalidManifest)
	}
	defer func() { s.recordFailure(p.Manifest.ID, err) }()
	active, err := s.Active()
	if err != nil {
		return err
	}
	info, err := s.Info(active)
	if err != nil {
		return err
	}
	root, err := os.OpenRoot(s.SlotDir(active))
	if err != nil {
		return err
	}
	defer root.Close()
	if err := p.Extract(root, lim); err != nil {
		return fmt.Errorf("patch %s: %w", p.Manifest.ID, err)
	}
	if err := CheckFiles(root, p.Manifest); err != nil {
		return fmt.Errorf("patch %s: %w", p.Manifest.ID, err)
	}
	if len(p.Manifest.PreCheck) > 0 && run != nil {
		if err := run(ctx, s.SlotDir(active), p.Manifest.PreCheck); err != nil {
			return fmt.Errorf("patch %s: pre-check: %w", p.Manifest.ID, err)
		}
	}
	if !slices.Contains(info.Patches, p.Manifest.ID) {
		info.Patches = append(info.Patches, p.Manifest.ID)
	}
	info.Version, info.InstalledAt = p.Manifest.Version, now.UTC()
	if err := s.writeInfo(active, info); err != nil {
		return err
	}
	if len(p.Manifest.PostInstall) > 0 && run != nil {
		if err := run(ctx, s.SlotDir(active), p.Manifest.PostInstall); err != nil {
			return fmt.Errorf("patch %s: post-install: %w", p.Manifest.ID, err)
		}
	}
	return nil
}

// StageRemoval marks for the next boot the other slot when it holds the
// software without the patches named (the slot the host ran before
// installing them). Removing a patch is going back to that slot.
func (s Slots) StageRemoval(remove []string) error {
	active, err := s.Active()
	if err != nil {
		return err
	}
	cur, err := s.Info(active)
	if err != nil {
		return err
	}
	prev := other(active)
	pi, err := s.Info(prev)
	if err != nil {
		return err
	}
	for _, id := range remove {
		if slices.Contains(pi.Patches, id) {
			return fmt.Errorf("swpatch: slot %s holds patch %s too; no slot without it to go back to", prev, id)
		}
	}
	for _, id := range pi.Patches {
		if !slices.Contains(cur.Patches, id) {
			return fmt.Errorf("swpatch: slot %s holds patch %s, which this host does not run", prev, id)
		}
	}
	if _, err := os.Stat(filepath.Join(s.SlotDir(prev), BinaryPath)); err != nil {
		return fmt.Errorf("swpatch: slot %s has no software: %w", prev, err)
	}
	return atomicfile.Write(s.f("next"), []byte(prev+"\n"), 0o644)
}

// recordFailure keeps the last install's failure (failed.json), charged
// to patch id; a success removes it.
func (s Slots) recordFailure(id string, err error) {
	if err == nil {
		os.Remove(s.f("failed.json"))
		return
	}
	_ = writeJSON(s.f("failed.json"), map[string]string{"patch": id, "reason": err.Error()})
}

func (s Slots) clearMarker(name string) error {
	if err := os.Remove(s.f(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// SelectBoot is the chassis' boot loader: it names the slot to boot and
// whether this boot is a trial. A slot marked next becomes active (the
// previous one recorded in trial.json); a trial still unconfirmed at a
// new boot failed, so the previous slot is booted (a rollback).
func (s Slots) SelectBoot(now time.Time) (slot string, trial bool, err error) {
	t, err := s.Trial()
	if err != nil {
		return "", false, err
	}
	if t != nil {
		if err := s.Rollback("the host booted again before its new slot was confirmed", now); err != nil {
			return "", false, err
		}
	}
	active, err := s.Active()
	if err != nil {
		return "", false, err
	}
	nxt, err := s.Next()
	if err != nil {
		return "", false, err
	}
	if nxt == "" || nxt == active && t == nil {
		return active, false, s.clearMarker("next")
	}
	if err := writeJSON(s.f("trial.json"), Trial{Slot: nxt, Previous: active, Since: now.UTC()}); err != nil {
		return "", false, err
	}
	if err := atomicfile.Write(s.f("active"), []byte(nxt+"\n"), 0o644); err != nil {
		return "", false, err
	}
	return nxt, true, s.clearMarker("next")
}

// Confirm ends a trial: the host runs its new slot and stays on it.
func (s Slots) Confirm() (bool, error) {
	t, err := s.Trial()
	if err != nil || t == nil {
		return false, err
	}
	return true, s.clearMarker("trial.json")
}

// Rollback makes the trial's previous slot active again and records why
// (rollback.json). Without a trial it does nothing.
func (s Slots) Rollback(reason string, now time.Time) error {
	t, err := s.Trial()
	if err != nil || t == nil {
		return err
	}
	info, err := s.Info(t.Slot)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(s.f("active"), []byte(t.Previous+"\n"), 0o644); err != nil {
		return err
	}
	if err := writeJSON(s.f("rollback.json"), RollbackInfo{From: t.Slot, To: t.Previous, Version: info.Version,
		Patches: info.Patches, Reason: reason, At: now.UTC()}); err != nil {
		return err
	}
	if err := s.clearMarker("next"); err != nil {
		return err
	}
	return s.clearMarker("trial.json")
}

// copySlot replaces dst with a copy of src: regular files and directories
// (links are not copied), bytes copied, not linked, so that changing one
// slot never changes the other.
func copySlot(src, dst string) error {
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || rel == "." {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			return copyFile(p, target, fi.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Clone returns a deep copy of st.
func (st Status) Clone() Status {
	st.Patches = slices.Clone(st.Patches)
	st.NextPatches = slices.Clone(st.NextPatches)
	if st.Rollback != nil {
		r := *st.Rollback
		r.Patches = slices.Clone(r.Patches)
		st.Rollback = &r
	}
	return st
}
