package swpatch_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/swpatch"
)

// newRoot lays out a software root as the lab does: slot a with a binary,
// active = a.
func newRoot(t *testing.T) swpatch.Slots {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "sw/a/bin"), 0o755)
	os.MkdirAll(filepath.Join(root, "sw/b/bin"), 0o755)
	os.WriteFile(filepath.Join(root, "sw/a/bin/petrel"), []byte("old binary"), 0o755)
	os.WriteFile(filepath.Join(root, "active"), []byte("a\n"), 0o644)
	return swpatch.Slots{Root: root}
}

func verified(t *testing.T, pub ed25519.PublicKey, b []byte) *swpatch.Patch {
	t.Helper()
	p, err := verify(b, pub, swpatch.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestStageBootConfirm: install into the inactive slot, marked next; the
// boot switches to it as a trial; the agent's confirmation keeps it.
func TestStageBootConfirm(t *testing.T) {
	pub, priv := newKey(t)
	s := newRoot(t)
	p := verified(t, pub, build(t, priv, simpleSpec("P1")))
	var hooks []string
	run := func(_ context.Context, dir string, argv []string) error {
		hooks = append(hooks, filepath.Base(dir)+":"+argv[0])
		return nil
	}
	p.Manifest.PreCheck = []string{"etc/petrel/feature.conf"}
	now := time.Now()
	if err := s.Stage(context.Background(), []*swpatch.Patch{p}, swpatch.Limits{}, run, now); err != nil {
		t.Fatalf("Stage = %v", err)
	}
	if got := read(t, filepath.Join(s.Root, "active")); got != "a\n" {
		t.Errorf("active = %q after staging; want a (unchanged)", got)
	}
	if got := read(t, filepath.Join(s.SlotDir("a"), "bin/petrel")); got != "old binary" {
		t.Errorf("slot a binary = %q; want it untouched", got)
	}
	if got := read(t, filepath.Join(s.SlotDir("b"), "bin/petrel")); got != "#!/bin/sh\necho new\n" {
		t.Errorf("slot b binary = %q; want the patch's", got)
	}
	if !slices.Equal(hooks, []string{"b:etc/petrel/feature.conf"}) {
		t.Errorf("hooks = %v; want the pre-check in slot b", hooks)
	}
	st, err := s.Status()
	if err != nil || st.Slot != "a" || st.NextSlot != "b" || !slices.Equal(st.NextPatches, []string{"P1"}) || st.NextVersion != "1.2.3+P1" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	slot, trial, err := s.SelectBoot(now)
	if err != nil || slot != "b" || !trial {
		t.Fatalf("SelectBoot = %s, %v, %v; want b, trial", slot, trial, err)
	}
	if ok, err := s.Confirm(); !ok || err != nil {
		t.Fatalf("Confirm = %v, %v", ok, err)
	}
	slot, trial, err = s.SelectBoot(now)
	if err != nil || slot != "b" || trial {
		t.Fatalf("SelectBoot after confirm = %s, %v, %v; want b, no trial", slot, trial, err)
	}
	st, _ = s.Status()
	if st.Version != "1.2.3+P1" || !slices.Equal(st.Patches, []string{"P1"}) || st.Rollback != nil {
		t.Fatalf("Status = %+v", st)
	}
}

// TestRollback: a trial the agent never confirms is undone by the chassis
// (or by the next boot), back to the previous slot, with a record.
func TestRollback(t *testing.T) {
	for _, how := range []string{"chassis timeout", "boot again"} {
		t.Run(how, func(t *testing.T) {
			pub, priv := newKey(t)
			s := newRoot(t)
			p := verified(t, pub, build(t, priv, simpleSpec("P1")))
			now := time.Now()
			if err := s.Stage(context.Background(), []*swpatch.Patch{p}, swpatch.Limits{}, nil, now); err != nil {
				t.Fatal(err)
			}
			if slot, trial, err := s.SelectBoot(now); slot != "b" || !trial || err != nil {
				t.Fatalf("SelectBoot = %s %v %v", slot, trial, err)
			}
			if how == "chassis timeout" {
				if err := s.Rollback("not available within 20s", now); err != nil {
					t.Fatal(err)
				}
			}
			slot, trial, err := s.SelectBoot(now)
			if err != nil || slot != "a" || trial {
				t.Fatalf("SelectBoot after failure = %s, %v, %v; want a, no trial", slot, trial, err)
			}
			st, err := s.Status()
			if err != nil || st.Slot != "a" || len(st.Patches) != 0 || st.Rollback == nil ||
				st.Rollback.From != "b" || !slices.Equal(st.Rollback.Patches, []string{"P1"}) || st.NextSlot != "" {
				t.Fatalf("Status = %+v, %v; want slot a with a rollback record from b", st, err)
			}
			if ok, _ := s.Confirm(); ok {
				t.Error("Confirm after a rollback confirmed something")
			}
		})
	}
}

// TestStageFailureKeepsActive: a patch whose files fail leaves the host
// booting its active slot, nothing marked, the failure recorded.
func TestStageFailureKeepsActive(t *testing.T) {
	pub, priv := newKey(t)
	s := newRoot(t)
	p := verified(t, pub, build(t, priv, simpleSpec("P1")))
	fail := errors.New("pre-check says no")
	p.Manifest.PreCheck = []string{"bin/petrel"}
	err := s.Stage(context.Background(), []*swpatch.Patch{p}, swpatch.Limits{},
		func(context.Context, string, []string) error { return fail }, time.Now())
	if !errors.Is(err, fail) {
		t.Fatalf("Stage = %v; want the pre-check's failure", err)
	}
	st, _ := s.Status()
	if st.Slot != "a" || st.NextSlot != "" || st.Failed != "P1" {
		t.Fatalf("Status = %+v; want slot a, nothing next, P1 failed", st)
	}
	if slot, trial, _ := s.SelectBoot(time.Now()); slot != "a" || trial {
		t.Errorf("SelectBoot = %s %v; want a", slot, trial)
	}
}

func TestInService(t *testing.T) {
	pub, priv := newKey(t)
	s := newRoot(t)
	spec := swpatch.BuildSpec{ID: "CONF1", Version: "1.2.3+CONF1",
		Files:       []swpatch.Content{{Path: "etc/tuning.conf", Data: []byte("x=1\n")}, {Path: "hooks/post.sh", Data: []byte("#!/bin/sh\n"), Mode: 0o755}},
		PostInstall: []string{"hooks/post.sh"}}
	p := verified(t, pub, build(t, priv, spec))
	var ran []string
	err := s.InService(context.Background(), p, swpatch.Limits{},
		func(_ context.Context, dir string, argv []string) error {
			ran = append(ran, filepath.Base(dir)+":"+argv[0])
			return nil
		}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(s.SlotDir("a"), "etc/tuning.conf")); got != "x=1\n" {
		t.Errorf("running slot file = %q", got)
	}
	if !slices.Equal(ran, []string{"a:hooks/post.sh"}) {
		t.Errorf("hooks = %v; want post-install in the running slot", ran)
	}
	st, _ := s.Status()
	if st.Slot != "a" || !slices.Equal(st.Patches, []string{"CONF1"}) || st.NextSlot != "" {
		t.Errorf("Status = %+v", st)
	}
	reboot := verified(t, pub, build(t, priv, simpleSpec("P2")))
	if err := s.InService(context.Background(), reboot, swpatch.Limits{}, nil, time.Now()); err == nil {
		t.Error("InService installed a reboot-required patch")
	}
}

func TestStageRemoval(t *testing.T) {
	pub, priv := newKey(t)
	s := newRoot(t)
	p := verified(t, pub, build(t, priv, simpleSpec("P1")))
	now := time.Now()
	if err := s.Stage(context.Background(), []*swpatch.Patch{p}, swpatch.Limits{}, nil, now); err != nil {
		t.Fatal(err)
	}
	s.SelectBoot(now)
	s.Confirm()
	if err := s.StageRemoval([]string{"P1"}); err != nil {
		t.Fatalf("StageRemoval = %v", err)
	}
	if slot, _, _ := s.SelectBoot(now); slot != "a" {
		t.Fatalf("boot after removal = %s; want a", slot)
	}
	s.Confirm()
	if err := s.StageRemoval([]string{"P9"}); err == nil {
		// slot b holds P1, which slot a does not run: refused
		t.Error("StageRemoval to a slot holding a patch the host does not run was accepted")
	}
}

func TestStagePostInstallFailureUnmarks(t *testing.T) {
	pub, priv := newKey(t)
	s := newRoot(t)
	spec := simpleSpec("P1")
	spec.PostInstall = []string{"bin/petrel"}
	p := verified(t, pub, build(t, priv, spec))
	fail := errors.New("post-install says no")
	err := s.Stage(context.Background(), []*swpatch.Patch{p}, swpatch.Limits{},
		func(context.Context, string, []string) error { return fail }, time.Now())
	if !errors.Is(err, fail) {
		t.Fatalf("Stage = %v; want the hook's failure", err)
	}
	if st, _ := s.Status(); st.NextSlot != "" || st.Failed != "P1" {
		t.Fatalf("Status = %+v; want nothing marked, P1 failed", st)
	}
}
