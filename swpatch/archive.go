package swpatch

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"
)

// The archive format (docs/patching.md):
//
//	magic       16 bytes  "PETREL-PATCH-v1\n"
//	manifest    uint32 big-endian length, then that many bytes of JSON
//	signature   uint16 big-endian length (64), then the ed25519 signature
//	            of sigContext || manifest
//	payload     a gzip'd tar of the content files, to the end of the file;
//	            its SHA-256 and size are in the manifest
//
// Verification reads the manifest and signature, checks the signature,
// then hashes the payload; only then is the payload opened.
const magic = "PETREL-PATCH-v1\n"

// sigContext separates patch signatures from any other use of the key.
const sigContext = "petrel-patch-manifest-v1\x00"

// Content is one file to put into a patch: its bytes come from Source
// (a local file) or Data.
type Content struct {
	Path   string // inside the slot
	Mode   uint32 // 0 means 0644 (0755 for bin/petrel)
	Source string
	Data   []byte
}

// BuildSpec describes a patch to build.
type BuildSpec struct {
	ID             string
	Version        string
	Requires       []string
	RebootRequired bool
	PreCheck       []string
	PostInstall    []string
	Description    string
	Files          []Content
}

// Build writes the signed archive of spec to out, signed with key.
func Build(out io.Writer, spec BuildSpec, key ed25519.PrivateKey) (Manifest, error) {
	m := Manifest{ID: spec.ID, Version: spec.Version, Requires: slices.Clone(spec.Requires),
		RebootRequired: spec.RebootRequired, PreCheck: spec.PreCheck, PostInstall: spec.PostInstall,
		Description: spec.Description}
	if m.Requires == nil {
		m.Requires = []string{}
	}
	var payload bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&payload, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	for _, c := range spec.Files {
		if err := CheckPath(c.Path); err != nil {
			return m, err
		}
		data := c.Data
		if c.Source != "" {
			var err error
			if data, err = os.ReadFile(c.Source); err != nil {
				return m, fmt.Errorf("swpatch: %w", err)
			}
		}
		mode := c.Mode
		if mode == 0 {
			mode = 0o644
			if c.Path == BinaryPath {
				mode = 0o755
			}
		}
		sum := sha256.Sum256(data)
		m.Files = append(m.Files, File{Path: c.Path, Mode: mode, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: c.Path, Mode: int64(mode), Size: int64(len(data)),
			ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return m, err
		}
		if _, err := tw.Write(data); err != nil {
			return m, err
		}
	}
	if err := tw.Close(); err != nil {
		return m, err
	}
	if err := zw.Close(); err != nil {
		return m, err
	}
	return Seal(out, m, payload.Bytes(), key)
}

// Seal binds payload (a gzip'd tar) to m, signs m with key and writes the
// archive. Build uses it; tests use it to seal hand-made payloads.
func Seal(out io.Writer, m Manifest, payload []byte, key ed25519.PrivateKey) (Manifest, error) {
	sum := sha256.Sum256(payload)
	m.PayloadSHA256, m.PayloadSize = hex.EncodeToString(sum[:]), int64(len(payload))
	if m.Requires == nil {
		m.Requires = []string{}
	}
	if err := m.Validate(Limits{}); err != nil {
		return m, err
	}
	return m, writeSealed(out, m, payload, key)
}

// writeSealed signs m and writes the archive, checking nothing.
func writeSealed(out io.Writer, m Manifest, payload []byte, key ed25519.PrivateKey) error {
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(key) != ed25519.PrivateKeySize {
		return errors.New("swpatch: not an ed25519 private key")
	}
	sig := ed25519.Sign(key, append([]byte(sigContext), mb...))
	var hdr bytes.Buffer
	hdr.WriteString(magic)
	_ = binary.Write(&hdr, binary.BigEndian, uint32(len(mb)))
	hdr.Write(mb)
	_ = binary.Write(&hdr, binary.BigEndian, uint16(len(sig)))
	hdr.Write(sig)
	if _, err := out.Write(hdr.Bytes()); err != nil {
		return err
	}
	_, err = out.Write(payload)
	return err
}

// Patch is a verified archive: its manifest and where its payload lies.
type Patch struct {
	Manifest Manifest
	// RawManifest and Signature are as signed (a site stores them).
	RawManifest []byte
	Signature   []byte
	src         io.ReaderAt
	payloadOff  int64
}

// Verify checks an archive read from r (size bytes) against the trusted
// key pub: the signature over the manifest, the manifest, then the
// payload's SHA-256 and size. Nothing is unpacked; the payload is read
// once, as a stream. Then Scan or Extract may open it.
func Verify(r io.ReaderAt, size int64, pub ed25519.PublicKey, lim Limits) (*Patch, error) {
	lim = lim.withDefaults()
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("swpatch: no trusted public key")
	}
	head := make([]byte, len(magic)+4)
	if _, err := r.ReadAt(head, 0); err != nil || string(head[:len(magic)]) != magic {
		return nil, ErrUnsigned
	}
	mlen := int64(binary.BigEndian.Uint32(head[len(magic):]))
	if mlen == 0 || mlen > int64(lim.MaxManifest) {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, mlen)
	}
	off := int64(len(head))
	if off+mlen+2 > size {
		return nil, ErrUnsigned
	}
	mb := make([]byte, mlen)
	if _, err := r.ReadAt(mb, off); err != nil {
		return nil, ErrUnsigned
	}
	off += mlen
	var sl [2]byte
	if _, err := r.ReadAt(sl[:], off); err != nil {
		return nil, ErrUnsigned
	}
	off += 2
	slen := int64(binary.BigEndian.Uint16(sl[:]))
	if slen == 0 {
		return nil, ErrUnsigned
	}
	if slen != ed25519.SignatureSize || off+slen > size {
		return nil, ErrBadSignature
	}
	sig := make([]byte, slen)
	if _, err := r.ReadAt(sig, off); err != nil {
		return nil, ErrBadSignature
	}
	off += slen
	if !ed25519.Verify(pub, append([]byte(sigContext), mb...), sig) {
		return nil, ErrBadSignature
	}
	// Signed: the manifest is the signer's. Parse it strictly.
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(mb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	if err := m.Validate(lim); err != nil {
		return nil, err
	}
	if size-off != m.PayloadSize {
		return nil, fmt.Errorf("%w: payload is %d bytes; the manifest says %d", ErrTampered, size-off, m.PayloadSize)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, off, m.PayloadSize)); err != nil {
		return nil, fmt.Errorf("swpatch: reading the payload: %w", err)
	}
	if hex.EncodeToString(h.Sum(nil)) != m.PayloadSHA256 {
		return nil, ErrTampered
	}
	return &Patch{Manifest: m, RawManifest: mb, Signature: sig, src: r, payloadOff: off}, nil
}

// VerifyFile verifies the archive at path (see Verify); the returned
// patch reads from the open file, which close releases.
func VerifyFile(path string, pub ed25519.PublicKey, lim Limits) (p *Patch, closeFn func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	p, err = Verify(f, fi.Size(), pub, lim)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return p, f.Close, nil
}

// payload opens the verified payload.
func (p *Patch) payload() io.Reader {
	return io.NewSectionReader(p.src, p.payloadOff, p.Manifest.PayloadSize)
}
