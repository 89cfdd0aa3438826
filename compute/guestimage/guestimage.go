// Package guestimage builds the bootable test guest images "petrel-test" and
// "petrel-test-v2" from Debian packages, at test or lab time: nothing binary
// is committed.
//
// An image is a 64 MiB raw disk holding one FAT32 filesystem with no
// partition table (a "superfloppy"): SYSLINUX's boot sector, the Debian cloud
// kernel (linux-image-*-cloud-amd64) and a busybox-static initramfs. It is
// written with mkfs.fat, mtools and `syslinux --install` on a plain file, so
// building needs no root, loop device or mount (recipe:
// shared/notes/vm-disk-images.md). SeaBIOS boots it under QEMU TCG in about
// 4 s.
//
// The guest prints, on its serial console (ttyS0):
//
//	=== IMAGE v1 BOOTED uptime=2.29 ===
//	DISK-MOUNTED dev=/dev/vda on-disk-version=v1
//	INSTANCE-CREATED first-boot md5=…          (first boot: 4 MiB of random data)
//	HEARTBEAT v1 1 up=3.99                     (every second; also written to HB on the disk)
//
// "petrel-test-v2" prints v2 instead of v1. ACPI power-button presses make it
// sync, unmount and power off (GUEST-POWEROFF).
//
// Images are cached by content: the file name carries a hash of every input
// (the two .deb files, the syslinux installer, the generated init and
// configuration), so a second Build with the same inputs returns at once.
package guestimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Variant names a test image.
type Variant string

// The test images. They differ only in the version they print.
const (
	Test   Variant = "petrel-test"
	TestV2 Variant = "petrel-test-v2"
	// Busy is petrel-test that also dirties 32 MiB of its memory over
	// and over (a tmpfs file rewritten in a loop): the memory-dirtying
	// guest of the live-migration benchmark. Not seeded by the lab.
	Busy Variant = "petrel-test-busy"
)

// Variants lists every image Build can make.
var Variants = []Variant{Test, TestV2}

// ErrUnknownVariant is returned for a variant not in Variants.
var ErrUnknownVariant = errors.New("guestimage: unknown variant")

// ErrMissingTool is returned (wrapped, naming the Debian packages) when a
// program the build needs is not installed.
var ErrMissingTool = errors.New("guestimage: missing tools")

// Version is the version string the guest prints: "v1" or "v2".
func (v Variant) Version() (string, error) {
	switch v {
	case Test:
		return "v1", nil
	case TestV2:
		return "v2", nil
	case Busy:
		return "busy", nil
	}
	return "", fmt.Errorf("%w: %q", ErrUnknownVariant, string(v))
}

// Banner is the start of the line the guest prints once its init runs,
// e.g. "=== IMAGE v1 BOOTED".
func (v Variant) Banner() string {
	ver, _ := v.Version()
	return "=== IMAGE " + ver + " BOOTED"
}

// Heartbeat is the start of the line the guest prints every second,
// e.g. "HEARTBEAT v1 ".
func (v Variant) Heartbeat() string {
	ver, _ := v.Version()
	return "HEARTBEAT " + ver + " "
}

// Packages are the Debian packages the build runs (dosfstools, mtools,
// syslinux) and reads (dpkg for dpkg-deb, apt for fetching the .debs).
var Packages = []string{"dosfstools", "mtools", "syslinux", "syslinux-common"}

// tools maps each program Build runs to its Debian package.
var tools = map[string]string{
	"mkfs.fat": "dosfstools", "mcopy": "mtools", "syslinux": "syslinux",
	"dpkg-deb": "dpkg",
}

// kernelMeta is the Debian metapackage whose dependency names the current
// cloud kernel package (linux-image-<abi>-cloud-amd64).
const kernelMeta = "linux-image-cloud-amd64"

// builderVersion changes whenever the way images are laid out changes in a
// way the other hashed inputs do not show.
const builderVersion = "guestimage/2"

// Builder builds and caches images.
type Builder struct {
	// CacheDir holds the built images.
	CacheDir string
	// DebDir is where the kernel and busybox-static .debs are looked for
	// (then in apt's own archive cache) and downloaded to with
	// `apt-get download` when absent. Default: CacheDir/debs.
	DebDir string
}

// DefaultCacheDir is where images and .debs are cached between runs:
// $PETREL_GUEST_CACHE, else /var/cache/petrel/guest for root, else the
// user's cache directory.
func DefaultCacheDir() string {
	if d := os.Getenv("PETREL_GUEST_CACHE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/cache/petrel/guest"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "petrel", "guest")
	}
	return filepath.Join(os.TempDir(), "petrel-guest-cache")
}

