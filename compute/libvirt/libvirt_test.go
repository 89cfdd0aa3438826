package libvirt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// startAndWait starts a defined domain and waits for the banner.
func startAndWait(ctx context.Context, t *testing.T, h compute.Hypervisor, id string) {
	t.Helper()
	if err := h.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	if log, err := waitConsole(bctx, h, id, guestimage.Test.Banner(), 1); err != nil {
		t.Fatalf("no banner: %v; console:\n%s", err, log)
	}
}

// defineXML defines spec with its domain XML changed by edit.
func (r *rig) defineXML(t *testing.T, spec compute.DomainSpec, edit func(string) string) {
	t.Helper()
	doc, err := DomainXML(spec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.drv.l.DomainDefineXMLFlags(edit(string(doc)), 0); err != nil {
		t.Fatal(err)
	}
}

// TestReboot reboots the petrel-test guest hard (reset), then soft: libvirt
// turns an ACPI reboot into a power-button press, the guest powers off
// (GUEST-POWEROFF) and libvirt resets it instead of stopping it. Then the
// two fallbacks of a soft reboot: a domain that is destroyed on reboot
// ends shut off and is started again; a guest without ACPI never reacts
// and is reset after SoftRebootTimeout.
func TestReboot(t *testing.T) {
	r := newRig(t)
	h := compute.Hypervisor(r.drv)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	banner := guestimage.Test.Banner()
	// rebootTo reboots id, waits for its boots-th banner and returns how
	// long Reboot took.
	rebootTo := func(t *testing.T, h compute.Hypervisor, id string, hard bool, boots int) time.Duration {
		t.Helper()
		t0 := time.Now()
		if err := h.Reboot(ctx, id, hard); err != nil {
			t.Fatalf("Reboot(hard=%v) = %v", hard, err)
		}
		returned := time.Since(t0)
		bctx, cancel := context.WithTimeout(ctx, 90*time.Second)
		defer cancel()
		log, err := waitConsole(bctx, h, id, banner, boots)
		if err != nil {
			t.Fatalf("after Reboot(hard=%v): %v; console:\n%s", hard, err, log)
		}
		t.Logf("Reboot(hard=%v) returned in %v; boot %d's banner after %v", hard,
			returned.Round(time.Millisecond), boots, time.Since(t0).Round(time.Millisecond))
		wantState(t, h, id, compute.StateRunning)
		return returned
	}

	spec := r.instance(t, "reboot")
	if err := h.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	startAndWait(ctx, t, h, spec.ID)
	rebootTo(t, h, spec.ID, true, 2)
	rebootTo(t, h, spec.ID, false, 3)
	log, _ := h.ConsoleLog(ctx, spec.ID)
	if n := bytes.Count(log, []byte("GUEST-POWEROFF")); n != 1 {
		t.Errorf("console shows %d GUEST-POWEROFF; want 1 (the soft reboot's power button)", n)
	}
	if err := h.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := h.Reboot(ctx, spec.ID, false); err == nil {
		t.Error("soft Reboot of a shut-off domain = nil; want an error")
	}

	t.Run("DestroyOnReboot", func(t *testing.T) {
		spec := r.instance(t, "reboot-destroy")
		r.defineXML(t, spec, func(s string) string {
			return strings.Replace(s, "<on_reboot>restart</on_reboot>", "<on_reboot>destroy</on_reboot>", 1)
		})
		startAndWait(ctx, t, h, spec.ID)
		// libvirt numbers a domain's runs: a new ID means QEMU was
		// stopped and started again, not reset in place.
		runID := func() int32 {
			t.Helper()
			dom, err := r.drv.lookup(ctx, spec.ID)
			if err != nil {
				t.Fatal(err)
			}
			return dom.ID
		}
		before := runID()
		// The lifecycle events are logged to explain a failure; the
		// verdict rests on the run ID and the console, which a slow
		// machine cannot reorder.
		ectx, ecancel := context.WithCancel(ctx)
		evs, err := h.Events(ectx)
		if err != nil {
			t.Fatal(err)
		}
		var seen []compute.DomainEvent
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range evs {
				if ev.ID == spec.ID {
					seen = append(seen, ev)
				}
			}
		}()
		rebootTo(t, h, spec.ID, false, 2)
		after := runID()
		ecancel()
		<-done
		t.Logf("run ID %d -> %d; events %+v", before, after, seen)
		if after == before {
			t.Errorf("run ID still %d after Reboot: the domain was reset, not destroyed by the guest's reboot and started again", after)
		}
		_ = h.Destroy(ctx, spec.ID)
	})
	t.Run("NoACPI", func(t *testing.T) {
		drv, err := DialOptions(ctx, r.d.URI(), Options{SoftRebootTimeout: 3 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer drv.Close()
		spec := r.instance(t, "reboot-noacpi")
		r.defineXML(t, spec, func(s string) string { return strings.Replace(s, "<acpi></acpi>", "", 1) })
		startAndWait(ctx, t, drv, spec.ID)
		if took := rebootTo(t, drv, spec.ID, false, 2); took < 3*time.Second {
			t.Errorf("Reboot of a guest without ACPI took %v; want the 3 s SoftRebootTimeout, then a reset", took)
		}
		_ = h.Destroy(ctx, spec.ID)
	})
}

// TestHostInfoAndEvents checks HostInfo against /proc, and that Events
// reports a domain's start and destroy, and closes when its context ends
// or the connection goes.
func TestHostInfoAndEvents(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	info, err := r.drv.HostInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var memKiB int64
	fmt.Sscanf(string(meminfo), "MemTotal: %d kB", &memKiB)
	version, _ := r.drv.Version(ctx)
	// libvirt sums the NUMA nodes' memory, which in some sandboxes is less
	// than /proc/meminfo's MemTotal (7001-7513 MiB of 24105 on the dev machine).
	if info.CPUs < 1 || info.CPUs > 4096 || info.MemoryMiB < 1 || info.MemoryMiB > memKiB/1024 ||
		info.Version != version || version == "" {
		t.Errorf("HostInfo = %+v; want 1..4096 CPUs, 1..%d MiB, Version %q", info, memKiB/1024, version)
	}
	t.Logf("HostInfo = %+v (/proc/meminfo: %d MiB)", info, memKiB/1024)

	ectx, ecancel := context.WithCancel(ctx)
	defer ecancel()
	evs, err := r.drv.Events(ectx)
	if err != nil {
		t.Fatal(err)
	}
	spec := r.instance(t, "events")
	if err := r.drv.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := r.drv.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	// next returns the next event of spec's domain.
	next := func() compute.DomainEvent {
		t.Helper()
		for {
			select {
			case ev, ok := <-evs:
				if !ok {
					t.Fatal("event channel closed")
				}
				t.Logf("event %+v", ev)
				if ev.ID == spec.ID {
					return ev
				}
			case <-ctx.Done():
				t.Fatal("no event")
			}
		}
	}
	if ev := next(); ev.State != compute.StateRunning {
		t.Fatalf("first event after Start = %+v; want running", ev)
	}
	if err := r.drv.Destroy(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	// Destroy reports shutting-down ("host") before shutoff.
	ev := next()
	for ev.State == compute.StateRunning || ev.State == compute.StateShuttingDown {
		ev = next()
	}
	if ev.State != compute.StateShutoff || ev.Detail != "destroyed" {
		t.Fatalf("event after Destroy = %+v; want shutoff, destroyed", ev)
	}

	waitClosed := func(what string, evs <-chan compute.DomainEvent) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case _, ok := <-evs:
				if !ok {
					return
				}
			case <-deadline:
				t.Fatalf("event channel still open after %s", what)
			}
		}
	}
	ecancel()
	waitClosed("its context ended", evs)

	drv2, err := Dial(ctx, r.d.URI())
	if err != nil {
		t.Fatal(err)
	}
	evs2, err := drv2.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	drv2.Close()
	waitClosed("the connection closed", evs2)
}

