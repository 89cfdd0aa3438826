package swpatch_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/swpatch"
)

func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func build(t *testing.T, priv ed25519.PrivateKey, spec swpatch.BuildSpec) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := swpatch.Build(&b, spec, priv); err != nil {
		t.Fatalf("Build(%s) = %v", spec.ID, err)
	}
	return b.Bytes()
}

func simpleSpec(id string) swpatch.BuildSpec {
	return swpatch.BuildSpec{ID: id, Version: "1.2.3+" + id, RebootRequired: true,
		Files: []swpatch.Content{{Path: "bin/petrel", Data: []byte("#!/bin/sh\necho new\n")},
			{Path: "etc/petrel/feature.conf", Data: []byte("feature=on\n")}}}
}

func verify(b []byte, pub ed25519.PublicKey, lim swpatch.Limits) (*swpatch.Patch, error) {
	return swpatch.Verify(bytes.NewReader(b), int64(len(b)), pub, lim)
}

func TestBuildVerifyExtract(t *testing.T) {
	pub, priv := newKey(t)
	b := build(t, priv, simpleSpec("P1"))
	p, err := verify(b, pub, swpatch.Limits{})
	if err != nil {
		t.Fatalf("Verify = %v", err)
	}
	if p.Manifest.ID != "P1" || !p.Manifest.HasBinary() || len(p.Manifest.Files) != 2 {
		t.Fatalf("manifest = %+v", p.Manifest)
	}
	if err := p.Scan(swpatch.Limits{}); err != nil {
		t.Fatalf("Scan = %v", err)
	}
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := p.Extract(root, swpatch.Limits{}); err != nil {
		t.Fatalf("Extract = %v", err)
	}
	if err := swpatch.CheckFiles(root, p.Manifest); err != nil {
		t.Fatalf("CheckFiles = %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, "bin/petrel"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("bin/petrel = %v, %v; want mode 0755", fi, err)
	}
	// A changed file fails the check.
	os.WriteFile(filepath.Join(dir, "etc/petrel/feature.conf"), []byte("feature=off\n"), 0o644)
	if err := swpatch.CheckFiles(root, p.Manifest); !errors.Is(err, swpatch.ErrChecksum) {
		t.Errorf("CheckFiles(changed) = %v; want ErrChecksum", err)
	}
}

func TestVerifyRejects(t *testing.T) {
	pub, priv := newKey(t)
	otherPub, otherPriv := newKey(t)
	good := build(t, priv, simpleSpec("P1"))
	tampered := bytes.Clone(good)
	tampered[len(tampered)-10] ^= 0xff // a payload byte
	tamperedManifest := bytes.Replace(bytes.Clone(good), []byte(`"version":"1.2.3+P1"`), []byte(`"version":"9.2.3+P1"`), 1)
	if bytes.Equal(tamperedManifest, good) {
		t.Fatal("the manifest edit did not apply")
	}
	cases := []struct {
		name string
		b    []byte
		pub  ed25519.PublicKey
		want error
	}{
		{"unsigned random bytes", []byte("this is not a patch at all, just some bytes"), pub, swpatch.ErrUnsigned},
		{"empty", nil, pub, swpatch.ErrUnsigned},
		{"plain tar.gz", gz(t, nil), pub, swpatch.ErrUnsigned},
		{"signature stripped", stripSignature(good), pub, swpatch.ErrUnsigned},
		{"tampered payload", tampered, pub, swpatch.ErrTampered},
		{"tampered manifest", tamperedManifest, pub, swpatch.ErrBadSignature},
		{"signed by another key", build(t, otherPriv, simpleSpec("P1")), pub, swpatch.ErrBadSignature},
		{"verified with another key", good, otherPub, swpatch.ErrBadSignature},
		{"truncated", good[:len(good)-100], pub, swpatch.ErrTampered},
		{"extra bytes", append(bytes.Clone(good), 0), pub, swpatch.ErrTampered},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := verify(c.b, c.pub, swpatch.Limits{})
			if !errors.Is(err, c.want) || p != nil {
				t.Fatalf("Verify = %v, %v; want %v", p, err, c.want)
			}
			if !errors.Is(err, errs.Invalid) {
				t.Errorf("Verify = %v; want an invalid-argument kind", err)
			}
		})
	}
}