// Build returns the path of the raw image of variant in cacheDir, building
// it first unless an image with the same inputs is already there.
func Build(ctx context.Context, variant Variant, cacheDir string) (string, error) {
	return (&Builder{CacheDir: cacheDir}).Build(ctx, variant)
}

// Build returns the path of the raw image of variant, building it first
// unless an image with the same inputs is already cached. Concurrent builds
// (also from other processes) are safe: each writes a private file and
// renames it into place.
func (b *Builder) Build(ctx context.Context, variant Variant) (string, error) {
	ver, err := variant.Version()
	if err != nil {
		return "", err
	}
	if err := checkTools(); err != nil {
		return "", err
	}
	debDir := b.DebDir
	if debDir == "" {
		debDir = filepath.Join(b.CacheDir, "debs")
	}
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		return "", err
	}
	kdeb, err := findDeb(ctx, debDir, "linux-image-*-cloud-amd64", kernelPackage)
	if err != nil {
		return "", err
	}
	bdeb, err := findDeb(ctx, debDir, "busybox-static", nil)
	if err != nil {
		return "", err
	}
	syslinuxBin, _ := exec.LookPath("syslinux")
	init := initScript(ver, variant == Busy)
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00", builderVersion, ver, init, syslinuxCfg, strings.Join(modules, ","))
	// A Debian .deb's file name carries its package, version and
	// architecture, and the archive never reuses a version for other
	// bytes: name and size identify the contents without reading 27 MB.
	for _, f := range []string{kdeb, bdeb} {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f), st.Size())
	}
	if err := hashFile(h, syslinuxBin); err != nil {
		return "", err
	}
	out := filepath.Join(b.CacheDir, fmt.Sprintf("%s-%s.raw", variant, hex.EncodeToString(h.Sum(nil))[:16]))
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	in, err := b.extract(ctx, kdeb, bdeb)
	if err != nil {
		return "", fmt.Errorf("guestimage: %w", err)
	}
	tmp, err := os.MkdirTemp(b.CacheDir, ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := buildImage(ctx, tmp, in, ver, init); err != nil {
		return "", fmt.Errorf("guestimage: build %s: %w", variant, err)
	}
	if err := os.Rename(filepath.Join(tmp, "disk.raw"), out); err != nil {
		return "", err
	}
	return out, nil
}

func checkTools() error {
	var missing []string
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, pkg+" ("+tool+")")
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	return fmt.Errorf("%w: install the Debian packages %s", ErrMissingTool, strings.Join(missing, ", "))
}

func hashFile(h io.Writer, name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}

// kernelPackage asks apt's lists which package the cloud kernel
// metapackage depends on (linux-image-<abi>-cloud-amd64).
func kernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", kernelMeta).Output()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends %s: %w", kernelMeta, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("apt-cache depends %s names no kernel package (run apt-get update)", kernelMeta)
}

// findDeb returns a .deb matching the package glob from debDir or apt's
// archive cache. When neither has one, it downloads the package into debDir
// with apt-get; resolve, if set, names the package to download. A cached
// .deb is used as is: remove debDir to pick up a newer kernel.
func findDeb(ctx context.Context, debDir, glob string, resolve func(context.Context) (string, error)) (string, error) {
	pattern := glob + "_*_amd64.deb"
	for _, dir := range []string{debDir, "/var/cache/apt/archives"} {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		if len(m) > 0 {
			return newest(m), nil
		}
	}
	pkg := glob
	if resolve != nil {
		var err error
		if pkg, err = resolve(ctx); err != nil {
			return "", fmt.Errorf("guestimage: %w", err)
		}
	}
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return "", err
	}
	// Download into a private directory, then move into place, so that
	// concurrent builds never see a partial file.
	tmp, err := os.MkdirTemp(debDir, ".download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	args := []string{"-q", "download", pkg}
	if os.Geteuid() == 0 {
		// apt drops to the _apt user for downloads, which cannot write here.
		args = append([]string{"-o", "APT::Sandbox::User=root"}, args...)
	}
	cmd := exec.CommandContext(ctx, "apt-get", args...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("guestimage: apt-get download %s: %w: %s", pkg, err, bytes.TrimSpace(out))
	}
	m, _ := filepath.Glob(filepath.Join(tmp, pattern))
	if len(m) != 1 {
		return "", fmt.Errorf("guestimage: apt-get download %s left %d files matching %s", pkg, len(m), pattern)
	}
	dst := filepath.Join(debDir, filepath.Base(m[0]))
	if err := os.Rename(m[0], dst); err != nil {
		return "", err
	}
	return dst, nil
}

