// Package swpatch is Petrel's software patching: the patch format (a
// manifest and a gzip'd tar payload, signed with ed25519), building and
// signing patches, verifying them before anything is unpacked, unpacking
// them only inside a host's software slot (no absolute paths, no "..", no
// links, size and entry caps), the A/B software slots of a host's software
// root (install into the inactive slot, switch at boot, confirm or roll
// back), and the site-side states of a patch (available → deploying →
// deployed → committed, and removing) and of each host towards it
// (patch-current, pending, install-failed), as typed states with explicit
// transition tables.
//
// docs/patching.md describes the format, the states and the install and
// rollback sequence.
package swpatch

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Sentinel errors. Each wraps an errs kind, so the API maps it to a
// status and a stable code.
var (
	// ErrUnsigned: the archive has no signature (or is not a patch archive).
	ErrUnsigned = fmt.Errorf("swpatch: not a signed patch archive: %w", errs.Invalid)
	// ErrBadSignature: the signature does not verify with the trusted key
	// (tampered, or signed by another key).
	ErrBadSignature = fmt.Errorf("swpatch: signature does not verify: %w", errs.Invalid)
	// ErrTampered: the payload does not match the signed manifest.
	ErrTampered = fmt.Errorf("swpatch: payload does not match its signed manifest: %w", errs.Invalid)
	// ErrUnsafeEntry: an archive entry would leave its slot, is a link or
	// a device, or is not declared in the manifest.
	ErrUnsafeEntry = fmt.Errorf("swpatch: unsafe archive entry: %w", errs.Invalid)
	// ErrTooLarge: an entry, the payload or the entry count is over its cap.
	ErrTooLarge = fmt.Errorf("swpatch: archive over its limits: %w", errs.TooLarge)
	// ErrInvalidManifest: the manifest is malformed.
	ErrInvalidManifest = fmt.Errorf("swpatch: invalid manifest: %w", errs.Invalid)
	// ErrChecksum: an installed file does not have its declared SHA-256.
	ErrChecksum = errors.New("swpatch: installed file does not match its checksum")
)

// BinaryPath is where a slot keeps its petrel binary; a patch that carries
// a new binary has a file at this path.
const BinaryPath = "bin/petrel"

// SlotFile is a slot's own record (version and patches), written by
// install from the signed manifest; a patch may not carry it.
const SlotFile = "slot.json"

