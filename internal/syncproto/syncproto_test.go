package syncproto_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/petrel-edge/petrel/internal/errs"
	"github.com/petrel-edge/petrel/internal/syncproto"
)

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{" {\n \"name\" : \"m1.small\" ,\t\"vcpus\": 1 }\n", `{"name":"m1.small","vcpus":1}`},
		{`{"n":1.0,"e":1E3,"z":-0,"f":0.10}`, `{"e":1E3,"f":0.10,"n":1.0,"z":-0}`}, // numbers as written
		{`{"s":"<a&b>","u":"\u00e9t\u00E9","q":"\"\\\/"}`, `{"q":"\"\\/","s":"<a&b>","u":"été"}`},
		{`{"o":{"y":[3,{"d":null,"c":true}],"x":false},"a":[]}`, `{"a":[],"o":{"x":false,"y":[3,{"c":true,"d":null}]}}`},
		{`{"B":1,"a":2,"é":3,"aa":4}`, `{"B":1,"a":2,"aa":4,"é":3}`}, // byte order
		{`{}`, `{}`},
		{`"x"`, `"x"`},
		{`[1, 2]`, `[1,2]`},
	} {
		got, err := syncproto.Canonical([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("Canonical(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
			continue
		}
		again, err := syncproto.Canonical(got)
		if err != nil || string(again) != string(got) {
			t.Errorf("Canonical(Canonical(%s)) = %s, %v; want it unchanged", tc.in, again, err)
		}
	}
}

func TestCanonicalRefuses(t *testing.T) {
	for _, in := range []string{
		``, ` `, `{`, `{"a":1}{}`, `{"a":1} x`, `{"a":1,"a":1}`, `{"o":{"k":1,"k":2}}`,
		`{a:1}`, `[1,]`, `01`, `{"a":1,}`, `nul`,
	} {
		if got, err := syncproto.Canonical([]byte(in)); !errors.Is(err, errs.Invalid) {
			t.Errorf("Canonical(%q) = %s, %v; want an Invalid error", in, got, err)
		}
	}
	big := `{"a":"` + strings.Repeat("x", syncproto.MaxDocSize) + `"}`
	if _, err := syncproto.Canonical([]byte(big)); !errors.Is(err, errs.TooLarge) {
		t.Errorf("Canonical(%d bytes) err = %v; want TooLarge", len(big), err)
	}
	if _, _, err := syncproto.CanonicalObject([]byte(`[1]`)); !errors.Is(err, errs.Invalid) {
		t.Errorf("CanonicalObject([1]) err = %v; want Invalid", err)
	}
}

// TestGoldenContent pins the content hash: it must never change, or every
// stored content column and every site's digest disagrees with new code.
func TestGoldenContent(t *testing.T) {
	_, h, err := syncproto.CanonicalObject([]byte(`{"vcpus": 2, "name": "m1.medium", "ram_mib": 4096, "disk_gib": 40, "public": true, "id": "f-2"}`))
	if err != nil {
		t.Fatal(err)
	}
	const want = "6e623075023388c0e89a38cf43d2cd72abefc77c4523af53b8c89fb4ce33963e"
	if h.String() != want {
		t.Errorf("content hash = %s; want %s", h, want)
	}
}

// goldenSet is a fixed set of flavor-like entries.
func goldenSet() map[string]string {
	m := map[string]string{}
	for i := range 40 {
		m[fmt.Sprintf("flavor-%02d", i)] = fmt.Sprintf(`{"id":"flavor-%02d","name":"f%d","vcpus":%d,"ram_mib":%d,"public":%t}`,
			i, i, 1+i%8, 512*(1+i%16), i%3 == 0)
	}
	return m
}

func digestOf(t *testing.T, set map[string]string, order []string) syncproto.Digest {
	t.Helper()
	var d syncproto.Digester
	for _, k := range order {
		if err := d.Add(k, []byte(set[k])); err != nil {
			t.Fatalf("Add(%s) = %v", k, err)
		}
	}
	return d.Sum()
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestGoldenDigest pins the digest algorithm: bucket choice, entry hash,
// bucket and root hashing. A change here breaks audits between versions.
// The expected values were cross-checked once with an independent Python
// implementation of the algorithm in the package comment.
func TestGoldenDigest(t *testing.T) {
	set := goldenSet()
	got := digestOf(t, set, keys(set))
	const wantRoot = "c1477e8a029ce7327214c62b22f5e5b9985bfb9c5a7b444cd4b41778a736fb31"
	if got.Count != 40 || got.Root.String() != wantRoot {
		t.Errorf("digest = count %d root %s; want 40 %s", got.Count, got.Root, wantRoot)
	}
	b := syncproto.BucketOf("flavor-07")
	const wantBucket, wantBucketDigest = 60, "cef54ce053b3bf3cd180a848842ee5b0f0ffb82e8fe8de2f82009fe544bf8477"
	if b != wantBucket || got.Buckets[b].String() != wantBucketDigest {
		t.Errorf("bucket of flavor-07 = %d digest %s; want %d %s", b, got.Buckets[b], wantBucket, wantBucketDigest)
	}
}

// TestEmptyDigest pins the digest of no entries: every bucket is SHA-256 of
// nothing, and the root their hash.
func TestEmptyDigest(t *testing.T) {
	var d syncproto.Digester
	got := d.Sum()
	const emptySHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	const wantRoot = "0e89e7ed74c9a5944c886585d634e3c68f4dccd0a31968fe52d6df0873ccdec6"
	if got.Count != 0 || got.Root.String() != wantRoot {
		t.Errorf("empty digest = count %d root %s; want 0 %s", got.Count, got.Root, wantRoot)
	}
	for i, b := range got.BucketStrings() {
		if b != emptySHA {
			t.Fatalf("empty bucket %d = %s; want %s", i, b, emptySHA)
		}
	}
}

func TestDigestOrderDoesNotMatter(t *testing.T) {
	set := goldenSet()
	order := keys(set)
	want := digestOf(t, set, order)
	r := rand.New(rand.NewPCG(1, 2))
	for range 5 {
		r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		if got := digestOf(t, set, order); got != want {
			t.Fatalf("digest after shuffle differs in buckets %v", got.Diff(want))
		}
	}
	// Object key order and white space inside a document do not matter either.
	set["flavor-03"] = `{ "public":true, "ram_mib":2048, "vcpus":4, "name":"f3", "id":"flavor-03" }`
	if got := digestOf(t, set, order); got != want {
		t.Errorf("digest after reordering flavor-03's fields differs in buckets %v", got.Diff(want))
	}
}

func TestOneFieldFlipChangesOneBucket(t *testing.T) {
	set := goldenSet()
	want := digestOf(t, set, keys(set))
	set["flavor-11"] = strings.Replace(set["flavor-11"], `"public":false`, `"public":true`, 1)
	got := digestOf(t, set, keys(set))
	if diff := got.Diff(want); len(diff) != 1 || diff[0] != syncproto.BucketOf("flavor-11") {
		t.Errorf("flipping flavor-11's public changed buckets %v; want [%d]", diff, syncproto.BucketOf("flavor-11"))
	}
	if got.Root == want.Root || got.Count != want.Count {
		t.Errorf("root unchanged or count changed: %s %d vs %s %d", got.Root, got.Count, want.Root, want.Count)
	}
	// A missing entry also shows in its bucket only.
	delete(set, "flavor-11")
	got = digestOf(t, set, keys(set))
	if diff := got.Diff(want); len(diff) != 1 || got.Count != 39 {
		t.Errorf("removing flavor-11 changed buckets %v, count %d; want one bucket, 39", diff, got.Count)
	}
}

func TestDigesterRefuses(t *testing.T) {
	var d syncproto.Digester
	if err := d.Add("k", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := d.Add("k", []byte(`{"a":1}`)); !errors.Is(err, syncproto.ErrDuplicateKey) {
		t.Errorf("Add(k) twice = %v; want ErrDuplicateKey", err)
	}
	if err := d.Add("bad\x00key", []byte(`{}`)); !errors.Is(err, errs.Invalid) {
		t.Errorf("Add(NUL key) = %v; want Invalid", err)
	}
	if err := d.Add("j", []byte(`{`)); !errors.Is(err, errs.Invalid) {
		t.Errorf("Add(bad doc) = %v; want Invalid", err)
	}
	if got := d.Sum().Count; got != 1 {
		t.Errorf("Count = %d after refused adds; want 1", got)
	}
}

func TestValidate(t *testing.T) {
	for _, r := range syncproto.Resources {
		if err := syncproto.ValidateResource(r); err != nil {
			t.Errorf("ValidateResource(%s) = %v", r, err)
		}
	}
	for _, r := range []string{"", "flavours", "Flavors", "flavors "} {
		if err := syncproto.ValidateResource(r); !errors.Is(err, errs.Invalid) {
			t.Errorf("ValidateResource(%q) = %v; want Invalid", r, err)
		}
	}
	for _, k := range []string{"a", "m1.small", "0b5a3c8e-6f2d-4c1e-9a7b-1d2e3f4a5b6c", "user name", "été", strings.Repeat("k", syncproto.MaxKeyLen)} {
		if err := syncproto.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", " a", "a ", "a\nb", "a\x00b", "\u3000a", "a\u00a0", "\xff", strings.Repeat("k", syncproto.MaxKeyLen+1)} {
		if err := syncproto.ValidateKey(k); !errors.Is(err, errs.Invalid) {
			t.Errorf("ValidateKey(%q) = %v; want Invalid", k, err)
		}
	}
}

func TestParseHash(t *testing.T) {
	var d syncproto.Digester
	root := d.Sum().Root
	got, err := syncproto.ParseHash(root.String())
	if err != nil || got != root {
		t.Errorf("ParseHash(%s) = %s, %v", root, got, err)
	}
	if _, err := syncproto.ParseHash("abc"); !errors.Is(err, errs.Invalid) {
		t.Errorf("ParseHash(abc) err = %v; want Invalid", err)
	}
}