// newest picks the most recently modified file.
func newest(files []string) string {
	best, bestT := files[0], int64(0)
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.ModTime().UnixNano() > bestT {
			best, bestT = f, st.ModTime().UnixNano()
		}
	}
	return best
}

// modules are the kernel modules the initramfs loads, in this order:
// busybox insmod resolves no dependencies, and the cloud kernel builds the
// disk, FAT and ACPI button drivers as modules.
var modules = []string{
	"drivers/virtio/virtio_ring", "drivers/virtio/virtio", "drivers/virtio/virtio_pci_modern_dev",
	"drivers/virtio/virtio_pci_legacy_dev", "drivers/virtio/virtio_pci", "drivers/block/virtio_blk",
	"drivers/scsi/scsi_common", "drivers/scsi/scsi_mod", "drivers/scsi/sd_mod", "drivers/ata/libata",
	"drivers/ata/ata_piix", "drivers/input/evdev", "drivers/acpi/button",
	"fs/fat/fat", "fs/fat/vfat", "fs/nls/nls_cp437", "fs/nls/nls_ascii",
}

// applets are the busybox applets the init uses, as symlinks in /bin.
var applets = []string{"sh", "mount", "umount", "cat", "sleep", "dd", "insmod", "acpid",
	"poweroff", "sync", "md5sum", "grep", "cut", "seq"}

const syslinuxCfg = `SERIAL 0 115200
CONSOLE 0
PROMPT 0
TIMEOUT 0
DEFAULT linux
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND console=ttyS0 quiet panic=-1
`

const powerButton = "#!/bin/sh\necho GUEST-POWEROFF\nsync; umount /mnt; poweroff -f\n"

// initScript is the initramfs's /init: load the drivers, print the banner,
// mount the disk (whole disk or partition 1), create or check the instance
// data, then print and record a heartbeat every second.
func initScript(ver string, busy bool) string {
	dirty := ""
	if busy {
		dirty = "(while true; do dd if=/dev/urandom of=/tmp/dirty bs=1M count=32 2>/dev/null; done) &\necho DIRTYING-MEMORY\n"
	}
	return "#!/bin/sh\nIMAGE_VERSION=" + ver + "\n" + `mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs -o size=48m tmp /tmp
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko 2>/dev/null; done
acpid -c /etc/acpi -l /dev/console
echo "=== IMAGE $IMAGE_VERSION BOOTED uptime=$(cut -d' ' -f1 /proc/uptime) ==="
D=; for i in $(seq 50); do for d in /dev/vda /dev/sda; do [ -b $d ] && D=$d && break 2; done; sleep 0.1; done
[ -n "$D" ] && for i in 1 2 3 4 5; do [ -b ${D}1 ] && D=${D}1 && break; sleep 0.05; done
if [ -n "$D" ] && mount -t vfat -o flush $D /mnt; then
  echo "DISK-MOUNTED dev=$D on-disk-version=$(cat /mnt/VERSION)"
  if [ -f /mnt/INSTANCE ]; then echo "INSTANCE-DATA $(cat /mnt/INSTANCE) md5-now=$(md5sum /mnt/data.bin | cut -d' ' -f1)"
  else dd if=/dev/urandom of=/mnt/data.bin bs=1M count=4 2>/dev/null
       echo "first-boot md5=$(md5sum /mnt/data.bin | cut -d' ' -f1)" > /mnt/INSTANCE; sync; echo "INSTANCE-CREATED $(cat /mnt/INSTANCE)"; fi
else echo "DISK-MISSING"; D=; fi
` + dirty + `i=0; while true; do i=$((i+1)); echo "HEARTBEAT $IMAGE_VERSION $i up=$(cut -d' ' -f1 /proc/uptime)"; [ -n "$D" ] && { echo $i > /mnt/HB; sync; }; sleep 1; done
`
}

// inputs are the files taken from the .debs.
type inputs struct {
	dir string // holds vmlinuz, busybox and <module>.ko
}

