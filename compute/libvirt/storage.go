package libvirt

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/petrel-edge/petrel/compute"
)

// Host storage: base images and instance files are volumes of two libvirt
// dir pools on the daemon's host, made on first use.
//
//	petrel-base       <sum>             a base image, its bytes as uploaded
//	                  <sum>.ok          the marker: "size=N format=F\n"
//	petrel-instances  <id>.qcow2        an instance's overlay on a base
//	                  <id>.console.log  its serial console log
//
// PutBase writes the marker only after every byte of the base is in, so a
// base without a marker (or whose size differs from the marker's) is an
// upload that was cut off, and HasBase reports false until a PutBase
// replaces it.

// markerSuffix names a base's completion marker: <sum>.ok.
const markerSuffix = ".ok"

var sumPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func checkSum(sum string) error {
	if !sumPattern.MatchString(sum) {
		return fmt.Errorf("libvirt: base %q is not a lower-case hex SHA-256", sum)
	}
	return nil
}

func checkInstanceID(id string) error {
	if id == "" || id != filepath.Base(id) || id[0] == '.' {
		return fmt.Errorf("libvirt: instance id %q is not a file name", id)
	}
	return nil
}

// poolXML is a dir pool's definition.
type poolXML struct {
	XMLName xml.Name `xml:"pool"`
	Type    string   `xml:"type,attr"`
	Name    string   `xml:"name"`
	Target  struct {
		Path string `xml:"path"`
	} `xml:"target"`
}

// volXML is the subset of a storage volume's XML Petrel writes.
type volXML struct {
	XMLName    xml.Name `xml:"volume"`
	Name       string   `xml:"name"`
	Capacity   *sizeXML `xml:"capacity,omitempty"`
	Allocation *sizeXML `xml:"allocation,omitempty"`
	Target     struct {
		Format formatXML `xml:"format"`
		Compat string    `xml:"compat,omitempty"`
	} `xml:"target"`
	BackingStore *backingXML `xml:"backingStore,omitempty"`
}

type sizeXML struct {
	Unit  string `xml:"unit,attr"`
	Value int64  `xml:",chardata"`
}

type formatXML struct {
	Type string `xml:"type,attr"`
}

type backingXML struct {
	Path   string    `xml:"path"`
	Format formatXML `xml:"format"`
}

// rawVol describes a raw file volume of size bytes, sparse: its bytes come
// by upload, so libvirt need not write zeros first.
func rawVol(name string, size int64) volXML {
	var v volXML
	v.Name = name
	v.Capacity = &sizeXML{Unit: "bytes", Value: size}
	v.Allocation = &sizeXML{Unit: "bytes", Value: 0}
	v.Target.Format.Type = "raw"
	return v
}

// libvirtCode reports whether err is a libvirt error with code c.
func libvirtCode(err error, c golibvirt.ErrorNumber) bool {
	var e golibvirt.Error
	return errors.As(err, &e) && e.Code == uint32(c)
}

