package guestimage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// need skips the test when a program is missing, except under CI=true,
// where CI must have installed it (scripts/test.sh) and a skip would hide it.
func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed; scripts/test.sh installs it", p)
			}
			t.Skipf("%s is not installed", p)
		}
	}
	if err := checkTools(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

func TestBuildBothVariantsAndCache(t *testing.T) {
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// Fresh image cache; the .debs come from (or go to) the shared cache.
	b := &Builder{CacheDir: t.TempDir(), DebDir: filepath.Join(DefaultCacheDir(), "debs")}
	paths := map[Variant]string{}
	for _, v := range Variants {
		t0 := time.Now()
		p, err := b.Build(ctx, v)
		if err != nil {
			t.Fatalf("Build(%s): %v", v, err)
		}
		t.Logf("Build(%s) = %s in %v", v, filepath.Base(p), time.Since(t0).Round(time.Millisecond))
		paths[v] = p
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != 64<<20 {
			t.Errorf("%s: size %d; want %d", v, st.Size(), 64<<20)
		}
		// SYSLINUX's FAT boot sector: OEM ID at offset 3, boot signature.
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sector := make([]byte, 512)
		_, err = f.ReadAt(sector, 0)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(sector[3:11]) != "SYSLINUX" || sector[510] != 0x55 || sector[511] != 0xaa {
			t.Errorf("%s: boot sector OEM %q, signature %x; want SYSLINUX, 55aa", v, sector[3:11], sector[510:])
		}
		ver, _ := v.Version()
		out, err := exec.Command("mtype", "-i", p, "::VERSION").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != ver {
			t.Errorf("mtype ::VERSION of %s = %q, %v; want %q", v, out, err, ver)
		}
		out, err = exec.Command("mdir", "-a", "-b", "-i", p, "::").CombinedOutput()
		if err != nil {
			t.Fatalf("mdir: %v: %s", err, out)
		}
		for _, want := range []string{"vmlinuz", "initrd.gz", "syslinux.cfg", "ldlinux.sys", "ldlinux.c32"} {
			if !bytes.Contains(bytes.ToLower(out), []byte(want)) {
				t.Errorf("%s: no %s on the image; mdir:\n%s", v, want, out)
			}
		}
	}
	if paths[Test] == paths[TestV2] {
		t.Errorf("both variants built to %s", paths[Test])
	}
	// Second call: same inputs, so the cached file, at once.
	for _, v := range Variants {
		t0 := time.Now()
		p, err := b.Build(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		dt := time.Since(t0)
		if p != paths[v] {
			t.Errorf("second Build(%s) = %s; want cached %s", v, p, paths[v])
		}
		if dt > time.Second {
			t.Errorf("second Build(%s) took %v; want a cache hit under 1s", v, dt)
		}
		t.Logf("cached Build(%s) in %v", v, dt.Round(time.Millisecond))
	}
	ents, _ := os.ReadDir(b.CacheDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".build-") {
			t.Errorf("build directory %s left behind", e.Name())
		}
	}
}

func TestUnknownVariant(t *testing.T) {
	if _, err := Build(context.Background(), "cirros", t.TempDir()); !errors.Is(err, ErrUnknownVariant) {
		t.Errorf("Build(cirros) = %v; want ErrUnknownVariant", err)
	}
}

// TestBootsUnderQEMU boots the image with plain QEMU (TCG, SeaBIOS, no
// -kernel) and waits for the banner and the first heartbeat on the serial
// console.
func TestBootsUnderQEMU(t *testing.T) {
	need(t, "qemu-system-x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img, err := Build(ctx, Test, DefaultCacheDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	console := filepath.Join(dir, "console.log")
	// -snapshot: the guest's writes go to a temporary overlay, never to
	// the cached image.
	cmd := exec.Command("qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "128",
		"-nodefaults", "-no-user-config", "-display", "none", "-snapshot",
		"-drive", "file="+img+",format=raw,if=virtio", "-serial", "file:"+console)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill() // by PID: the QEMU this test started
		<-exited
	}()
	var banner time.Duration
	for deadline := time.Now().Add(90 * time.Second); ; {
		log, _ := os.ReadFile(console)
		if banner == 0 && bytes.Contains(log, []byte(Test.Banner())) {
			banner = time.Since(t0)
		}
		if bytes.Contains(log, []byte(Test.Heartbeat()+"1 ")) {
			t.Logf("banner after %v, first heartbeat after %v", banner.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
			if !bytes.Contains(log, []byte("DISK-MOUNTED dev=/dev/vda on-disk-version=v1")) {
				t.Errorf("guest did not mount its disk; console:\n%s", log)
			}
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("qemu exited: %v: %s\nconsole:\n%s", err, stderr.Bytes(), log)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat within 90s; console:\n%s", log)
		}
	}
}
