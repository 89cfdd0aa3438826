// Package bench is Petrel's benchmark harness: scenarios run against real
// daemons started as separate processes, with results appended to
// docs/benchmarks.md together with the command, the commit and the machine.
package bench

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/internal/version"
)

// Machine describes the machine a benchmark ran on.
func Machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					cpu = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.0f GiB", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%d cores (%s)%s, %s", runtime.NumCPU(), cpu, mem, runtime.Version())
}

// Commit is the commit the benchmark ran at: the build's, else the checkout's.
func Commit() string {
	if c := version.Get().Commit; c != "" {
		return c[:min(12, len(c))]
	}
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		c += "-dirty"
	}
	return c
}

// Percentile returns the p-th percentile (0..100) of sorted durations.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	// Nearest rank: the smallest sample with at least p % of the samples at
	// or below it (p99 of ten samples is the largest, not the ninth).
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// cell is s as one Markdown table cell: on one line (an error's output
// may span many), its pipes escaped.
func cell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", `\|`)
}

// Record appends a result row to the table under the heading in file,
// creating the section (heading, description, table header) if absent.
// Each cell is written on one line.
func Record(file, heading, intro string, header []string, row []string) error {
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(b) == 0 {
		lines = []string{"# Benchmarks", "", "Results of `petrel bench`, newest last in each table. Every row names the command, commit and machine."}
	}
	cells := make([]string, len(row))
	for i, c := range row {
		cells[i] = cell(c)
	}
	rowLine := "| " + strings.Join(cells, " | ") + " |"
	h := slices.Index(lines, "## "+heading)
	if h < 0 {
		sep := make([]string, len(header))
		for i := range sep {
			sep[i] = "---"
		}
		lines = append(lines, "", "## "+heading, "", intro, "",
			"| "+strings.Join(header, " | ")+" |", "| "+strings.Join(sep, " | ")+" |", rowLine)
	} else {
		// Insert after the last table row of this section.
		last := -1
		for i := h + 1; i < len(lines) && !strings.HasPrefix(lines[i], "## "); i++ {
			if strings.HasPrefix(lines[i], "|") {
				last = i
			}
		}
		if last < 0 {
			return fmt.Errorf("bench: section %q in %s has no table", heading, file)
		}
		lines = slices.Insert(lines, last+1, rowLine)
	}
	return os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}