// pool returns the dir pool name at dir, defining, building, starting and
// marking it autostart if need be. A pool ready once stays known for the
// connection's life.
func (d *Driver) pool(ctx context.Context, name, dir string) (golibvirt.StoragePool, error) {
	if err := ctx.Err(); err != nil {
		return golibvirt.StoragePool{}, err
	}
	d.poolMu.Lock()
	defer d.poolMu.Unlock()
	if p, ok := d.pools[name]; ok {
		return p, nil
	}
	p, err := d.l.StoragePoolLookupByName(name)
	if libvirtCode(err, golibvirt.ErrNoStoragePool) {
		var x poolXML
		x.Type, x.Name, x.Target.Path = "dir", name, dir
		doc, _ := xml.Marshal(x)
		p, err = d.l.StoragePoolDefineXML(string(doc), 0)
		if err != nil {
			// Another client may have defined it meanwhile.
			var lerr error
			if p, lerr = d.l.StoragePoolLookupByName(name); lerr != nil {
				return p, fmt.Errorf("libvirt: define pool %s: %w", name, err)
			}
		} else if err := d.l.StoragePoolBuild(p, golibvirt.StoragePoolBuildNew); err != nil {
			return p, fmt.Errorf("libvirt: build pool %s: %w", name, err)
		}
	} else if err != nil {
		return p, fmt.Errorf("libvirt: pool %s: %w", name, err)
	}
	doc, err := d.l.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return p, fmt.Errorf("libvirt: pool %s: %w", name, err)
	}
	var x poolXML
	if err := xml.Unmarshal([]byte(doc), &x); err != nil {
		return p, fmt.Errorf("libvirt: pool %s: %w", name, err)
	}
	if x.Type != "dir" || x.Target.Path != dir {
		return p, fmt.Errorf("libvirt: pool %s is a %s pool at %s; want a dir pool at %s", name, x.Type, x.Target.Path, dir)
	}
	if active, err := d.l.StoragePoolIsActive(p); err != nil {
		return p, fmt.Errorf("libvirt: pool %s: %w", name, err)
	} else if active == 0 {
		if err := d.l.StoragePoolCreate(p, 0); err != nil && !libvirtCode(err, golibvirt.ErrOperationInvalid) {
			return p, fmt.Errorf("libvirt: start pool %s: %w", name, err)
		}
	}
	if err := d.l.StoragePoolSetAutostart(p, 1); err != nil {
		return p, fmt.Errorf("libvirt: autostart pool %s: %w", name, err)
	}
	if d.pools == nil {
		d.pools = map[string]golibvirt.StoragePool{}
	}
	d.pools[name] = p
	return p, nil
}

func (d *Driver) basePool(ctx context.Context) (golibvirt.StoragePool, error) {
	return d.pool(ctx, d.opts.BasePool, d.opts.BaseDir)
}

func (d *Driver) instancePool(ctx context.Context) (golibvirt.StoragePool, error) {
	return d.pool(ctx, d.opts.InstancePool, d.opts.InstanceDir)
}

// vol looks a volume up by name; ok is false if the pool has none.
func (d *Driver) vol(p golibvirt.StoragePool, name string) (v golibvirt.StorageVol, ok bool, err error) {
	v, err = d.l.StorageVolLookupByName(p, name)
	if libvirtCode(err, golibvirt.ErrNoStorageVol) {
		return v, false, nil
	}
	if err != nil {
		return v, false, fmt.Errorf("libvirt: volume %s/%s: %w", p.Name, name, err)
	}
	return v, true, nil
}

// deleteVol deletes a volume; an absent one is no error. With refresh, a
// file the pool has not seen (made behind libvirt's back) is looked for by
// refreshing the pool first.
func (d *Driver) deleteVol(p golibvirt.StoragePool, name string, refresh bool) error {
	v, ok, err := d.vol(p, name)
	if err == nil && !ok && refresh {
		// Best effort: a refresh is refused while the pool builds a volume.
		if d.l.StoragePoolRefresh(p, 0) == nil {
			v, ok, err = d.vol(p, name)
		}
	}
	if err != nil || !ok {
		return err
	}
	if err := d.l.StorageVolDelete(v, golibvirt.StorageVolDeleteNormal); err != nil && !libvirtCode(err, golibvirt.ErrNoStorageVol) {
		return fmt.Errorf("libvirt: delete volume %s/%s: %w", p.Name, name, err)
	}
	return nil
}

// createVol creates a volume. If a file of that name that the pool does
// not know is in the way, it refreshes the pool, deletes it and tries again.
func (d *Driver) createVol(p golibvirt.StoragePool, x volXML) (golibvirt.StorageVol, error) {
	doc, err := xml.Marshal(x)
	if err != nil {
		return golibvirt.StorageVol{}, err
	}
	v, err := d.l.StorageVolCreateXML(p, string(doc), 0)
	if err != nil {
		if _, ok, _ := d.vol(p, x.Name); !ok && d.l.StoragePoolRefresh(p, 0) == nil {
			if _, ok, _ := d.vol(p, x.Name); ok && d.deleteVol(p, x.Name, false) == nil {
				v, err = d.l.StorageVolCreateXML(p, string(doc), 0)
			}
		}
	}
	if err != nil {
		return v, fmt.Errorf("libvirt: create volume %s/%s: %w", p.Name, x.Name, err)
	}
	return v, nil
}