// extract takes the kernel, the modules and busybox out of the .debs into
// CacheDir/extract-<hash of the .deb names>, once: both variants share them.
func (b *Builder) extract(ctx context.Context, kdeb, bdeb string) (inputs, error) {
	sum := sha256.Sum256([]byte(builderVersion + "\x00" + filepath.Base(kdeb) + "\x00" + filepath.Base(bdeb)))
	dir := filepath.Join(b.CacheDir, "extract-"+hex.EncodeToString(sum[:])[:16])
	if _, err := os.Stat(filepath.Join(dir, "busybox")); err == nil {
		return inputs{dir}, nil
	}
	tmp, err := os.MkdirTemp(b.CacheDir, ".extract-")
	if err != nil {
		return inputs{}, err
	}
	defer os.RemoveAll(tmp)
	want := map[string]bool{}
	for _, m := range modules {
		want[m+".ko"] = true
	}
	found := 0
	write := func(name string, r io.Reader) error {
		f, err := os.Create(filepath.Join(tmp, name))
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, r); err != nil {
			f.Close()
			return err
		}
		found++
		return f.Close()
	}
	err = readDeb(ctx, kdeb, func(name string, r io.Reader) error {
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			return write("vmlinuz", r)
		case strings.Contains(name, "lib/modules/"):
			// [usr/]lib/modules/<abi>/kernel/<path>.ko
			rest := name[strings.Index(name, "lib/modules/")+len("lib/modules/"):]
			if i := strings.Index(rest, "/kernel/"); i >= 0 && want[rest[i+len("/kernel/"):]] {
				return write(path.Base(name), r)
			}
		}
		return nil
	})
	if err != nil {
		return inputs{}, err
	}
	if found != len(modules)+1 {
		return inputs{}, fmt.Errorf("%s: found %d of the kernel and %d modules", filepath.Base(kdeb), found, len(modules))
	}
	err = readDeb(ctx, bdeb, func(name string, r io.Reader) error {
		if name == "bin/busybox" {
			return write("busybox", r)
		}
		return nil
	})
	if err != nil {
		return inputs{}, err
	}
	if found != len(modules)+2 {
		return inputs{}, fmt.Errorf("%s: no bin/busybox", filepath.Base(bdeb))
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "busybox")); serr == nil {
			return inputs{dir}, nil // another build got there first
		}
		return inputs{}, err
	}
	return inputs{dir}, nil
}

func (in inputs) read(name string) ([]byte, error) { return os.ReadFile(filepath.Join(in.dir, name)) }

// buildImage writes dir/disk.raw.
func buildImage(ctx context.Context, dir string, in inputs, ver, init string) error {
	kernel, err := in.read("vmlinuz")
	if err != nil {
		return err
	}
	busybox, err := in.read("busybox")
	if err != nil {
		return err
	}
	kos := map[string][]byte{}
	for _, m := range modules {
		if kos[path.Base(m)], err = in.read(path.Base(m) + ".ko"); err != nil {
			return err
		}
	}

	// The initramfs, written as a newc cpio archive.
	var order []string
	for _, m := range modules {
		order = append(order, path.Base(m))
	}
	c := newCPIO()
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "mnt", "lib", "lib/modules", "etc", "etc/acpi", "etc/acpi/PWRF"} {
		c.dir(d)
	}
	c.charDev("dev/console", 0o600, 5, 1)
	c.file("bin/busybox", 0o755, busybox)
	for _, a := range applets {
		c.symlink("bin/"+a, "busybox")
	}
	for _, m := range order {
		c.file("lib/modules/"+m+".ko", 0o644, kos[m])
	}
	c.file("lib/modules/order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	c.file("etc/acpi/PWRF/00000080", 0o755, []byte(powerButton))
	c.file("init", 0o755, []byte(init))
	initrd, err := c.gzip()
	if err != nil {
		return err
	}

	files := map[string][]byte{"vmlinuz": kernel, "initrd.gz": initrd, "syslinux.cfg": []byte(syslinuxCfg), "VERSION": []byte(ver + "\n")}
	names := []string{"vmlinuz", "initrd.gz", "syslinux.cfg", "VERSION"}
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), files[n], 0o644); err != nil {
			return err
		}
	}
	img := filepath.Join(dir, "disk.raw")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	if err := f.Truncate(64 << 20); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	cmds := [][]string{{"mkfs.fat", "-F", "32", "-n", "PETRELTEST", img}}
	for _, n := range names {
		cmds = append(cmds, []string{"mcopy", "-i", img, filepath.Join(dir, n), "::" + n})
	}
	cmds = append(cmds, []string{"syslinux", "--install", img})
	for _, args := range cmds {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = dir
		// mtools would otherwise read the user's ~/.mtoolsrc and refuse
		// some FAT parameters.
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1", "MTOOLSRC=/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// readDeb calls fn for each regular file in a .deb's data archive, with its
// path relative to / (no leading "./").
func readDeb(ctx context.Context, deb string, fn func(name string, r io.Reader) error) error {
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(out)
	var rerr error
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(strings.TrimPrefix(hdr.Name, "./"), tr); err != nil {
			rerr = err
			break
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", filepath.Base(deb), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return rerr
}
