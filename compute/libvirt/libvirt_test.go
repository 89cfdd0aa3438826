package libvirt

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/compute/libvirtd"
)

func TestDomainXML(t *testing.T) {
	spec := compute.DomainSpec{ID: uuid.NewString(), Name: "vm-<1>", VCPUs: 2, MemoryMiB: 128,
		Disk: "/i/disk.qcow2", ConsoleLog: "/i/console.log"}
	doc, err := DomainXML(spec)
	if err != nil {
		t.Fatal(err)
	}
	var x domainXML
	if err := xml.Unmarshal(doc, &x); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, doc)
	}
	if x.Type != "qemu" || x.Name != spec.Name || x.UUID != spec.ID || x.VCPU != 2 || x.Memory.Value != 128 ||
		x.Devices.Disks[0].Source.File != spec.Disk || x.Devices.Disks[0].Driver.Type != "qcow2" ||
		x.Devices.Serials[0].Source.Path != spec.ConsoleLog || x.OS.Boot.Dev != "hd" {
		t.Errorf("DomainXML(%+v) =\n%s", spec, doc)
	}
	for _, bad := range []compute.DomainSpec{
		{ID: "nope", Name: "a", VCPUs: 1, MemoryMiB: 128, Disk: "/d", ConsoleLog: "/c"},
		{ID: spec.ID, Name: "a", VCPUs: 1, MemoryMiB: 64, Disk: "/d", ConsoleLog: "/c"},
		{ID: spec.ID, Name: "a", VCPUs: 0, MemoryMiB: 128, Disk: "/d", ConsoleLog: "/c"},
		{ID: spec.ID, Name: "a", VCPUs: 1, MemoryMiB: 128, Disk: "d", ConsoleLog: "/c"},
	} {
		if _, err := DomainXML(bad); !errors.Is(err, compute.ErrInvalidSpec) {
			t.Errorf("DomainXML(%+v) = %v; want ErrInvalidSpec", bad, err)
		}
	}
}

// need skips when the test cannot run here, except under CI=true, where a
// skip would hide a broken install: scripts/test.sh runs as root and
// installs libvirt, QEMU and tini.
func need(t testing.TB) {
	t.Helper()
	var why error
	if os.Geteuid() != 0 {
		why = errors.New("needs root (mount namespaces)")
	} else if err := libvirtd.Installed(); err != nil {
		why = err
	}
	if why == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("libvirt integration test cannot run: %v", why)
	}
	t.Skip(why)
}

// rig is a private libvirtd, a driver connected to it and the test image.
type rig struct {
	d     *libvirtd.Daemon
	drv   *Driver
	image string
	dir   string
}

