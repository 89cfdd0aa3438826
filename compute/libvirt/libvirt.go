// Package libvirt implements compute.Hypervisor on a libvirtd, speaking
// libvirt's RPC protocol through github.com/digitalocean/go-libvirt (no
// cgo, no libvirt client library).
//
// Domains are `type='qemu'` (TCG: these machines have no usable KVM), boot
// from their first disk through SeaBIOS, have one virtio qcow2 disk (the
// instance's overlay, cache='none') and a serial console appended to a file.
// The libvirt domain UUID is the server ID.
//
// A Driver is also the host's compute.HostStorage: base images and
// instance files are libvirt storage volumes in two dir pools on the
// daemon's host (storage.go), so the site controller, which reaches a host
// only over the network (qemu+tls), never needs the host's filesystem.
//
// go-libvirt's calls take no context: a Driver checks ctx between calls and
// while it waits, but a call to a hung daemon blocks until the connection
// fails.
package libvirt

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/compute"
)

// Driver is a connection to one libvirtd.
type Driver struct {
	l    *golibvirt.Libvirt
	conn *atomic.Pointer[streamConn] // the connection under l
	opts Options

	poolMu sync.Mutex
	pools  map[string]golibvirt.StoragePool // pools made ready on this connection

	baseMu    sync.Mutex
	baseLocks map[string]*baseLock // by sum: one PutBase of a sum at a time
}

var (
	_ compute.Hypervisor  = (*Driver)(nil)
	_ compute.HostStorage = (*Driver)(nil)
)

// Options tune a Driver. The zero value of each field means its default,
// which suits every daemon compute/libvirtd starts.
type Options struct {
	// BasePool is the dir pool that holds base images, at BaseDir on the
	// host. Defaults: "petrel-base", "/var/lib/libvirt/petrel/base".
	BasePool, BaseDir string
	// InstancePool is the dir pool that holds instances' overlays and
	// console logs, at InstanceDir on the host. Defaults:
	// "petrel-instances", "/var/lib/libvirt/petrel/instances".
	InstancePool, InstanceDir string
	// SoftRebootTimeout is how long a soft Reboot waits for the guest to
	// go down before it resets the domain. Default: 2 minutes (Nova's
	// wait_soft_reboot_seconds).
	SoftRebootTimeout time.Duration

	// TLS is the client side of a qemu+tls connection: the client's
	// certificate (the daemon admits it by its CA and distinguished name)
	// and RootCAs, the CA the daemon's certificate must chain to. The
	// daemon's certificate must also name the URI's host (an IP address
	// as an IP SAN) unless ServerName says otherwise. TLS 1.2 at least.
	// Required for qemu+tls, ignored by other transports.
	TLS *tls.Config
	// DialContext, if set, opens the TCP connection of a qemu+tcp or
	// qemu+tls URI instead of a net.Dialer, e.g. lab/hostnet.DialIn into
	// a lab host's network namespace. addr is the URI's host and port.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// The defaults of Options.
const (
	DefaultBasePool          = "petrel-base"
	DefaultBaseDir           = "/var/lib/libvirt/petrel/base"
	DefaultInstancePool      = "petrel-instances"
	DefaultInstanceDir       = "/var/lib/libvirt/petrel/instances"
	DefaultSoftRebootTimeout = 2 * time.Minute
)

func (o Options) withDefaults() Options {
	set := func(s *string, def string) {
		if *s == "" {
			*s = def
		}
	}
	set(&o.BasePool, DefaultBasePool)
	set(&o.BaseDir, DefaultBaseDir)
	set(&o.InstancePool, DefaultInstancePool)
	set(&o.InstanceDir, DefaultInstanceDir)
	if o.SoftRebootTimeout <= 0 {
		o.SoftRebootTimeout = DefaultSoftRebootTimeout
	}
	return o
}

func newDriver(l *golibvirt.Libvirt, conn *atomic.Pointer[streamConn], opts Options) *Driver {
	return &Driver{l: l, conn: conn, opts: opts.withDefaults()}
}

// Dial connects to the libvirtd at uri: "qemu:///system?socket=PATH" (a
// unix socket), "qemu:///system" (the default socket) or
// "qemu+tcp://HOST[:PORT]/system" (no authentication: tests and lab
// only). Other transports are refused: every connection is a streamConn
// (conn.go). qemu+tls needs DialOptions. The Driver has the default
// Options.
func Dial(ctx context.Context, uri string) (*Driver, error) {
	return DialOptions(ctx, uri, Options{})
}

// DialOptions is Dial with opts; with opts.TLS it also accepts
// "qemu+tls://HOST[:PORT]/system" (port 16514 by default), mutually
// authenticated TLS: the client verifies the daemon's certificate against
// opts.TLS.RootCAs and HOST, and the daemon admits the client by its
// certificate (ErrCertRefused if it does not).
func DialOptions(ctx context.Context, uri string, opts Options) (*Driver, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("libvirt: uri %q: %w", uri, err)
	}
	dialer, err := dialerFor(ctx, u, opts)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, conn, err := connect(dialer, golibvirt.RemoteURI(u))
	if err != nil {
		return nil, fmt.Errorf("libvirt: %s: %w", uri, err)
	}
	return newDriver(l, conn, opts), nil
}

