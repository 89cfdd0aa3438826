package faultmatrix

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestRowTrail: each call returns the decision rows logged since the last
// one, whole lines only.
func TestRowTrail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subcloud.log")
	write := func(s string) {
		fh, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fh.WriteString(s); err != nil {
			t.Fatal(err)
		}
		fh.Close()
	}
	line := func(row string) string {
		return `{"level":"INFO","msg":"decision","component":"pair","role":"active","decision":"` + row + ` go-async [400.002]: lost"}` + "\n"
	}
	write(line("D21") + `{"msg":"role","from":"standby"}` + "\n")
	r := &rowTrail{path: path}
	if got := r.next(); !slices.Equal(got, []string{"D21"}) {
		t.Fatalf("first read = %v; want [D21]", got)
	}
	write(line("D80") + line("D20") + `{"msg":"decision","decision":"D14 go-s`) // the last line is half written
	if got := r.next(); !slices.Equal(got, []string{"D80", "D20"}) {
		t.Fatalf("second read = %v; want [D80 D20]", got)
	}
	write(`ync: back"}` + "\n")
	if got := r.next(); !slices.Equal(got, []string{"D14"}) {
		t.Fatalf("third read = %v; want [D14], the line finished", got)
	}
}