func newRig(t testing.TB) *rig {
	t.Helper()
	need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img, err := guestimage.Build(ctx, guestimage.Test, guestimage.DefaultCacheDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d, err := libvirtd.Start(ctx, libvirtd.Config{Dir: filepath.Join(dir, "libvirtd")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	drv, err := Dial(ctx, d.URI())
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the daemon's Close, so it runs first: destroy and
	// undefine whatever the test left, then disconnect.
	t.Cleanup(func() {
		ctx := context.Background()
		doms, _ := drv.List(ctx)
		for _, dom := range doms {
			_ = drv.Destroy(ctx, dom.ID)
			_ = drv.Undefine(ctx, dom.ID)
		}
		drv.Close()
	})
	t0 := time.Now()
	if err := drv.WarmCapabilities(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("libvirtd pid %d up; QEMU capabilities probed in %v", d.Pid(), time.Since(t0).Round(time.Millisecond))
	return &rig{d: d, drv: drv, image: img, dir: dir}
}

// instance makes an overlay on the test image and returns its spec.
func (r *rig) instance(t testing.TB, name string) compute.DomainSpec {
	t.Helper()
	inst := filepath.Join(r.dir, "instances", name)
	spec := compute.DomainSpec{ID: uuid.NewString(), Name: name, VCPUs: 1, MemoryMiB: 128,
		Disk: filepath.Join(inst, "disk.qcow2"), ConsoleLog: filepath.Join(inst, "console.log")}
	if err := compute.NewOverlay(context.Background(), r.image, spec.Disk); err != nil {
		t.Fatal(err)
	}
	return spec
}

// waitConsole polls the console log until it holds want n times.
func waitConsole(ctx context.Context, h compute.Hypervisor, id, want string, n int) ([]byte, error) {
	for {
		log, err := h.ConsoleLog(ctx, id)
		if err != nil {
			return nil, err
		}
		if bytes.Count(log, []byte(want)) >= n {
			return log, nil
		}
		select {
		case <-ctx.Done():
			return log, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func wantState(t *testing.T, h compute.Hypervisor, id string, want compute.State) {
	t.Helper()
	if st, err := h.State(context.Background(), id); err != nil || st != want {
		t.Fatalf("State(%s) = %s, %v; want %s", id, st, err, want)
	}
}

// TestLifecycle drives a real TCG guest through a private libvirtd:
// define, start, banner on the console, destroy, start again (the overlay
// kept the instance's data), graceful stop, undefine.
func TestLifecycle(t *testing.T) {
	r := newRig(t)
	h := compute.Hypervisor(r.drv)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	spec := r.instance(t, "lifecycle")

	if err := h.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := h.Define(ctx, spec); err != nil {
		t.Fatalf("Define again (update) = %v", err)
	}
	doms, err := h.List(ctx)
	if err != nil || len(doms) != 1 || doms[0] != (compute.Domain{ID: spec.ID, Name: spec.Name, State: compute.StateShutoff}) {
		t.Fatalf("List = %+v, %v; want the one shutoff domain", doms, err)
	}

	t0 := time.Now()
	if err := h.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	started := time.Since(t0)
	bctx, bcancel := context.WithTimeout(ctx, 90*time.Second)
	log, err := waitConsole(bctx, h, spec.ID, guestimage.Test.Banner(), 1)
	bcancel()
	if err != nil {
		t.Fatalf("no banner: %v; console:\n%s", err, log)
	}
	t.Logf("Start returned in %v; banner after %v", started.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	wantState(t, h, spec.ID, compute.StateRunning)
	if err := h.Start(ctx, spec.ID); err != nil {
		t.Errorf("Start of a running domain = %v; want nil", err)
	}
	// The first boot writes the instance's data; wait for it to be synced.
	if log, err := waitConsole(ctx, h, spec.ID, "INSTANCE-CREATED", 1); err != nil {
		t.Fatalf("no INSTANCE-CREATED: %v; console:\n%s", err, log)
	}

	t0 = time.Now()
	if err := h.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	t.Logf("Destroy took %v", time.Since(t0).Round(time.Millisecond))
	wantState(t, h, spec.ID, compute.StateShutoff)
	if err := h.Destroy(ctx, spec.ID); err != nil {
		t.Errorf("Destroy of a stopped domain = %v; want nil", err)
	}

	// Second boot on the same overlay: the guest finds its data.
	if err := h.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if log, err := waitConsole(ctx, h, spec.ID, "INSTANCE-DATA", 1); err != nil {
		t.Fatalf("second boot: %v; console:\n%s", err, log)
	}
	if _, err := waitConsole(ctx, h, spec.ID, guestimage.Test.Heartbeat(), 2); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	if err := h.Stop(ctx, spec.ID, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("graceful Stop took %v", time.Since(t0).Round(time.Millisecond))
	wantState(t, h, spec.ID, compute.StateShutoff)
	log, _ = h.ConsoleLog(ctx, spec.ID)
	if !bytes.Contains(log, []byte("GUEST-POWEROFF")) {
		t.Errorf("Stop did not power the guest off through ACPI; console:\n%s", log)
	}
	if n := bytes.Count(log, []byte(guestimage.Test.Banner())); n != 2 {
		t.Errorf("console shows %d boots; want 2", n)
	}

	if err := h.Undefine(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.State(ctx, spec.ID); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("State after Undefine = %v; want ErrNotFound", err)
	}
	if err := h.Undefine(ctx, spec.ID); err != nil {
		t.Errorf("Undefine of an absent domain = %v; want nil", err)
	}
	if err := h.Start(ctx, spec.ID); !errors.Is(err, compute.ErrNotFound) {
		t.Errorf("Start of an absent domain = %v; want ErrNotFound", err)
	}
	if doms, err := h.List(ctx); err != nil || len(doms) != 0 {
		t.Errorf("List after Undefine = %+v, %v; want none", doms, err)
	}
}

// BenchmarkBoot measures a VM's boot through libvirt: from Define (on a
// fresh overlay) to the image's banner on the serial console. Run:
//
//	go test -run '^$' -bench Boot -benchtime 5x ./compute/libvirt/
func BenchmarkBoot(b *testing.B) {
	r := newRig(b)
	ctx := context.Background()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		spec := r.instance(b, "bench"+uuid.NewString()[:8])
		b.StartTimer()
		t0 := time.Now()
		if err := r.drv.Define(ctx, spec); err != nil {
			b.Fatal(err)
		}
		if err := r.drv.Start(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
		bctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		log, err := waitConsole(bctx, r.drv, spec.ID, guestimage.Test.Banner(), 1)
		cancel()
		if err != nil {
			b.Fatalf("no banner: %v; console:\n%s", err, log)
		}
		total += time.Since(t0)
		b.StopTimer()
		if err := r.drv.Destroy(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
		if err := r.drv.Undefine(ctx, spec.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/boot")
}
