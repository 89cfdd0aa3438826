// Package syncproto holds what central and sites must compute identically for
// shared-resource sync (docs/design-sync-and-central-ha.md §1–2): the names of
// synced resources and the rules for their keys, the canonical form of a
// synced document and its content hash, and the bucketed digest the
// anti-entropy audit compares.
//
// The canonical form is JSON with object keys sorted (by bytes), no
// insignificant whitespace, and numbers exactly as written ("1.0" stays
// "1.0"). Strings are re-escaped the way encoding/json does without HTML
// escaping. Duplicate object keys and trailing data are refused, so one
// document has one canonical form.
//
// The digest puts each (key, document) entry in bucket SHA-256(key)[0]. The
// entry's hash is h = SHA-256(key ‖ 0x00 ‖ canonical(doc)); the 0x00
// separator is unambiguous because keys may not contain it and canonical
// JSON never does. A bucket's digest is SHA-256 of its entries' h values,
// sorted, concatenated; the root is SHA-256 of the 256 bucket digests in
// bucket order. Entries may therefore be added in any order.
package syncproto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sort"
	"unicode"
	"unicode/utf8"

	"github.com/petrel-edge/petrel/internal/errs"
)

// Synced resources: the names used in the store, on the link and in a
// subcloud's sync status.
const (
	Flavors  = "flavors"
	Images   = "images"
	Users    = "users"
	Projects = "projects"
	Patches  = "patches" // central's patch archives (docs/patching.md)
)

// Resources lists every synced resource.
var Resources = []string{Flavors, Images, Users, Projects, Patches}

// MaxKeyLen bounds a resource key in bytes (Nova flavor IDs and Keystone
// names fit).
const MaxKeyLen = 255

// MaxDocSize bounds a document in bytes, so one record always fits in a link
// frame (1 MiB) with room to spare.
const MaxDocSize = 256 << 10

// ValidateResource checks that resource names a synced resource.
func ValidateResource(resource string) error {
	if !slices.Contains(Resources, resource) {
		return errs.Field("resource", "%q is not a synced resource (want one of %v)", resource, Resources)
	}
	return nil
}

// ValidateKey checks a resource key: 1 to MaxKeyLen bytes of UTF-8 without
// control characters and without leading or trailing white space.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return errs.Field("key", "required")
	case len(key) > MaxKeyLen:
		return errs.Field("key", "at most %d bytes", MaxKeyLen)
	case !utf8.ValidString(key):
		return errs.Field("key", "must be UTF-8")
	}
	first, _ := utf8.DecodeRuneInString(key)
	last, _ := utf8.DecodeLastRuneInString(key)
	if unicode.IsSpace(first) || unicode.IsSpace(last) {
		return errs.Field("key", "must not begin or end with white space")
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return errs.Field("key", "must not contain control characters")
		}
	}
	return nil
}

// Canonical returns the canonical form of the JSON value doc. It fails with
// an errs.Invalid error if doc is not exactly one JSON value, repeats an
// object key, or is larger than MaxDocSize.
func Canonical(doc []byte) ([]byte, error) {
	if len(doc) > MaxDocSize {
		return nil, errs.Wrapf(errs.TooLarge, "document is %d bytes, more than %d", len(doc), MaxDocSize)
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var out bytes.Buffer
	out.Grow(len(doc))
	if err := canonValue(dec, &out); err != nil {
		return nil, errs.Field("doc", "not canonicalisable JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errs.Field("doc", "trailing data after the JSON value")
	}
	return out.Bytes(), nil
}

// canonValue writes the next value of dec in canonical form.
func canonValue(dec *json.Decoder, out *bytes.Buffer) error {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return canonObject(dec, out)
		case '[':
			out.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					out.WriteByte(',')
				}
				if err := canonValue(dec, out); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil { // ']'
				return err
			}
			out.WriteByte(']')
			return nil
		}
		return fmt.Errorf("unexpected %q", t)
	case string:
		writeString(out, t)
	case json.Number:
		out.WriteString(t.String())
	case bool:
		if t {
			out.WriteString("true")
		} else {
			out.WriteString("false")
		}
	case nil:
		out.WriteString("null")
	default:
		return fmt.Errorf("unexpected token %T", tok)
	}
	return nil
}

