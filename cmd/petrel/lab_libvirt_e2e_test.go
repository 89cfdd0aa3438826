package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/compute/guestimage"
	"github.com/petrel-edge/petrel/compute/libvirt"
	"github.com/petrel-edge/petrel/compute/libvirtd"
	"github.com/petrel-edge/petrel/internal/pki"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/hostnet"
)

// TestLabLibvirtd: a simplex site's controller (all-in-one, so a
// hypervisor host) gets the test images and flavors at lab up, and runs
// its own libvirtd inside the host: in its network namespace and cgroup,
// listening with TLS on its mgmt address, at lab.json's libvirt_uri
// (qemu+tls). The test reaches it from the root namespace only through
// hostnet.DialIn (the root namespace never sends to lab addresses) with
// the site controller's client certificate, lists its domains (none),
// checks that another site's certificate is refused and that nothing
// listens on plain TCP, starts a VM (its QEMU runs in the host's cgroup),
// power-cycles the host and finds a new libvirtd there, the VM's QEMU
// dead and the domain shut off; lab down leaves no libvirtd or QEMU of
// the lab.
func TestLabLibvirtd(t *testing.T) {
	if err := libvirtd.Installed(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	dir := filepath.Join(t.TempDir(), "lab")
	base := cli{t: t, env: []string{"PETREL_LAB_DIR=" + dir}}
	start := time.Now()
	_, progress, code := base.run("", "lab", "up", "--sites", "site-v=simplex")
	t.Cleanup(func() { base.run("", "lab", "down") })
	if code != 0 {
		t.Fatalf("lab up: exit %d\n%s", code, progress)
	}
	t.Logf("lab up: %s", time.Since(start).Round(time.Millisecond))
	for _, line := range strings.Split(progress, "\n") {
		if strings.Contains(line, "test images") {
			t.Log(line)
		}
	}
	lf, err := lab.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// lab up seeded the site (it runs VMs) with the test images and the
	// flavors, as `petrel image list` and `petrel flavor list` show.
	site := base.with("PETREL_URL="+lf.Sites[0].URL, "PETREL_TOKEN="+lf.Sites[0].Token, "PETREL_CA_CERT="+lf.CACert,
		"PETREL_CONFIG_DIR="+t.TempDir())
	var images struct{ Items []compute.Image }
	if err := json.Unmarshal([]byte(site.ok("image", "list", "-o", "json")), &images); err != nil {
		t.Fatal(err)
	}
	seeded := map[string]compute.Image{}
	for _, im := range images.Items {
		seeded[im.Name] = im
	}
	for _, v := range guestimage.Variants {
		im := seeded[string(v)]
		if im.Status != compute.ImageActive || im.Visibility != compute.Public || im.DiskFormat != compute.FormatRaw || im.Size == 0 {
			t.Errorf("image %s at site-v = %+v; want active, public, raw", v, im)
		}
	}
	var flavors struct{ Items []compute.Flavor }
	if err := json.Unmarshal([]byte(site.ok("flavor", "list", "-o", "json")), &flavors); err != nil {
		t.Fatal(err)
	}
	gotFlavors := map[string]compute.Flavor{}
	for _, f := range flavors.Items {
		gotFlavors[f.Name] = f
	}
	for _, want := range lab.Flavors {
		if f := gotFlavors[want.Name]; f.VCPUs != want.VCPUs || f.RAMMiB != want.RAMMiB || f.DiskGiB != want.DiskGiB || !f.Public {
			t.Errorf("flavor %s at site-v = %+v; want %+v", want.Name, f, want)
		}
	}
	if out := site.ok("image", "list"); !strings.Contains(out, "petrel-test-v2") {
		t.Errorf("image list:\n%s", out)
	}

	h := lf.Sites[0].Hosts[0]
	mgmt := h.Addresses["mgmt"]
	if want := "qemu+tls://" + mgmt + ":16514/system"; h.LibvirtURI != want {
		t.Fatalf("libvirt_uri = %q; want %q", h.LibvirtURI, want)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The host's libvirtd speaks TLS only and admits its site's controller
	// only: the test presents the controller's own client certificate
	// (from its host's pki/libvirt-client/), through a connection opened
	// inside the host's namespace.
	ctlPKI := filepath.Join(dir, "hosts", "site-v", "controller-0", "pki", "libvirt-client")
	pair, err := tls.LoadX509KeyPair(filepath.Join(ctlPKI, "clientcert.pem"), filepath.Join(ctlPKI, "clientkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.CertPool(lf.CACert)
	if err != nil {
		t.Fatal(err)
	}
	inHost := func(ctx context.Context, _, addr string) (net.Conn, error) { return hostnet.DialIn(ctx, h.Netns, addr) }
	siteTLS := libvirt.Options{TLS: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}, DialContext: inHost}

	// connect waits for the host's libvirtd (lab up does not) and returns
	// a connection to it.
	connect := func() *libvirt.Driver {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		var last error
		for time.Now().Before(deadline) {
			d, err := libvirt.DialOptions(ctx, h.LibvirtURI, siteTLS)
			if err == nil {
				if _, err = d.List(ctx); err == nil {
					return d
				}
				d.Close()
			}
			last = err
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("libvirtd of %s at %s: %v; its log ends:\n%s", h.Name, h.LibvirtURI, last,
			tailFile(filepath.Join(dir, "hosts", "site-v", h.Name, "logs", "libvirtd.log")))
		return nil
	}
	// inHostCgroup reports whether pid is in the host's cgroup.
	inHostCgroup := func(pid string) bool {
		cg, _ := os.ReadFile("/proc/" + pid + "/cgroup")
		return strings.Contains(string(cg), "/site-v/"+h.Name+"\n")
	}
	// procs lists the processes of the host's namespace named comm.
	procs := func(comm string) []string {
		b, _ := exec.Command("ip", "netns", "pids", h.Netns).Output()
		var out []string
		for _, p := range strings.Fields(string(b)) {
			c, _ := os.ReadFile("/proc/" + p + "/comm")
			if strings.HasPrefix(strings.TrimSpace(string(c)), comm) {
				out = append(out, p)
			}
		}
		return out
	}
	// libvirtdPids are the libvirtd processes of the host's namespace; each
	// must also be in the host's cgroup.
	libvirtdPids := func() []string {
		t.Helper()
		out := procs("libvirtd")
		for _, p := range out {
			if !inHostCgroup(p) {
				t.Errorf("libvirtd %s is not in the host's cgroup", p)
			}
		}
		return out
	}

	start = time.Now()
	drv := connect()
	t.Logf("libvirtd answered %s after lab up", time.Since(start).Round(time.Millisecond))
	if doms, _ := drv.List(ctx); len(doms) != 0 {
		t.Errorf("domains = %v; want none", doms)
	}
	// Another site's controller (a certificate from the same lab CA, for
	// another site) is refused, and there is no plain TCP listener.
	labCA, err := pki.LoadCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := labCA.IssueClient("petrel-site-other", time.Hour, pki.NoKeyUsage)
	if err != nil {
		t.Fatal(err)
	}
	otherPair, err := tls.X509KeyPair(other.CertPEM, other.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	otherTLS := libvirt.Options{TLS: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{otherPair}}, DialContext: inHost}
	if d, err := libvirt.DialOptions(ctx, h.LibvirtURI, otherTLS); !errors.Is(err, libvirt.ErrCertRefused) {
		if err == nil {
			d.Close()
		}
		t.Errorf("another site's controller: DialOptions(%s) = %v; want ErrCertRefused", h.LibvirtURI, err)
	}
	tcp := netip.AddrPortFrom(netip.MustParseAddr(mgmt), libvirtd.TCPPort).String()
	if c, err := hostnet.DialIn(ctx, h.Netns, tcp); err == nil {
		c.Close()
		t.Errorf("%s accepts plain TCP; want TLS only", tcp)
	}
	// virsh, run in the host's namespace, with the controller's files as
	// its pkipath (the recipe of docs/lab.md).
	virsh := exec.CommandContext(ctx, "ip", "netns", "exec", h.Netns, "virsh", "-c", h.LibvirtURI+"?pkipath="+ctlPKI, "list", "--all")
	if out, err := virsh.CombinedOutput(); err != nil || !strings.Contains(string(out), "Name") {
		t.Errorf("%s: %v\n%s", virsh, err, out)
	}
	before := libvirtdPids()
	if len(before) != 1 {
		t.Fatalf("libvirtd processes in %s: %v; want one", h.Netns, before)
	}

	// A VM on the host: its QEMU is a process of the host.
	img, err := guestimage.Build(ctx, guestimage.Test, guestimage.DefaultCacheDir())
	if err != nil {
		t.Fatal(err)
	}
	inst := filepath.Join(dir, "hosts", "site-v", h.Name, "instances", "vm1")
	spec := compute.DomainSpec{ID: uuid.NewString(), Name: "vm1", VCPUs: 1, MemoryMiB: 128,
		Disk: filepath.Join(inst, "disk.qcow2"), ConsoleLog: filepath.Join(inst, "console.log")}
	if err := compute.NewOverlay(ctx, img, spec.Disk); err != nil {
		t.Fatal(err)
	}
	if err := drv.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := drv.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	qemu := procs("qemu-system")
	if len(qemu) != 1 || !inHostCgroup(qemu[0]) {
		t.Fatalf("QEMU processes of the host: %v; want one in its cgroup", qemu)
	}
	drv.Close()

	// libvirtd dies (SIGKILL): host-init starts it again, and the guest
	// runs on throughout (its QEMU outlives the daemon, as on a real host);
	// the new daemon reconnects to it.
	pid, _ := strconv.Atoi(before[0])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	for {
		if now := libvirtdPids(); len(now) == 1 && now[0] != before[0] {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("libvirtd not started again 30 s after it died: %v", libvirtdPids())
		}
		time.Sleep(100 * time.Millisecond)
	}
	drv = connect()
	t.Logf("libvirtd answered %s after it was killed", time.Since(start).Round(time.Millisecond))
	if st, err := drv.State(ctx, spec.ID); err != nil || st != compute.StateRunning {
		t.Errorf("vm1 after libvirtd died and started again: %v, %v; want running", st, err)
	}
	if now := procs("qemu-system"); len(now) != 1 || now[0] != qemu[0] {
		t.Errorf("QEMU processes after libvirtd died: %v; want the same one (%s)", now, qemu[0])
	}
	before = libvirtdPids()
	drv.Close()

	base.ok("lab", "fault", "power-cycle", "site-v/"+h.Name)
	start = time.Now()
	drv = connect()
	defer drv.Close()
	t.Logf("libvirtd answered %s after power-cycle", time.Since(start).Round(time.Millisecond))
	after := libvirtdPids()
	if len(after) != 1 || after[0] == before[0] {
		t.Errorf("libvirtd after power-cycle: %v (before: %v); want a new one", after, before)
	}
	if _, err := os.Stat("/proc/" + qemu[0]); err == nil && len(labProcesses(t, dir, qemu)) > 0 {
		t.Errorf("QEMU %s survived the power-cycle", qemu[0])
	}
	if st, err := drv.State(ctx, spec.ID); err != nil || st != compute.StateShutoff {
		t.Errorf("vm1 after power-cycle: %v, %v; want shutoff", st, err)
	}
	after = append(after, qemu...)

	base.ok("lab", "down")
	// Everything of the lab's hosts named the lab directory in argv or ran
	// in its namespaces; none of it survives (QEMU included).
	deadline := time.Now().Add(5 * time.Second)
	for {
		left := labProcesses(t, dir, after)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after lab down still running: %v", left)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// labProcesses lists live (not zombie) processes whose pid is in pids, or
// that are libvirtd or QEMU with the lab directory open as cwd/root or in
// argv.
func labProcesses(t *testing.T, dir string, pids []string) []string {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			continue
		}
		argv, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		comm, _ := os.ReadFile("/proc/" + e.Name() + "/comm")
		c := strings.TrimSpace(string(comm))
		mine := strings.Contains(string(argv), dir)
		for _, p := range pids {
			mine = mine || p == e.Name()
		}
		if (c == "libvirtd" || strings.HasPrefix(c, "qemu-system")) && !mine {
			// Another daemon's (another test or lab): ours only if it
			// maps a file of this lab (its libvirt directories).
			maps, _ := os.ReadFile("/proc/" + e.Name() + "/mountinfo")
			mine = strings.Contains(string(maps), dir)
		}
		if mine {
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(argv), "\x00", " "))
		}
	}
	return out
}