// hostPath is where a path of the daemon's host is seen from the test: the
// daemon's /var/lib/libvirt is its directory's lib/.
func (r *rig) hostPath(p string) string {
	rel, err := filepath.Rel("/var/lib/libvirt", p)
	if err != nil || strings.HasPrefix(rel, "..") {
		return p
	}
	return filepath.Join(r.d.Dir(), "lib", rel)
}

// imageSum is the SHA-256 and size of a file.
func imageSum(t testing.TB, name string) (string, int64) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

func open(t testing.TB, name string) *os.File {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

var errCut = errors.New("connection cut")

// failingReader fails every read.
type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// qemuImgInfo is what qemu-img info says of a file.
type qemuImgInfo struct {
	Format        string `json:"format"`
	VirtualSize   int64  `json:"virtual-size"`
	BackingFile   string `json:"backing-filename"`
	BackingFormat string `json:"backing-filename-format"`
	Specific      struct {
		Data struct {
			Compat string `json:"compat"`
		} `json:"data"`
	} `json:"format-specific"`
}

func imgInfo(t testing.TB, name string) qemuImgInfo {
	t.Helper()
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", name).Output()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v", name, err)
	}
	var info qemuImgInfo
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// TestHostStorage drives HostStorage end to end on a private libvirtd: it
// uploads the test image as a base (cut-off, short, long and leftover
// uploads never count as complete), creates an instance's files on it,
// boots a domain on them and reads its console through libvirt (the
// files are inside the daemon's private /var/lib/libvirt, which this
// process cannot see at that path), rebuilds it onto a fresh disk and
// deletes its files.
func TestHostStorage(t *testing.T) {
	r := newRig(t)
	st := compute.HostStorage(r.drv)
	h := compute.Hypervisor(r.drv)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	sum, size := imageSum(t, r.image)
	hasBase := func(want bool) {
		t.Helper()
		if got, err := st.HasBase(ctx, sum); err != nil || got != want {
			t.Fatalf("HasBase = %v, %v; want %v", got, err, want)
		}
	}

	hasBase(false) // also makes the base pool
	if _, err := os.Stat(r.hostPath(DefaultBaseDir)); err != nil {
		t.Errorf("pool directory: %v", err)
	}
	if auto, err := r.drv.l.StoragePoolGetAutostart(r.drv.pools[DefaultBasePool]); err != nil || auto != 1 {
		t.Errorf("pool %s autostart = %d, %v; want 1", DefaultBasePool, auto, err)
	}

	// Cut off half way: the reader fails.
	err := st.PutBase(ctx, sum, compute.FormatRaw, size, io.MultiReader(io.LimitReader(open(t, r.image), size/2), failingReader{errCut}))
	if !errors.Is(err, errCut) {
		t.Fatalf("PutBase(cut half way) = %v; want errCut", err)
	}
	hasBase(false)
	// A stream shorter or longer than its size.
	if err := st.PutBase(ctx, sum, compute.FormatRaw, size, io.LimitReader(open(t, r.image), size-1)); !errors.Is(err, compute.ErrSizeMismatch) {
		t.Fatalf("PutBase(short) = %v; want ErrSizeMismatch", err)
	}
	hasBase(false)
	if err := st.PutBase(ctx, sum, compute.FormatRaw, size-1, open(t, r.image)); !errors.Is(err, compute.ErrSizeMismatch) {
		t.Fatalf("PutBase(long) = %v; want ErrSizeMismatch", err)
	}
	hasBase(false)

	// What a controller that died mid-upload leaves: half a base, no marker.
	pool := r.drv.pools[DefaultBasePool]
	left, err := r.drv.createVol(pool, rawVol(sum, size))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.drv.l.StorageVolUpload(left, io.LimitReader(open(t, r.image), size/2), 0, uint64(size/2), 0); err != nil {
		t.Fatal(err)
	}
	hasBase(false)

	// Two PutBase calls at once: one uploads, the other finds it done.
	t0 := time.Now()
	errc := make(chan error, 2)
	for i := 0; i < 2; i++ {
		f := open(t, r.image)
		go func() { errc <- st.PutBase(ctx, sum, compute.FormatRaw, size, f) }()
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatalf("concurrent PutBase = %v", err)
		}
	}
	took := time.Since(t0)
	t.Logf("PutBase of %d MiB over the unix socket: %v (%.0f MiB/s)", size>>20, took.Round(time.Millisecond),
		float64(size)/(1<<20)/took.Seconds())
	hasBase(true)
	basePath := filepath.Join(DefaultBaseDir, sum)
	if got, want := mustRead(t, r.hostPath(basePath)), mustRead(t, r.image); !bytes.Equal(got, want) {
		t.Fatal("the base on the host differs from the image")
	}
	if info := imgInfo(t, r.hostPath(basePath)); info.Format != "raw" {
		t.Errorf("qemu-img sees the raw base as %q", info.Format)
	}
	if got := string(mustRead(t, r.hostPath(basePath+markerSuffix))); got != fmt.Sprintf("size=%d format=raw\n", size) {
		t.Errorf("marker = %q", got)
	}
	// Complete: PutBase does not read r again.
	if err := st.PutBase(ctx, sum, compute.FormatRaw, size, failingReader{errCut}); err != nil {
		t.Errorf("PutBase of a complete base = %v; want nil", err)
	}
	// volTail reads the end of a volume.
	baseVol, _, _ := r.drv.vol(pool, sum)
	if got, err := r.drv.volTail(baseVol, 1000); err != nil || !bytes.Equal(got, mustRead(t, r.image)[size-1000:]) {
		t.Errorf("volTail(base, 1000) = %d bytes, %v; want the image's last 1000", len(got), err)
	}

	// A qcow2 base is uploaded the same way; qemu-img sees its format.
	qimg := filepath.Join(t.TempDir(), "test.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-O", "qcow2", r.image, qimg).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	qsum, qsize := imageSum(t, qimg)
	if err := st.PutBase(ctx, qsum, compute.FormatQCOW2, qsize, open(t, qimg)); err != nil {
		t.Fatal(err)
	}
	if info := imgInfo(t, r.hostPath(filepath.Join(DefaultBaseDir, qsum))); info.Format != "qcow2" || info.VirtualSize != size {
		t.Errorf("qemu-img sees the qcow2 base as %+v", info)
	}
	qid := uuid.NewString()
	qfiles, err := st.CreateInstanceFiles(ctx, qid, qsum, compute.FormatQCOW2)
	if err != nil {
		t.Fatal(err)
	}
	if info := imgInfo(t, r.hostPath(qfiles.Disk)); info.BackingFormat != "qcow2" || info.BackingFile != filepath.Join(DefaultBaseDir, qsum) {
		t.Errorf("overlay on the qcow2 base: %+v", info)
	}
	if err := st.DeleteInstanceFiles(ctx, qid); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateInstanceFiles(ctx, qid, qsum, compute.FormatRaw); err == nil {
		t.Error("CreateInstanceFiles with the wrong base format = nil; want an error")
	}
	if _, err := st.CreateInstanceFiles(ctx, qid, strings.Repeat("0", 64), compute.FormatRaw); err == nil {
		t.Error("CreateInstanceFiles on a missing base = nil; want an error")
	}

	// An instance on the raw base.
	id := uuid.NewString()
	files, err := st.CreateInstanceFiles(ctx, id, sum, compute.FormatRaw)
	if err != nil {
		t.Fatal(err)
	}
	want := compute.InstanceFiles{Disk: filepath.Join(DefaultInstanceDir, id+".qcow2"),
		ConsoleLog: filepath.Join(DefaultInstanceDir, id+".console.log")}
	if files != want {
		t.Fatalf("CreateInstanceFiles = %+v; want %+v", files, want)
	}
	info := imgInfo(t, r.hostPath(files.Disk))
	if info.Format != "qcow2" || info.BackingFile != basePath || info.BackingFormat != "raw" ||
		info.VirtualSize != size || info.Specific.Data.Compat != "1.1" {
		t.Errorf("overlay: %+v; want qcow2 1.1 on %s (raw), %d bytes", info, basePath, size)
	}
	if _, err := os.Stat(files.ConsoleLog); err == nil {
		t.Fatalf("%s is visible here: the test would not show that ConsoleLog reads through libvirt", files.ConsoleLog)
	}
	spec := compute.DomainSpec{ID: id, Name: "stored", VCPUs: 1, MemoryMiB: 128, Disk: files.Disk, ConsoleLog: files.ConsoleLog}
	if err := h.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	startAndWait(ctx, t, h, id)
	if log, err := waitConsole(ctx, h, id, "INSTANCE-CREATED first-boot", 1); err != nil {
		t.Fatalf("first boot: %v; console:\n%s", err, log)
	}
	if err := h.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Rebuild: a fresh overlay and an empty console log.
	if _, err := st.CreateInstanceFiles(ctx, id, sum, compute.FormatRaw); err != nil {
		t.Fatal(err)
	}
	if log, err := h.ConsoleLog(ctx, id); err != nil || len(log) != 0 {
		t.Fatalf("console log after rebuild = %q, %v; want empty", log, err)
	}
	// A console file that libvirt has not seen (QEMU creates it) is found
	// by refreshing its pool.
	if err := r.drv.deleteVol(r.drv.pools[DefaultInstancePool], id+".console.log", false); err != nil {
		t.Fatal(err)
	}
	startAndWait(ctx, t, h, id)
	log, err := waitConsole(ctx, h, id, "INSTANCE-CREATED first-boot", 1)
	if err != nil || bytes.Contains(log, []byte("INSTANCE-DATA")) {
		t.Fatalf("boot after rebuild: %v; want a first boot; console:\n%s", err, log)
	}
	if err := h.Destroy(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := h.Undefine(ctx, id); err != nil {
		t.Fatal(err)
	}

	if err := st.DeleteInstanceFiles(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{files.Disk, files.ConsoleLog} {
		if _, err := os.Stat(r.hostPath(p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after DeleteInstanceFiles: %v; want it gone", p, err)
		}
	}
	if err := st.DeleteInstanceFiles(ctx, id); err != nil {
		t.Errorf("DeleteInstanceFiles of absent files = %v; want nil", err)
	}
	hasBase(true)
}

func mustRead(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// BenchmarkPutBase measures PutBase of the 64 MiB test image over the
// daemon's unix socket (each round deletes the base first). Run:
//
//	go test -run '^$' -bench PutBase -benchtime 5x ./compute/libvirt/
func BenchmarkPutBase(b *testing.B) {
	r := newRig(b)
	ctx := context.Background()
	sum, size := imageSum(b, r.image)
	if _, err := r.drv.HasBase(ctx, sum); err != nil { // makes the pools
		b.Fatal(err)
	}
	pool := r.drv.pools[DefaultBasePool]
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, name := range []string{sum + markerSuffix, sum} {
			if err := r.drv.deleteVol(pool, name, false); err != nil {
				b.Fatal(err)
			}
		}
		f := open(b, r.image)
		b.StartTimer()
		if err := r.drv.PutBase(ctx, sum, compute.FormatRaw, size, f); err != nil {
			b.Fatal(err)
		}
	}
}
