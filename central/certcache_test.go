package central

import "testing"

// A serial read before a forget is never stored after it: a check under
// linkMu must not see a certificate older than the registry's.
func TestCertCacheRefusesAReadOlderThanAForget(t *testing.T) {
	var cc certCache
	gen := cc.generation()
	cc.forget("site-a") // a re-issue lands while the old serial is being read
	cc.put("site-a", "old", gen)
	if s, ok := cc.get("site-a"); ok {
		t.Fatalf("get = %q after a put older than the forget; want a miss", s)
	}
	gen = cc.generation()
	cc.put("site-a", "new", gen)
	if s, ok := cc.get("site-a"); !ok || s != "new" {
		t.Fatalf("get = %q, %v; want new", s, ok)
	}
	cc.forget("site-a")
	if _, ok := cc.get("site-a"); ok {
		t.Fatal("a forgotten site is still cached")
	}
}