// File is one content file of a patch: its path inside the slot, its
// mode bits (0644 or 0755 and the like), size and SHA-256.
type File struct {
	Path   string `json:"path"`
	Mode   uint32 `json:"mode"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Manifest describes a patch. It is signed; the payload is bound to it
// by PayloadSHA256 and PayloadSize.
type Manifest struct {
	ID             string   `json:"id"`
	Version        string   `json:"version"` // the software version a host runs with this patch
	Requires       []string `json:"requires"`
	RebootRequired bool     `json:"reboot_required"`
	// PreCheck and PostInstall are commands (argv, the first a path inside
	// the slot) run in the slot: PreCheck after the files are in place and
	// before the slot is marked (its failure fails the install),
	// PostInstall once the install is done.
	PreCheck      []string `json:"pre_check,omitempty"`
	PostInstall   []string `json:"post_install,omitempty"`
	Files         []File   `json:"files"`
	PayloadSHA256 string   `json:"payload_sha256"`
	PayloadSize   int64    `json:"payload_size"`
	Description   string   `json:"description,omitempty"`
}

var (
	idRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidID reports whether id is a usable patch ID.
func ValidID(id string) bool { return idRE.MatchString(id) }

// Validate checks the manifest's fields against lim.
func (m Manifest) Validate(lim Limits) error {
	lim = lim.withDefaults()
	bad := func(f string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidManifest, fmt.Sprintf(f, a...))
	}
	if !ValidID(m.ID) {
		return bad("id %q: want 1-64 letters, digits, '.', '_' or '-'", m.ID)
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return bad("version: %v", err)
	}
	for _, r := range m.Requires {
		if !ValidID(r) || r == m.ID {
			return bad("requires %q: not a patch ID (or the patch itself)", r)
		}
	}
	if len(m.Files) == 0 {
		return bad("no files")
	}
	if len(m.Files) > lim.MaxEntries {
		return fmt.Errorf("%w: %d files (at most %d)", ErrTooLarge, len(m.Files), lim.MaxEntries)
	}
	seen := map[string]bool{}
	var total int64
	for _, f := range m.Files {
		if err := CheckPath(f.Path); err != nil {
			return err
		}
		if seen[f.Path] {
			return bad("file %s listed twice", f.Path)
		}
		seen[f.Path] = true
		if f.Size < 0 || f.Size > lim.MaxEntryBytes {
			return fmt.Errorf("%w: file %s is %d bytes (at most %d)", ErrTooLarge, f.Path, f.Size, lim.MaxEntryBytes)
		}
		total += f.Size
		if !hexRE.MatchString(f.SHA256) {
			return bad("file %s: sha256 must be 64 lower-case hex digits", f.Path)
		}
		if f.Mode&^0o777 != 0 {
			return bad("file %s: mode %o: only permission bits", f.Path, f.Mode)
		}
	}
	if total > lim.MaxTotalBytes {
		return fmt.Errorf("%w: %d bytes of files (at most %d)", ErrTooLarge, total, lim.MaxTotalBytes)
	}
	for _, hook := range [][]string{m.PreCheck, m.PostInstall} {
		if len(hook) == 0 {
			continue
		}
		if !seen[hook[0]] {
			return bad("hook %q is not one of the patch's files", hook[0])
		}
	}
	if !hexRE.MatchString(m.PayloadSHA256) || m.PayloadSize <= 0 {
		return bad("payload_sha256 and payload_size are required")
	}
	if m.PayloadSize > lim.MaxPayloadBytes {
		return fmt.Errorf("%w: payload of %d bytes (at most %d)", ErrTooLarge, m.PayloadSize, lim.MaxPayloadBytes)
	}
	return nil
}

// HasBinary reports whether the patch carries a new petrel binary.
func (m Manifest) HasBinary() bool {
	for _, f := range m.Files {
		if f.Path == BinaryPath {
			return true
		}
	}
	return false
}

// CheckPath refuses a content path that is not a clean, relative path
// inside a slot: absolute, with "..", ".", empty elements or a backslash,
// or the slot's own record.
func CheckPath(p string) error {
	switch {
	case p == "", strings.HasPrefix(p, "/"), strings.Contains(p, "\\"), strings.ContainsRune(p, 0):
		return fmt.Errorf("%w: path %q: want a relative path inside the slot", ErrUnsafeEntry, p)
	case path.Clean(p) != p, p == ".", p == "..", strings.HasPrefix(p, "../"):
		return fmt.Errorf("%w: path %q: not clean, or leaves the slot", ErrUnsafeEntry, p)
	case p == SlotFile:
		return fmt.Errorf("%w: path %q is the slot's own record", ErrUnsafeEntry, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." || el == "" {
			return fmt.Errorf("%w: path %q leaves the slot", ErrUnsafeEntry, p)
		}
	}
	return nil
}

// DefaultMaxArchive caps an uploaded archive: 1 GiB and a manifest.
const DefaultMaxArchive = 1<<30 + 2<<20

// Limits caps what an archive may hold. Zero fields take the defaults.
type Limits struct {
	MaxEntries      int   // default 1,000
	MaxEntryBytes   int64 // default 512 MiB
	MaxTotalBytes   int64 // unpacked, default 1 GiB
	MaxPayloadBytes int64 // packed, default 1 GiB
	MaxManifest     int   // default 1 MiB
}

func (l Limits) withDefaults() Limits {
	if l.MaxEntries <= 0 {
		l.MaxEntries = 1000
	}
	if l.MaxEntryBytes <= 0 {
		l.MaxEntryBytes = 512 << 20
	}
	if l.MaxTotalBytes <= 0 {
		l.MaxTotalBytes = 1 << 30
	}
	if l.MaxPayloadBytes <= 0 {
		l.MaxPayloadBytes = 1 << 30
	}
	if l.MaxManifest <= 0 {
		l.MaxManifest = 1 << 20
	}
	return l
}