// DialFunc connects to a daemon over the connection dial opens (a
// qemu:///system connection on it): for a caller that must open the
// socket itself, such as a process in the machine's root namespace
// reaching a lab host's libvirtd inside the host's network namespace
// (lab/hostnet.DialIn). The Driver has the default Options.
func DialFunc(ctx context.Context, dial func() (net.Conn, error)) (*Driver, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l, conn, err := connect(dialerFunc(dial), golibvirt.QEMUSystem)
	if err != nil {
		return nil, fmt.Errorf("libvirt: connect: %w", err)
	}
	return newDriver(l, conn, Options{}), nil
}

type dialerFunc func() (net.Conn, error)

func (f dialerFunc) Dial() (net.Conn, error) { return f() }

// closeWait bounds a graceful disconnect: a daemon whose host vanished
// (powered off: no FIN, no RST) never answers it.
const closeWait = 2 * time.Second

// Close disconnects: gracefully if the daemon answers within closeWait,
// else by closing the connection under it, so that Close never hangs on
// a daemon that is gone.
func (d *Driver) Close() error {
	done := make(chan error, 1)
	go func() { done <- d.l.Disconnect() }()
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	if d.conn != nil {
		if c := d.conn.Load(); c != nil {
			c.Conn.Close()
		}
	}
	t.Reset(closeWait)
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errors.New("libvirt: the daemon did not answer the disconnect; its connection is closed")
	}
}

// Version is the daemon's libvirt version, e.g. "9.0.0".
func (d *Driver) Version(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	v, err := d.l.ConnectGetLibVersion()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000), nil
}

// WarmCapabilities asks the daemon for QEMU's domain capabilities. A
// daemon with a cold cache probes QEMU first (~4 s); doing it up front
// keeps that out of the first Start.
func (d *Driver) WarmCapabilities(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	_, err := d.l.ConnectGetDomainCapabilities(golibvirt.OptString{"/usr/bin/qemu-system-x86_64"},
		golibvirt.OptString{"x86_64"}, golibvirt.OptString{"pc"}, golibvirt.OptString{"qemu"}, 0)
	return err
}

// domainXML is the subset of libvirt's domain XML Petrel writes.
type domainXML struct {
	XMLName xml.Name `xml:"domain"`
	Type    string   `xml:"type,attr"`
	Name    string   `xml:"name"`
	UUID    string   `xml:"uuid"`
	Memory  struct {
		Unit  string `xml:"unit,attr"`
		Value int    `xml:",chardata"`
	} `xml:"memory"`
	VCPU int `xml:"vcpu"`
	OS   struct {
		Type struct {
			Arch    string `xml:"arch,attr"`
			Machine string `xml:"machine,attr"`
			Value   string `xml:",chardata"`
		} `xml:"type"`
		Boot struct {
			Dev string `xml:"dev,attr"`
		} `xml:"boot"`
	} `xml:"os"`
	Features struct {
		ACPI struct{} `xml:"acpi"`
		// TCG caps QEMU's translation cache (TCG only): its default
		// (1 GiB on x86-64 hosts, filled as the guest runs) costs more
		// resident memory than a small guest itself.
		TCG *struct {
			TBCache struct {
				Unit  string `xml:"unit,attr"`
				Value int    `xml:",chardata"`
			} `xml:"tb-cache"`
		} `xml:"tcg,omitempty"`
	} `xml:"features"`
	Clock struct {
		Offset string `xml:"offset,attr"`
	} `xml:"clock"`
	OnPoweroff string     `xml:"on_poweroff"`
	OnReboot   string     `xml:"on_reboot"`
	OnCrash    string     `xml:"on_crash"`
	Devices    devicesXML `xml:"devices"`
}

type devicesXML struct {
	Emulator string          `xml:"emulator,omitempty"`
	Disks    []diskXML       `xml:"disk"`
	Controls []controllerXML `xml:"controller"`
	Serials  []serialXML     `xml:"serial"`
	Balloon  struct {
		Model string `xml:"model,attr"`
	} `xml:"memballoon"`
}