// canonObject writes the members of an object whose '{' was read, sorted
// by key.
func canonObject(dec *json.Decoder, out *bytes.Buffer) error {
	type member struct {
		key string
		val []byte
	}
	var members []member
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key is %T", tok)
		}
		var v bytes.Buffer
		if err := canonValue(dec, &v); err != nil {
			return err
		}
		members = append(members, member{key, v.Bytes()})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return err
	}
	sort.Slice(members, func(i, j int) bool { return members[i].key < members[j].key })
	out.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			if members[i-1].key == m.key {
				return fmt.Errorf("duplicate object key %q", m.key)
			}
			out.WriteByte(',')
		}
		writeString(out, m.key)
		out.WriteByte(':')
		out.Write(m.val)
	}
	out.WriteByte('}')
	return nil
}

// writeString writes s as a JSON string, escaped as encoding/json does
// without HTML escaping.
func writeString(out *bytes.Buffer, s string) {
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)           // a string always encodes
	out.Truncate(out.Len() - 1) // Encode's newline
}

// Hash is a SHA-256 digest.
type Hash [sha256.Size]byte

// String is h in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads a Hash from its String form.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, errs.Field("hash", "want %d hex digits", 2*len(h))
	}
	copy(h[:], b)
	return h, nil
}

// Content returns the canonical form of doc and its content hash
// (SHA-256 of the canonical form).
func Content(doc []byte) (canonical []byte, content Hash, err error) {
	c, err := Canonical(doc)
	if err != nil {
		return nil, Hash{}, err
	}
	return c, sha256.Sum256(c), nil
}

// NumBuckets is the number of digest buckets.
const NumBuckets = 256

// BucketOf returns key's digest bucket: the first byte of SHA-256(key).
func BucketOf(key string) int {
	h := sha256.Sum256([]byte(key))
	return int(h[0])
}

// EntryHash is h = SHA-256(key ‖ 0x00 ‖ canonical) for an entry whose
// document is already canonical.
func EntryHash(key string, canonical []byte) Hash {
	d := sha256.New()
	d.Write([]byte(key))
	d.Write([]byte{0})
	d.Write(canonical)
	var h Hash
	d.Sum(h[:0])
	return h
}

// ErrDuplicateKey is returned by Digester.Add for a key added before.
var ErrDuplicateKey = errs.New(errs.Invalid, "syncproto: key added twice to a digest")

// Digester accumulates entries in any order and sums them to a Digest. The
// zero value is ready to use.
type Digester struct {
	keys    map[string]struct{}
	buckets [NumBuckets][]Hash
}

// Add adds the entry (key, doc). doc is canonicalised first, so a document
// read back from any store hashes the same.
func (d *Digester) Add(key string, doc []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, dup := d.keys[key]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateKey, key)
	}
	c, err := Canonical(doc)
	if err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	if d.keys == nil {
		d.keys = map[string]struct{}{}
	}
	d.keys[key] = struct{}{}
	b := BucketOf(key)
	d.buckets[b] = append(d.buckets[b], EntryHash(key, c))
	return nil
}

// Digest is a summary of a set of entries: their count, one digest per
// bucket and the root over the buckets.
type Digest struct {
	Count   int
	Root    Hash
	Buckets [NumBuckets]Hash
}

// Sum returns the digest of the entries added so far.
func (d *Digester) Sum() Digest {
	var out Digest
	root := sha256.New()
	for i, hs := range d.buckets {
		sorted := slices.Clone(hs)
		slices.SortFunc(sorted, func(a, b Hash) int { return bytes.Compare(a[:], b[:]) })
		bh := sha256.New()
		for _, h := range sorted {
			bh.Write(h[:])
		}
		bh.Sum(out.Buckets[i][:0])
		root.Write(out.Buckets[i][:])
		out.Count += len(hs)
	}
	root.Sum(out.Root[:0])
	return out
}

// BucketStrings returns the bucket digests in hex, in bucket order (the
// form a sync_digest message carries).
func (dg Digest) BucketStrings() []string {
	out := make([]string, NumBuckets)
	for i, h := range dg.Buckets {
		out[i] = h.String()
	}
	return out
}

// Diff returns the buckets whose digests differ between dg and o, ascending.
func (dg Digest) Diff(o Digest) []int {
	var out []int
	for i := range dg.Buckets {
		if dg.Buckets[i] != o.Buckets[i] {
			out = append(out, i)
		}
	}
	return out
}

// CanonicalObject is Canonical for a document that must be a JSON object,
// as every synced document is.
func CanonicalObject(doc []byte) ([]byte, Hash, error) {
	c, h, err := Content(doc)
	if err != nil {
		return nil, Hash{}, err
	}
	if len(c) == 0 || c[0] != '{' {
		return nil, Hash{}, errs.Field("doc", "must be a JSON object")
	}
	return c, h, nil
}