// stripSignature rewrites the signature length to 0 and drops it.
func stripSignature(b []byte) []byte {
	const magicLen = 16
	mlen := int(b[magicLen])<<24 | int(b[magicLen+1])<<16 | int(b[magicLen+2])<<8 | int(b[magicLen+3])
	off := magicLen + 4 + mlen
	out := bytes.Clone(b[:off])
	out = append(out, 0, 0)
	return append(out, b[off+2+64:]...)
}

type entry struct {
	hdr  tar.Header
	data []byte
}

func gz(t *testing.T, entries []entry) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
			h.Size = int64(len(e.data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if len(e.data) > 0 {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func fileOf(path string, data []byte) swpatch.File {
	sum := sha256.Sum256(data)
	return swpatch.File{Path: path, Mode: 0o644, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// TestMaliciousArchives: correctly signed archives whose payload tries to
// leave the slot or exhaust the host are rejected by Scan and by Extract,
// and Extract writes nothing outside the slot.
func TestMaliciousArchives(t *testing.T) {
	pub, priv := newKey(t)
	ok := []byte("fine\n")
	okFile := fileOf("etc/ok", ok)
	okEntry := entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/ok"}, data: ok}
	evil := []byte("evil\n")
	zeros := make([]byte, 8<<20) // compresses to a few KiB
	small := swpatch.Limits{MaxEntries: 10, MaxEntryBytes: 1 << 20, MaxTotalBytes: 2 << 20}
	many := []entry{okEntry}
	for i := range 20 {
		many = append(many, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d" + strings.Repeat("x", i) + "/", Mode: 0o755}})
	}
	cases := []struct {
		name    string
		files   []swpatch.File
		entries []entry
		want    error
	}{
		{"traversal", []swpatch.File{okFile}, []entry{okEntry, {hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../../outside"}, data: evil}}, swpatch.ErrUnsafeEntry},
		{"traversal inside a path", []swpatch.File{okFile}, []entry{okEntry, {hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/../../outside"}, data: evil}}, swpatch.ErrUnsafeEntry},
		{"absolute path", []swpatch.File{okFile}, []entry{okEntry, {hdr: tar.Header{Typeflag: tar.TypeReg, Name: "/tmp/outside"}, data: evil}}, swpatch.ErrUnsafeEntry},
		{"symlink out", []swpatch.File{okFile}, []entry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: "/etc"}}, okEntry}, swpatch.ErrUnsafeEntry},
		{"relative symlink out", []swpatch.File{okFile}, []entry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: "../../.."}}, okEntry}, swpatch.ErrUnsafeEntry},
		{"hardlink", []swpatch.File{okFile}, []entry{okEntry, {hdr: tar.Header{Typeflag: tar.TypeLink, Name: "etc/passwd", Linkname: "/etc/passwd"}}}, swpatch.ErrUnsafeEntry},
		{"device", []swpatch.File{okFile}, []entry{okEntry, {hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null"}}}, swpatch.ErrUnsafeEntry},
		{"undeclared file", []swpatch.File{okFile}, []entry{okEntry, {hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/extra"}, data: evil}}, swpatch.ErrUnsafeEntry},
		{"bomb: declared small, expands large", []swpatch.File{fileOf("big", []byte("x"))}, []entry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big"}, data: zeros}}, swpatch.ErrTooLarge},
		{"bomb: over the entry cap", []swpatch.File{fileOf("big", zeros)}, []entry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big"}, data: zeros}}, swpatch.ErrTooLarge},
		{"too many entries", []swpatch.File{okFile}, many, swpatch.ErrTooLarge},
		{"declared file missing", []swpatch.File{okFile, fileOf("etc/gone", ok)}, []entry{okEntry}, swpatch.ErrTampered},
		{"content not as declared", []swpatch.File{fileOf("etc/ok", []byte("FINE\n"))}, []entry{okEntry}, swpatch.ErrChecksum},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			payload := gz(t, c.entries)
			m := swpatch.Manifest{ID: "EVIL", Version: "1.0.0", Requires: []string{}, Files: c.files}
			var b bytes.Buffer
			if err := swpatch.SealUnchecked(&b, m, payload, priv); err != nil {
				t.Fatal(err)
			}
			p, err := verify(b.Bytes(), pub, small)
			if err != nil {
				// Caught by the manifest's own limits: fine, if it is the right kind.
				if !errors.Is(err, c.want) {
					t.Fatalf("Verify = %v; want nil or %v", err, c.want)
				}
				return
			}
			if err := p.Scan(small); !errors.Is(err, c.want) {
				t.Errorf("Scan = %v; want %v", err, c.want)
			}
			base := t.TempDir()
			slot := filepath.Join(base, "slot")
			os.Mkdir(slot, 0o755)
			root, err := os.OpenRoot(slot)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			if err := p.Extract(root, small); !errors.Is(err, c.want) {
				t.Errorf("Extract = %v; want %v", err, c.want)
			}
			for _, outside := range []string{filepath.Join(base, "outside"), "/tmp/outside"} {
				if _, err := os.Stat(outside); err == nil {
					t.Errorf("%s was written outside the slot", outside)
				}
			}
		})
	}
}

// TestManifestRejects: a signed manifest that names paths out of the
// slot, or more than the caps, is refused at verification.
func TestManifestRejects(t *testing.T) {
	pub, priv := newKey(t)
	data := []byte("x")
	cases := []struct {
		name  string
		files []swpatch.File
		want  error
	}{
		{"traversal", []swpatch.File{fileOf("../x", data)}, swpatch.ErrUnsafeEntry},
		{"absolute", []swpatch.File{fileOf("/x", data)}, swpatch.ErrUnsafeEntry},
		{"slot record", []swpatch.File{fileOf(swpatch.SlotFile, data)}, swpatch.ErrUnsafeEntry},
		{"too large", []swpatch.File{{Path: "x", Mode: 0o644, Size: 2 << 20, SHA256: strings.Repeat("0", 64)}}, swpatch.ErrTooLarge},
		{"setuid", []swpatch.File{{Path: "x", Mode: 0o4755, Size: 1, SHA256: fileOf("x", data).SHA256}}, swpatch.ErrInvalidManifest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var b bytes.Buffer
			m := swpatch.Manifest{ID: "M", Version: "1.0.0", Requires: []string{}, Files: c.files}
			if err := swpatch.SealUnchecked(&b, m, gz(t, nil), priv); err != nil {
				t.Fatal(err)
			}
			if _, err := verify(b.Bytes(), pub, swpatch.Limits{MaxEntryBytes: 1 << 20}); !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v; want %v", err, c.want)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	dir := t.TempDir()
	priv, pub := filepath.Join(dir, "patch.key"), filepath.Join(dir, "patch.pub")
	if err := swpatch.GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(priv); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("private key mode = %v, %v; want 0600", fi.Mode(), err)
	}
	k, err := swpatch.LoadPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := swpatch.LoadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Equal(k.Public()) {
		t.Fatal("the public key is not the private key's")
	}
	before, _ := os.ReadFile(priv)
	if err := swpatch.GenerateKeyPair(priv, pub); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(priv); !bytes.Equal(before, after) {
		t.Error("GenerateKeyPair replaced an existing key")
	}
	os.Chmod(priv, 0o644)
	if _, err := swpatch.LoadPrivateKey(priv); err == nil {
		t.Error("LoadPrivateKey accepted a key readable by others")
	}
}

func TestVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"0.1.0-dev", "0.1.0-dev+P1", 0},
		{"0.1.0", "0.1.0-dev", 1},
		{"0.0.9", "0.1.0-dev+P1", -1},
		{"1.10.0", "1.9.0", 1},
		{"1.0.0-rc.2", "1.0.0-rc.10", -1},
		{"1.0.0-alpha", "1.0.0-alpha.1", -1},
	}
	for _, c := range cases {
		if got := swpatch.CompareVersions(c.a, c.b); got != c.want {
			t.Errorf("CompareVersions(%s, %s) = %d; want %d", c.a, c.b, got, c.want)
		}
	}
	for _, bad := range []string{"", "1.0", "1.0.0-", "1.0.0+", "01.0.0", "x.y.z"} {
		if _, err := swpatch.ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) = nil error", bad)
		}
	}
	if got := swpatch.Stamp("0.1.0-dev", "P1"); got != "0.1.0-dev+P1" {
		t.Errorf("Stamp = %s", got)
	}
}