type controllerXML struct {
	Type  string `xml:"type,attr"`
	Model string `xml:"model,attr"`
}

type diskXML struct {
	Type   string `xml:"type,attr"`
	Device string `xml:"device,attr"`
	Driver struct {
		Name  string `xml:"name,attr"`
		Type  string `xml:"type,attr"`
		Cache string `xml:"cache,attr"`
	} `xml:"driver"`
	Source struct {
		File string `xml:"file,attr"`
	} `xml:"source"`
	Target struct {
		Dev string `xml:"dev,attr"`
		Bus string `xml:"bus,attr"`
	} `xml:"target"`
}

type serialXML struct {
	Type   string `xml:"type,attr"`
	Source struct {
		Path   string `xml:"path,attr"`
		Append string `xml:"append,attr,omitempty"`
	} `xml:"source"`
	Target struct {
		Port int `xml:"port,attr"`
	} `xml:"target"`
}

// TBCacheMiB is the TCG translation cache of every domain. 32 MiB keeps a
// small guest's QEMU near its own memory size without slowing the test
// guest's boot.
const TBCacheMiB = 32

// DomainXML renders spec as libvirt domain XML.
func DomainXML(spec compute.DomainSpec) ([]byte, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	var x domainXML
	x.Type = "qemu" // TCG
	x.Features.TCG = &struct {
		TBCache struct {
			Unit  string `xml:"unit,attr"`
			Value int    `xml:",chardata"`
		} `xml:"tb-cache"`
	}{}
	x.Features.TCG.TBCache.Unit, x.Features.TCG.TBCache.Value = "MiB", TBCacheMiB
	x.Name = spec.Name
	x.UUID = spec.ID
	x.Memory.Unit, x.Memory.Value = "MiB", spec.MemoryMiB
	x.VCPU = spec.VCPUs
	x.OS.Type.Arch, x.OS.Type.Machine, x.OS.Type.Value = "x86_64", "pc", "hvm"
	x.OS.Boot.Dev = "hd"
	x.Clock.Offset = "utc"
	x.OnPoweroff, x.OnReboot, x.OnCrash = "destroy", "restart", "destroy"
	x.Devices.Emulator = "/usr/bin/qemu-system-x86_64"
	var disk diskXML
	disk.Type, disk.Device = "file", "disk"
	disk.Driver.Name, disk.Driver.Type, disk.Driver.Cache = "qemu", "qcow2", "none"
	disk.Source.File = spec.Disk
	disk.Target.Dev, disk.Target.Bus = "vda", "virtio"
	x.Devices.Disks = []diskXML{disk}
	x.Devices.Controls = []controllerXML{{Type: "usb", Model: "none"}}
	var serial serialXML
	serial.Type = "file"
	serial.Source.Path, serial.Source.Append = spec.ConsoleLog, "on"
	x.Devices.Serials = []serialXML{serial}
	x.Devices.Balloon.Model = "none"
	return xml.MarshalIndent(x, "", "  ")
}

// Define creates or updates the domain's persistent definition; libvirt
// validates the XML against its schema.
func (d *Driver) Define(ctx context.Context, spec compute.DomainSpec) error {
	doc, err := DomainXML(spec)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := d.l.DomainDefineXMLFlags(string(doc), golibvirt.DomainDefineValidate); err != nil {
		return fmt.Errorf("libvirt: define %s: %w", spec.ID, err)
	}
	return nil
}

// lookup finds a domain by its UUID.
func (d *Driver) lookup(ctx context.Context, id string) (golibvirt.Domain, error) {
	if err := ctx.Err(); err != nil {
		return golibvirt.Domain{}, err
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return golibvirt.Domain{}, fmt.Errorf("libvirt: domain %q: %w", id, compute.ErrNotFound)
	}
	dom, err := d.l.DomainLookupByUUID(golibvirt.UUID(u))
	if golibvirt.IsNotFound(err) {
		return golibvirt.Domain{}, fmt.Errorf("libvirt: domain %s: %w", id, compute.ErrNotFound)
	}
	return dom, err
}

// Start boots the domain; a running domain is left as it is.
func (d *Driver) Start(ctx context.Context, id string) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if st, err := d.state(dom); err == nil && st == compute.StateRunning {
		return nil
	}
	if _, err := d.l.DomainCreateWithFlags(dom, 0); err != nil {
		if st, serr := d.state(dom); serr == nil && st == compute.StateRunning {
			return nil // started concurrently
		}
		return fmt.Errorf("libvirt: start %s: %w", id, err)
	}
	return nil
}