// volSize is a volume's size in bytes: the file's own size, not the
// virtual disk's (virStorageVolGetInfoFlags with GET_PHYSICAL reports it
// in place of the allocation). libvirt re-reads a dir pool volume's file
// on every call, so the size is current.
func (d *Driver) volSize(v golibvirt.StorageVol) (int64, error) {
	_, _, physical, err := d.l.StorageVolGetInfoFlags(v, uint32(golibvirt.StorageVolGetPhysical))
	if err != nil {
		return 0, fmt.Errorf("libvirt: volume %s/%s: %w", v.Pool, v.Name, err)
	}
	return int64(physical), nil
}

// volTail downloads up to max bytes from the end of a volume's file.
func (d *Driver) volTail(v golibvirt.StorageVol, max int64) ([]byte, error) {
	size, err := d.volSize(v)
	if err != nil || size == 0 {
		return nil, err // a download of length 0 would mean "to the end"
	}
	off := int64(0)
	if size > max {
		off = size - max
	}
	var buf bytes.Buffer
	buf.Grow(int(size - off))
	if err := d.l.StorageVolDownload(v, &buf, uint64(off), uint64(size-off), 0); err != nil {
		return nil, fmt.Errorf("libvirt: download %s/%s: %w", v.Pool, v.Name, err)
	}
	return buf.Bytes(), nil
}

// volByPath finds the volume at path on the host. A file that is in a
// pool's directory but unknown to the pool (QEMU created it) is found by
// refreshing that pool. ok is false for a file in no pool.
func (d *Driver) volByPath(ctx context.Context, path string) (v golibvirt.StorageVol, ok bool, err error) {
	if err := ctx.Err(); err != nil {
		return v, false, err
	}
	v, err = d.l.StorageVolLookupByPath(path)
	if err == nil {
		return v, true, nil
	}
	if !libvirtCode(err, golibvirt.ErrNoStorageVol) {
		return v, false, err
	}
	p, perr := d.l.StoragePoolLookupByTargetPath(filepath.Dir(path))
	if perr != nil || d.l.StoragePoolRefresh(p, 0) != nil {
		return v, false, nil
	}
	v, err = d.l.StorageVolLookupByPath(path)
	if libvirtCode(err, golibvirt.ErrNoStorageVol) {
		return v, false, nil
	}
	return v, err == nil, err
}

// marker is what a base's marker volume holds.
type marker struct {
	size   int64
	format compute.DiskFormat
}

func (m marker) String() string { return fmt.Sprintf("size=%d format=%s\n", m.size, m.format) }

func parseMarker(b []byte) (marker, bool) {
	var m marker
	var format string
	if _, err := fmt.Sscanf(string(b), "size=%d format=%s\n", &m.size, &format); err != nil {
		return marker{}, false
	}
	m.format = compute.DiskFormat(format)
	if m.String() != string(b) || !m.format.Valid() || m.size <= 0 {
		return marker{}, false
	}
	return m, true
}

// base reports whether base sum is complete: its marker reads well and
// its volume has the marker's size. It returns the base's volume and
// marker when it is.
func (d *Driver) base(p golibvirt.StoragePool, sum string) (golibvirt.StorageVol, marker, bool, error) {
	mv, ok, err := d.vol(p, sum+markerSuffix)
	if err != nil || !ok {
		return golibvirt.StorageVol{}, marker{}, false, err
	}
	b, err := d.volTail(mv, 256)
	if err != nil {
		return golibvirt.StorageVol{}, marker{}, false, err
	}
	m, ok := parseMarker(b)
	if !ok {
		return golibvirt.StorageVol{}, marker{}, false, nil // cut off while being written
	}
	v, ok, err := d.vol(p, sum)
	if err != nil || !ok {
		return golibvirt.StorageVol{}, marker{}, false, err
	}
	size, err := d.volSize(v)
	if err != nil || size != m.size {
		return golibvirt.StorageVol{}, marker{}, false, err
	}
	return v, m, true, nil
}

