package bench_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/bench"
)

func TestRecordAppendsUnderItsHeading(t *testing.T) {
	f := filepath.Join(t.TempDir(), "benchmarks.md")
	hdr := []string{"a", "b"}
	for _, row := range [][]string{{"1", "2"}, {"3", "4"}} {
		if err := bench.Record(f, "T1 — one", "About T1.", hdr, row); err != nil {
			t.Fatal(err)
		}
	}
	if err := bench.Record(f, "T2 — two", "About T2.", hdr, []string{"5", "6"}); err != nil {
		t.Fatal(err)
	}
	if err := bench.Record(f, "T1 — one", "About T1.", hdr, []string{"7", "8"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f)
	s := string(b)
	t1, t2 := strings.Index(s, "## T1"), strings.Index(s, "## T2")
	r7 := strings.Index(s, "| 7 | 8 |")
	if t1 < 0 || t2 < 0 || r7 < t1 || r7 > t2 || strings.Count(s, "| --- | --- |") != 2 {
		t.Errorf("benchmarks.md:\n%s", s)
	}
}

// A cell spanning lines (a failed run's error) or holding a pipe stays
// one table cell.
func TestRecordKeepsARowOnOneLine(t *testing.T) {
	f := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := bench.Record(f, "T1", "About.", []string{"a", "b"}, []string{"1", "did not complete: initdb:\nPermission denied | x"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f)
	if !strings.HasSuffix(string(b), "| 1 | did not complete: initdb: Permission denied \\| x |\n") {
		t.Errorf("benchmarks.md:\n%s", b)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	if p := bench.Percentile(d, 50); p != 50*time.Millisecond {
		t.Errorf("p50 = %s", p)
	}
	if p := bench.Percentile(d, 99); p != 99*time.Millisecond {
		t.Errorf("p99 = %s", p)
	}
	// Few samples: p99 is the largest (nearest rank), never one below it.
	ten := d[:10]
	if p := bench.Percentile(ten, 99); p != 10*time.Millisecond {
		t.Errorf("p99 of ten = %s, want the largest", p)
	}
	if p := bench.Percentile(d[:3], 50); p != 2*time.Millisecond {
		t.Errorf("p50 of three = %s, want the middle one", p)
	}
}