// Stop presses the guest's ACPI power button, waits up to timeout for it
// to power off, then destroys it.
func (d *Driver) Stop(ctx context.Context, id string, timeout time.Duration) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if st, err := d.state(dom); err == nil && st == compute.StateShutoff {
		return nil
	}
	// An error here (guest not running, or ACPI not ready) leaves the
	// wait below to decide.
	_ = d.l.DomainShutdownFlags(dom, golibvirt.DomainShutdownAcpiPowerBtn)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := d.state(dom)
		if err != nil {
			return fmt.Errorf("libvirt: stop %s: %w", id, err)
		}
		if st == compute.StateShutoff {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return d.Destroy(ctx, id)
		case <-tick.C:
		}
	}
}

// Destroy stops the domain at once; a stopped domain is left as it is.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if err := d.l.DomainDestroyFlags(dom, golibvirt.DomainDestroyDefault); err != nil {
		if st, serr := d.state(dom); serr == nil && st == compute.StateShutoff {
			return nil
		}
		return fmt.Errorf("libvirt: destroy %s: %w", id, err)
	}
	return nil
}

// Reboot restarts a running domain. Hard resets it at once (virDomainReset:
// the guest gets no warning). Soft asks the guest through ACPI. libvirt's
// QEMU driver implements an ACPI reboot as a "fake reboot": it presses the
// power button, and when the guest powers off it resets the domain instead
// of stopping it (the petrel-test guest prints GUEST-POWEROFF, then boots
// again; the domain stays running and libvirt sends a reboot event, no
// lifecycle event). Soft Reboot waits up to Options.SoftRebootTimeout for
// that reboot event. If the domain ends shut off instead (a definition
// that destroys on reboot, or a guest that powered itself off), it starts
// it again. If the guest does not react in time, or refuses the request,
// it resets the domain. A domain that is not running is an error.
func (d *Driver) Reboot(ctx context.Context, id string, hard bool) error {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return err
	}
	if hard {
		return d.reset(dom, id)
	}
	return d.softReboot(ctx, dom, id)
}

func (d *Driver) reset(dom golibvirt.Domain, id string) error {
	if err := d.l.DomainReset(dom, 0); err != nil {
		return fmt.Errorf("libvirt: reset %s: %w", id, err)
	}
	return nil
}

