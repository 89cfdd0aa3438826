package ctlha

import (
	"log/slog"
	"os"
	"path/filepath"
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

// TestStateFileKeepsPeerUnaware: what a restarted process needs for D73
// survives it, and an older file without the field reads as false.
func TestStateFileKeepsPeerUnaware(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ha-state.json")
	if err := os.WriteFile(path, []byte(`{"epoch":5}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (*Runner, error) {
		r := &Runner{cfg: Config{StateFile: path}, log: slog.New(slog.DiscardHandler)}
		return r, r.loadState()
	}
	r, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if r.epoch != 5 || r.peerUnaware {
		t.Fatalf("from an older file: epoch %d, peerUnaware %v; want 5, false", r.epoch, r.peerUnaware)
	}
	r.mu.Lock()
	r.peerUnaware = true
	r.saveLocked() // a change of the flag alone is saved
	r.mu.Unlock()
	r2, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if r2.epoch != 5 || !r2.peerUnaware {
		t.Fatalf("after a restart: epoch %d, peerUnaware %v; want 5, true", r2.epoch, r2.peerUnaware)
	}
}
