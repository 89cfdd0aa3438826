package swpatch

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Scan reads the verified payload through without writing anything and
// applies every rule Extract applies: each entry is a regular file or a
// directory at a clean relative path, each file is declared in the
// manifest with its size and checksum, and the entry count and sizes stay
// under lim. A site scans a patch before storing it.
func (p *Patch) Scan(lim Limits) error {
	return p.walk(lim, func(f File, r io.Reader) error {
		_, err := io.Copy(io.Discard, r)
		return err
	}, func(string) error { return nil })
}

// Extract unpacks the verified payload into root (a host's slot): only
// inside it (os.Root refuses every path and link that leads out), files
// written to a temporary name and renamed into place, each checked
// against its declared SHA-256 and size. An unsafe entry stops it with
// ErrUnsafeEntry, an oversized one with ErrTooLarge; files already
// written stay (the caller extracts into a slot it can discard).
func (p *Patch) Extract(root *os.Root, lim Limits) error {
	return p.walk(lim, func(f File, r io.Reader) error {
		if dir := path.Dir(f.Path); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("swpatch: %s: %w", dir, err)
			}
		}
		tmp := f.Path + ".patch-tmp"
		out, err := root.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fs.FileMode(f.Mode))
		if err != nil {
			return fmt.Errorf("swpatch: %s: %w", f.Path, err)
		}
		if _, err := io.Copy(out, r); err != nil {
			out.Close()
			root.Remove(tmp)
			return err
		}
		if err := out.Sync(); err != nil {
			out.Close()
			root.Remove(tmp)
			return err
		}
		if err := out.Chmod(fs.FileMode(f.Mode)); err != nil {
			out.Close()
			root.Remove(tmp)
			return err
		}
		if err := out.Close(); err != nil {
			root.Remove(tmp)
			return err
		}
		if err := root.Rename(tmp, f.Path); err != nil {
			root.Remove(tmp)
			return fmt.Errorf("swpatch: %s: %w", f.Path, err)
		}
		return nil
	}, func(dir string) error { return root.MkdirAll(dir, 0o755) })
}

// walk reads the payload's entries, applying the rules, and hands each
// declared file's bytes (checked as they are read) to file.
func (p *Patch) walk(lim Limits, file func(File, io.Reader) error, dir func(string) error) error {
	lim = lim.withDefaults()
	declared := make(map[string]File, len(p.Manifest.Files))
	for _, f := range p.Manifest.Files {
		declared[f.Path] = f
	}
	zr, err := gzip.NewReader(p.payload())
	if err != nil {
		return fmt.Errorf("%w: payload is not gzip: %v", ErrInvalidManifest, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var entries int
	var total int64
	seen := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: payload: %v", ErrUnsafeEntry, err)
		}
		entries++
		if entries > lim.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrTooLarge, lim.MaxEntries)
		}
		name := hdr.Name
		switch hdr.Typeflag {
		case tar.TypeDir:
			name = strings.TrimSuffix(name, "/")
			if err := CheckPath(name); err != nil {
				return err
			}
			if hdr.Size != 0 {
				return fmt.Errorf("%w: directory %s has a size", ErrUnsafeEntry, name)
			}
			if err := dir(name); err != nil {
				return fmt.Errorf("swpatch: %s: %w", name, err)
			}
			continue
		case tar.TypeReg:
		case tar.TypeSymlink, tar.TypeLink:
			return fmt.Errorf("%w: %s is a link (to %q); patches carry regular files only", ErrUnsafeEntry, name, hdr.Linkname)
		default:
			return fmt.Errorf("%w: %s has type %q; patches carry regular files only", ErrUnsafeEntry, name, hdr.Typeflag)
		}
		if err := CheckPath(name); err != nil {
			return err
		}
		f, ok := declared[name]
		if !ok || seen[name] {
			return fmt.Errorf("%w: %s is not declared in the manifest (or appears twice)", ErrUnsafeEntry, name)
		}
		seen[name] = true
		if hdr.Size != f.Size || hdr.Size > lim.MaxEntryBytes {
			return fmt.Errorf("%w: %s is %d bytes; declared %d (cap %d)", ErrTooLarge, name, hdr.Size, f.Size, lim.MaxEntryBytes)
		}
		total += hdr.Size
		if total > lim.MaxTotalBytes {
			return fmt.Errorf("%w: more than %d bytes unpacked", ErrTooLarge, lim.MaxTotalBytes)
		}
		// Never more than the declared size is read, whatever the stream holds.
		cr := &checkedReader{r: io.LimitReader(tr, f.Size), h: sha256.New()}
		if err := file(f, cr); err != nil {
			return err
		}
		if cr.n != f.Size || hex.EncodeToString(cr.h.Sum(nil)) != f.SHA256 {
			return fmt.Errorf("%w: %s", ErrChecksum, name)
		}
	}
	for _, f := range p.Manifest.Files {
		if !seen[f.Path] {
			return fmt.Errorf("%w: %s is declared but missing", ErrTampered, f.Path)
		}
	}
	return nil
}

type checkedReader struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (c *checkedReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.h.Write(b[:n])
	c.n += int64(n)
	return n, err
}

// CheckFiles verifies that every file of m in root has its declared size
// and SHA-256 (after an install, before the slot is marked).
func CheckFiles(root *os.Root, m Manifest) error {
	for _, f := range m.Files {
		in, err := root.Open(f.Path)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrChecksum, f.Path, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, in)
		in.Close()
		if err != nil || n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
			return fmt.Errorf("%w: %s", ErrChecksum, f.Path)
		}
	}
	return nil
}