func (d *Driver) softReboot(ctx context.Context, dom golibvirt.Domain, id string) error {
	if st, err := d.state(dom); err != nil {
		return err
	} else if st != compute.StateRunning {
		return fmt.Errorf("libvirt: reboot %s: domain is %s, not running", id, st)
	}
	// Subscribe before asking, so the reboot event cannot be missed.
	sctx, cancel := context.WithCancel(ctx)
	evs, err := d.l.SubscribeEvents(sctx, golibvirt.DomainEventIDReboot, nil)
	if err != nil {
		cancel()
		return fmt.Errorf("libvirt: reboot %s: events: %w", id, err)
	}
	defer func() {
		cancel()
		for range evs { // go-libvirt's sender blocks until it sees the cancel
		}
	}()
	if err := d.l.DomainReboot(dom, golibvirt.DomainRebootAcpiPowerBtn); err != nil {
		if st, serr := d.state(dom); serr == nil && st == compute.StateRunning {
			return d.reset(dom, id) // the guest cannot be asked: take it as no answer
		}
		return fmt.Errorf("libvirt: reboot %s: %w", id, err)
	}
	deadline := time.NewTimer(d.opts.SoftRebootTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				return fmt.Errorf("libvirt: reboot %s: connection lost", id)
			}
			if m, ok := ev.(*golibvirt.DomainEventCallbackRebootMsg); ok && m.Msg.Dom.UUID == dom.UUID {
				return nil
			}
		case <-tick.C:
			st, err := d.state(dom)
			if err != nil {
				return fmt.Errorf("libvirt: reboot %s: %w", id, err)
			}
			if st == compute.StateShutoff {
				return d.Start(ctx, id)
			}
		case <-deadline.C:
			return d.reset(dom, id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// HostInfo reports the host's CPUs and memory (virNodeGetInfo) and the
// daemon's libvirt version.
func (d *Driver) HostInfo(ctx context.Context) (compute.HostInfo, error) {
	if err := ctx.Err(); err != nil {
		return compute.HostInfo{}, err
	}
	_, memKiB, cpus, _, _, _, _, _, err := d.l.NodeGetInfo()
	if err != nil {
		return compute.HostInfo{}, fmt.Errorf("libvirt: node info: %w", err)
	}
	v, err := d.Version(ctx)
	if err != nil {
		return compute.HostInfo{}, fmt.Errorf("libvirt: version: %w", err)
	}
	return compute.HostInfo{CPUs: int(cpus), MemoryMiB: int64(memKiB / 1024), Version: v}, nil
}

// Undefine removes the definition; an unknown domain is not an error. A
// running domain stays running, transient, until it is destroyed.
func (d *Driver) Undefine(ctx context.Context, id string) error {
	dom, err := d.lookup(ctx, id)
	if errors.Is(err, compute.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	flags := golibvirt.DomainUndefineManagedSave | golibvirt.DomainUndefineSnapshotsMetadata
	if err := d.l.DomainUndefineFlags(dom, flags); err != nil && !golibvirt.IsNotFound(err) {
		return fmt.Errorf("libvirt: undefine %s: %w", id, err)
	}
	return nil
}

// State reports the domain's run state.
func (d *Driver) State(ctx context.Context, id string) (compute.State, error) {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return compute.StateUnknown, err
	}
	return d.state(dom)
}

func (d *Driver) state(dom golibvirt.Domain) (compute.State, error) {
	st, _, err := d.l.DomainGetState(dom, 0)
	if golibvirt.IsNotFound(err) {
		return compute.StateUnknown, fmt.Errorf("libvirt: domain %s: %w", uuidString(dom.UUID), compute.ErrNotFound)
	}
	if err != nil {
		return compute.StateUnknown, err
	}
	return stateOf(golibvirt.DomainState(st)), nil
}

func stateOf(s golibvirt.DomainState) compute.State {
	switch s {
	case golibvirt.DomainRunning:
		return compute.StateRunning
	case golibvirt.DomainBlocked:
		return compute.StateBlocked
	case golibvirt.DomainPaused:
		return compute.StatePaused
	case golibvirt.DomainShutdown:
		return compute.StateShuttingDown
	case golibvirt.DomainShutoff:
		return compute.StateShutoff
	case golibvirt.DomainCrashed:
		return compute.StateCrashed
	case golibvirt.DomainPmsuspended:
		return compute.StateSuspended
	}
	return compute.StateUnknown
}

func uuidString(u golibvirt.UUID) string { return uuid.UUID(u).String() }

// MaxConsoleLog is how much of the end of a console log ConsoleLog returns.
const MaxConsoleLog = 1 << 20

// ConsoleLog returns up to MaxConsoleLog bytes from the end of the file
// the domain's serial console is written to. It reads the file through
// libvirt when the file is a storage volume (CreateInstanceFiles makes it
// one; a file in a pool directory that libvirt has not seen yet is found by
// refreshing that pool), so it works without access to the host's files.
// Otherwise it reads the file where this process sees it.
func (d *Driver) ConsoleLog(ctx context.Context, id string) ([]byte, error) {
	dom, err := d.lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	doc, err := d.l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return nil, fmt.Errorf("libvirt: %s: %w", id, err)
	}
	var x domainXML
	if err := xml.Unmarshal([]byte(doc), &x); err != nil {
		return nil, fmt.Errorf("libvirt: %s: domain XML: %w", id, err)
	}
	for _, s := range x.Devices.Serials {
		if s.Type != "file" || s.Source.Path == "" {
			continue
		}
		vol, ok, err := d.volByPath(ctx, s.Source.Path)
		if err != nil {
			return nil, fmt.Errorf("libvirt: %s console log: %w", id, err)
		}
		if !ok {
			return tail(s.Source.Path, MaxConsoleLog)
		}
		b, err := d.volTail(vol, MaxConsoleLog)
		if err != nil {
			return nil, fmt.Errorf("libvirt: %s console log: %w", id, err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("libvirt: %s has no serial console file", id)
}

func tail(name string, max int64) ([]byte, error) {
	f, err := os.Open(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil // not started yet
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > max {
		if _, err := f.Seek(st.Size()-max, io.SeekStart); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// List returns every domain, defined or running.
func (d *Driver) List(ctx context.Context) ([]compute.Domain, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	doms, _, err := d.l.ConnectListAllDomains(1, 0)
	if err != nil {
		return nil, fmt.Errorf("libvirt: list: %w", err)
	}
	out := make([]compute.Domain, 0, len(doms))
	for _, dom := range doms {
		st, err := d.state(dom)
		if errors.Is(err, compute.ErrNotFound) {
			continue // gone meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, compute.Domain{ID: uuidString(dom.UUID), Name: dom.Name, State: st})
	}
	return out, nil
}
