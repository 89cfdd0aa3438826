package compute

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ImageFiles stores image bytes by content: Dir/<sha256>. A file there is
// always complete and verified; uploads stream into a temporary file in
// the same directory, which is synced and renamed into place only after
// its size and checksum match.
type ImageFiles struct {
	Dir string
}

const tmpPrefix = ".upload-"

// OpenImageFiles creates dir if needed and removes temporary files an
// interrupted upload left behind.
func OpenImageFiles(dir string) (*ImageFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("compute: image directory: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("compute: image directory: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return nil, fmt.Errorf("compute: image directory: %w", err)
			}
		}
	}
	return &ImageFiles{Dir: dir}, nil
}

// Path is where the bytes with checksum sum are (or would be) stored.
func (f *ImageFiles) Path(sum string) string { return filepath.Join(f.Dir, sum) }

// Has reports whether the bytes with checksum sum are stored.
func (f *ImageFiles) Has(sum string) bool {
	_, err := os.Stat(f.Path(sum))
	return err == nil
}

// Remove deletes the bytes with checksum sum; absent bytes are no error.
func (f *ImageFiles) Remove(sum string) error {
	if err := os.Remove(f.Path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("compute: remove image file: %w", err)
	}
	return nil
}

// Upload is an upload in progress: bytes written to a temporary file and
// hashed as they arrive.
type Upload struct {
	files *ImageFiles
	tmp   *os.File
}

// StagedUpload is an upload whose bytes were verified, ready to Commit.
type StagedUpload struct {
	Upload
	Sum    string
	Format DiskFormat
}

// Stage streams r into a temporary file, at most want.Size bytes (one
// more is an error), verifying the size, the SHA-256 and the disk format
// (by its magic) against want. It returns an error of kind errs.Invalid
// for bytes that do not match; nothing is left behind on any error. A
// caller-side read error (a cut connection) is returned as
// ErrSizeMismatch wrapped around it, since the bytes are truncated.
func (f *ImageFiles) Stage(r io.Reader, want Image) (*StagedUpload, error) {
	tmp, err := os.CreateTemp(f.Dir, tmpPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("compute: stage image: %w", err)
	}
	up := &StagedUpload{Upload: Upload{files: f, tmp: tmp}}
	ok := false
	defer func() {
		if !ok {
			up.Discard()
		}
	}()
	h := sha256.New()
	head := &headWriter{}
	n, err := io.Copy(io.MultiWriter(fileWriter{tmp}, h, head), io.LimitReader(r, want.Size+1))
	switch {
	case err != nil && isWriteErr(err):
		return nil, fmt.Errorf("compute: stage image: %w", err)
	case err != nil:
		return nil, fmt.Errorf("%w: reading the upload failed after %d of %d bytes: %v", ErrSizeMismatch, n, want.Size, err)
	case n != want.Size:
		verb := "only"
		if n > want.Size {
			verb = "more than"
			n = want.Size
		}
		return nil, fmt.Errorf("%w: got %s %d of %d bytes", ErrSizeMismatch, verb, n, want.Size)
	}
	up.Sum = hex.EncodeToString(h.Sum(nil))
	if up.Sum != want.Checksum {
		return nil, fmt.Errorf("%w: got sha256 %s, want %s", ErrChecksumMismatch, up.Sum, want.Checksum)
	}
	up.Format = DetectFormat(head.b)
	if up.Format != want.DiskFormat {
		return nil, fmt.Errorf("%w: the bytes are %s, the image says %s", ErrFormatMismatch, up.Format, want.DiskFormat)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("compute: stage image: %w", err)
	}
	ok = true
	return up, nil
}

// Commit renames the verified bytes into place (content-addressed: if the
// same bytes are stored already, the copy is dropped) and syncs the
// directory.
func (u *StagedUpload) Commit() error {
	defer u.Discard()
	if err := u.tmp.Close(); err != nil {
		return fmt.Errorf("compute: store image: %w", err)
	}
	if err := os.Rename(u.tmp.Name(), u.files.Path(u.Sum)); err != nil {
		return fmt.Errorf("compute: store image: %w", err)
	}
	d, err := os.Open(u.files.Dir)
	if err != nil {
		return fmt.Errorf("compute: store image: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("compute: store image: %w", err)
	}
	return nil
}

// Discard drops the temporary file; it is a no-op after Commit.
func (u *Upload) Discard() {
	if u.tmp == nil {
		return
	}
	u.tmp.Close()
	os.Remove(u.tmp.Name()) // after a commit's rename: already gone
	u.tmp = nil
}

// headWriter keeps the first bytes written, for the format's magic.
type headWriter struct{ b []byte }

func (w *headWriter) Write(p []byte) (int, error) {
	if need := len(QCOW2Magic) - len(w.b); need > 0 {
		w.b = append(w.b, p[:min(need, len(p))]...)
	}
	return len(p), nil
}

// fileWriter marks its errors as the site's side's.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = writeErr{err}
	}
	return n, err
}

// writeErr marks an error writing the temporary file (the site's side).
type writeErr struct{ error }

func (e writeErr) Unwrap() error { return e.error }

func isWriteErr(err error) bool { var we writeErr; return errors.As(err, &we) }
