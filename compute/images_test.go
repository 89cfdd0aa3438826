package compute_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/internal/errs"
)

func TestImageTransitions(t *testing.T) {
	for _, c := range []struct {
		from, to compute.ImageStatus
		ok       bool
	}{
		{compute.ImageQueued, compute.ImageSaving, true},
		{compute.ImageSaving, compute.ImageActive, true},
		{compute.ImageSaving, compute.ImageQueued, true},
		{compute.ImageSaving, compute.ImageKilled, true},
		{compute.ImageActive, compute.ImageDeleted, true},
		{compute.ImageKilled, compute.ImageDeleted, true},
		{compute.ImageQueued, compute.ImageDeleted, true},
		{compute.ImageQueued, compute.ImageActive, false},
		{compute.ImageActive, compute.ImageSaving, false},
		{compute.ImageSaving, compute.ImageDeleted, false},
		{compute.ImageKilled, compute.ImageSaving, false},
		{compute.ImageDeleted, compute.ImageQueued, false},
	} {
		if got := c.from.CanTo(c.to); got != c.ok {
			t.Errorf("%s -> %s = %v; want %v", c.from, c.to, got, c.ok)
		}
	}
}

func TestDetectFormat(t *testing.T) {
	if compute.DetectFormat([]byte("QFI\xfb\x00\x00\x00\x03")) != compute.FormatQCOW2 {
		t.Error("qcow2 magic not detected")
	}
	for _, b := range [][]byte{nil, []byte("QFI"), []byte("\xeb\x3c\x90mkfs")} {
		if compute.DetectFormat(b) != compute.FormatRaw {
			t.Errorf("%q detected as qcow2", b)
		}
	}
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

type failingReader struct {
	r io.Reader
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestImageFilesStage(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/.upload-left-over", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	files, err := compute.OpenImageFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Fatalf("OpenImageFiles left %v", names)
	}
	data := bytes.Repeat([]byte("petrel-raw-disk "), 1024)
	qcow := append([]byte(compute.QCOW2Magic), data...)
	want := compute.Image{Name: "x", DiskFormat: compute.FormatRaw, Checksum: sum(data), Size: int64(len(data))}
	for _, c := range []struct {
		name string
		r    io.Reader
		want compute.Image
		err  error
	}{
		{"corrupt", bytes.NewReader(append([]byte("X"), data[1:]...)), want, compute.ErrChecksumMismatch},
		{"truncated", bytes.NewReader(data[:100]), want, compute.ErrSizeMismatch},
		{"cut", &failingReader{bytes.NewReader(data[:100])}, want, compute.ErrSizeMismatch},
		{"longer", bytes.NewReader(append(data, 'x')), want, compute.ErrSizeMismatch},
		{"format", bytes.NewReader(qcow), compute.Image{DiskFormat: compute.FormatRaw, Checksum: sum(qcow), Size: int64(len(qcow))}, compute.ErrFormatMismatch},
	} {
		_, err := files.Stage(c.r, c.want)
		if !errors.Is(err, c.err) || !errors.Is(err, errs.Invalid) {
			t.Errorf("%s: Stage = %v; want %v (invalid argument)", c.name, err, c.err)
		}
		if names := entries(t, dir); len(names) != 0 {
			t.Errorf("%s: a rejected upload left %v", c.name, names)
		}
	}
	up, err := files.Stage(bytes.NewReader(qcow), compute.Image{DiskFormat: compute.FormatQCOW2, Checksum: sum(qcow), Size: int64(len(qcow))})
	if err != nil {
		t.Fatal(err)
	}
	if up.Format != compute.FormatQCOW2 || up.Sum != sum(qcow) {
		t.Errorf("staged %+v", up)
	}
	if err := up.Commit(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(files.Path(sum(qcow)))
	if err != nil || !bytes.Equal(got, qcow) || !files.Has(sum(qcow)) {
		t.Fatalf("stored file: %v", err)
	}
	if names := entries(t, dir); len(names) != 1 || names[0] != sum(qcow) {
		t.Errorf("image dir holds %v", names)
	}
	if err := files.Remove(sum(qcow)); err != nil || files.Has(sum(qcow)) {
		t.Errorf("Remove = %v", err)
	}
	if err := files.Remove(sum(qcow)); err != nil {
		t.Errorf("second Remove = %v", err)
	}
}