// HasBase reports whether base image sum is complete on the host: its
// marker is there and its volume has the size the marker records.
func (d *Driver) HasBase(ctx context.Context, sum string) (bool, error) {
	if err := checkSum(sum); err != nil {
		return false, err
	}
	p, err := d.basePool(ctx)
	if err != nil {
		return false, err
	}
	_, _, ok, err := d.base(p, sum)
	return ok, err
}

// baseLock serialises PutBase calls of one sum; waiting for it respects
// the caller's context.
type baseLock struct {
	ch   chan struct{}
	refs int
}

func (d *Driver) lockBase(ctx context.Context, sum string) (unlock func(), err error) {
	d.baseMu.Lock()
	if d.baseLocks == nil {
		d.baseLocks = map[string]*baseLock{}
	}
	bl := d.baseLocks[sum]
	if bl == nil {
		bl = &baseLock{ch: make(chan struct{}, 1)}
		d.baseLocks[sum] = bl
	}
	bl.refs++
	d.baseMu.Unlock()
	release := func() {
		d.baseMu.Lock()
		if bl.refs--; bl.refs == 0 {
			delete(d.baseLocks, sum)
		}
		d.baseMu.Unlock()
	}
	select {
	case bl.ch <- struct{}{}:
		return func() { <-bl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// PutBase uploads base image sum, size bytes from r in format, unless it
// is already complete on the host (then r is not read). The bytes go
// verbatim into a raw volume of exactly size bytes, which is the file a
// qcow2 image needs too: qemu-img and libvirt see a qcow2 base as qcow2 by
// its header. A stream that ends early, runs long or fails, or a ctx that
// ends, aborts the upload (the partial volume is deleted if the daemon is
// still reachable). Only then is the marker written. A leftover of an
// earlier cut-off PutBase is deleted first. Concurrent PutBase calls of
// one sum on one Driver take turns; the second finds the base complete.
func (d *Driver) PutBase(ctx context.Context, sum string, format compute.DiskFormat, size int64, r io.Reader) error {
	if err := checkSum(sum); err != nil {
		return err
	}
	if !format.Valid() {
		return fmt.Errorf("libvirt: base %s: unknown disk format %q", sum, format)
	}
	if size <= 0 {
		return fmt.Errorf("libvirt: base %s: size %d: %w", sum, size, compute.ErrSizeMismatch)
	}
	p, err := d.basePool(ctx)
	if err != nil {
		return err
	}
	unlock, err := d.lockBase(ctx, sum)
	if err != nil {
		return err
	}
	defer unlock()
	if _, _, ok, err := d.base(p, sum); err != nil || ok {
		return err
	}
	// The marker goes first: from here on the base is incomplete.
	if err := d.deleteVol(p, sum+markerSuffix, false); err != nil {
		return err
	}
	if err := d.deleteVol(p, sum, false); err != nil {
		return err
	}
	v, err := d.createVol(p, rawVol(sum, size))
	if err != nil {
		return err
	}
	src := &exactReader{ctx: ctx, r: r, left: size}
	err = d.l.StorageVolUpload(v, src, 0, uint64(size), 0)
	if src.err != nil {
		err = src.err // why the stream was aborted, rather than libvirt's "stream aborted"
	} else if err == nil && src.left != 0 {
		err = fmt.Errorf("%d bytes not sent: %w", src.left, compute.ErrSizeMismatch)
	}
	if err == nil {
		var got int64
		if got, err = d.volSize(v); err == nil && got != size {
			err = fmt.Errorf("the host holds %d bytes of %d: %w", got, size, compute.ErrSizeMismatch)
		}
	}
	if err != nil {
		_ = d.l.StorageVolDelete(v, golibvirt.StorageVolDeleteNormal)
		return fmt.Errorf("libvirt: upload base %s: %w", sum, err)
	}
	m := []byte(marker{size: size, format: format}.String())
	mv, err := d.createVol(p, rawVol(sum+markerSuffix, int64(len(m))))
	if err != nil {
		return err
	}
	if err := d.l.StorageVolUpload(mv, bytes.NewReader(m), 0, uint64(len(m)), 0); err != nil {
		return fmt.Errorf("libvirt: base %s: write marker: %w", sum, err)
	}
	return nil
}

// exactReader passes exactly left bytes of r on and then io.EOF, and
// fails (recording why in err) if r ends early, has more, fails or ctx
// ends. go-libvirt aborts the upload stream on a read error.
type exactReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
	err  error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if err := e.ctx.Err(); err != nil {
		e.err = err
		return 0, err
	}
	if e.left == 0 {
		// Every byte is in: r must end here.
		var one [1]byte
		n, err := e.r.Read(one[:])
		switch {
		case n > 0:
			e.err = fmt.Errorf("the stream is longer than its size: %w", compute.ErrSizeMismatch)
		case err == io.EOF:
			return 0, io.EOF
		case err != nil:
			e.err = err
		default:
			return 0, nil
		}
		return 0, e.err
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			e.err = fmt.Errorf("the stream ended %d bytes short: %w", e.left, compute.ErrSizeMismatch)
			return n, e.err
		}
		err = nil // the next Read checks that r ends
	}
	if err != nil {
		e.err = err
	}
	return n, err
}

// CreateInstanceFiles replaces instance id's files with a fresh qcow2
// overlay on base sum (read through the base's format, which the base's
// marker must record) and an empty console log.
func (d *Driver) CreateInstanceFiles(ctx context.Context, id, sum string, format compute.DiskFormat) (compute.InstanceFiles, error) {
	if err := checkInstanceID(id); err != nil {
		return compute.InstanceFiles{}, err
	}
	if err := checkSum(sum); err != nil {
		return compute.InstanceFiles{}, err
	}
	bp, err := d.basePool(ctx)
	if err != nil {
		return compute.InstanceFiles{}, err
	}
	base, m, ok, err := d.base(bp, sum)
	if err != nil {
		return compute.InstanceFiles{}, err
	}
	if !ok {
		return compute.InstanceFiles{}, fmt.Errorf("libvirt: instance %s: base %s is not on the host", id, sum)
	}
	if m.format != format {
		return compute.InstanceFiles{}, fmt.Errorf("libvirt: instance %s: base %s is %s, not %s", id, sum, m.format, format)
	}
	basePath, err := d.l.StorageVolGetPath(base)
	if err != nil {
		return compute.InstanceFiles{}, fmt.Errorf("libvirt: base %s: %w", sum, err)
	}
	ip, err := d.instancePool(ctx)
	if err != nil {
		return compute.InstanceFiles{}, err
	}
	if err := d.DeleteInstanceFiles(ctx, id); err != nil {
		return compute.InstanceFiles{}, err
	}
	// The libvirt equivalent of qemu-img create -f qcow2 -b BASE -F FORMAT:
	// with no capacity, the overlay is as large as its base.
	var ov volXML
	ov.Name = id + ".qcow2"
	ov.Target.Format.Type, ov.Target.Compat = "qcow2", "1.1" // libvirt's default is 0.10
	ov.BackingStore = &backingXML{Path: basePath, Format: formatXML{Type: string(format)}}
	disk, err := d.createVol(ip, ov)
	if err != nil {
		return compute.InstanceFiles{}, err
	}
	con, err := d.createVol(ip, rawVol(id+".console.log", 0))
	if err != nil {
		return compute.InstanceFiles{}, err
	}
	var files compute.InstanceFiles
	if files.Disk, err = d.l.StorageVolGetPath(disk); err != nil {
		return compute.InstanceFiles{}, fmt.Errorf("libvirt: instance %s: %w", id, err)
	}
	if files.ConsoleLog, err = d.l.StorageVolGetPath(con); err != nil {
		return compute.InstanceFiles{}, fmt.Errorf("libvirt: instance %s: %w", id, err)
	}
	return files, nil
}

// DeleteInstanceFiles deletes instance id's overlay and console log.
func (d *Driver) DeleteInstanceFiles(ctx context.Context, id string) error {
	if err := checkInstanceID(id); err != nil {
		return err
	}
	p, err := d.instancePool(ctx)
	if err != nil {
		return err
	}
	for _, name := range []string{id + ".qcow2", id + ".console.log"} {
		if err := d.deleteVol(p, name, true); err != nil {
			return err
		}
	}
	return nil
}
