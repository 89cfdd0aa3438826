package ctlha

import (
	"slices"
	"testing"
	"time"
)

// TestLeaseHistory: answers closer together than the lease's validity make
// one unbroken stretch; a longer gap starts another; ages are from now.
func TestLeaseHistory(t *testing.T) {
	var r Runner
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	const validity = 1500 * time.Millisecond
	for _, ms := range []int{0, 300, 300, 600} { // a repeated answer changes nothing
		r.leaseHistory(at(ms), validity, at(ms))
	}
	got := r.leaseHistory(at(3000), validity, at(3100))
	want := []LeaseRun{
		{From: 3100 * time.Millisecond, To: 1000 * time.Millisecond}, // 0 .. 600+1500
		{From: 100 * time.Millisecond, To: 0},                        // 3000 .. 4500, still valid
	}
	if !slices.Equal(got, want) {
		t.Fatalf("leaseHistory = %v; want %v", got, want)
	}
	w := WitnessView{Held: got}
	if !w.heldThrough(3*time.Second, 1500*time.Millisecond) || w.heldThrough(3*time.Second, 500*time.Millisecond) {
		t.Errorf("heldThrough misreads %v", got)
	}
	// No answer since: nothing new; stretches older than heldFor go.
	got = r.leaseHistory(time.Time{}, validity, at(3100).Add(heldFor+time.Second))
	if len(got) != 1 {
		t.Errorf("after %s: %v; want the second stretch only", heldFor, got)
	}
}
