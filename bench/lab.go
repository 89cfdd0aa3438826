package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/lab"
)

// withLab runs fn against a throwaway lab with the given sites.
func withLab(ctx context.Context, binary, sites string, log io.Writer, fn func(f *lab.File) error) error {
	return withLabConfig(ctx, binary, sites, false, log, fn)
}

// withLabConfig is withLab; noDemo leaves the demo service group out.
func withLabConfig(ctx context.Context, binary, sites string, noDemo bool, log io.Writer, fn func(f *lab.File) error) error {
	specs, err := lab.ParseSites(sites)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "petrel-bench-lab-")
	if err != nil {
		return err
	}
	// PETREL_BENCH_KEEP keeps a failed run's lab to read its logs; =always
	// keeps every run's lab up.
	keep := os.Getenv("PETREL_BENCH_KEEP") != ""
	always := os.Getenv("PETREL_BENCH_KEEP") == "always"
	defer func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}()
	fmt.Fprintf(log, "starting a lab (%s) in %s ...\n", sites, dir)
	t0 := time.Now()
	f, err := lab.Up(ctx, lab.Config{Dir: dir, Binary: binary, Sites: specs, NoDemo: noDemo})
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "lab up in %s\n", time.Since(t0).Round(time.Millisecond))
	err = fn(f)
	if err != nil && keep {
		fmt.Fprintf(log, "the lab stays up in %s (PETREL_BENCH_KEEP): petrel lab down --dir %s\n", dir, dir)
		return err
	}
	if always {
		fmt.Fprintf(log, "the lab stays up in %s (PETREL_BENCH_KEEP=always): petrel lab down --dir %s\n", dir, dir)
		return err
	}
	keep = false
	if derr := lab.Down(context.WithoutCancel(ctx), dir); err == nil {
		err = derr
	}
	return err
}

// InventoryResult is the T11 measurement: new host powered on → listed
// with its inventory at its site.
type InventoryResult struct {
	Hosts         int
	P50, P90, Max time.Duration
	LabUp         time.Duration
}

// RunInventory adds hosts one after another to a one-site lab, timing each
// from the moment the lab creates it (namespace, chassis, power-on, 200 ms
// boot delay, agent start, join, first report) to the site listing it with
// its inventory.
func RunInventory(ctx context.Context, binary string, hosts int, log io.Writer) (InventoryResult, error) {
	var res InventoryResult
	err := withLab(ctx, binary, "bench=simplex", log, func(f *lab.File) error {
		var took []time.Duration
		for i := range hosts {
			_, d, err := lab.AddHost(ctx, f.Dir, "bench", binary)
			if err != nil {
				return fmt.Errorf("host %d: %w", i, err)
			}
			took = append(took, d)
		}
		slices.Sort(took)
		res = InventoryResult{Hosts: hosts, P50: Percentile(took, 50), P90: Percentile(took, 90), Max: took[len(took)-1]}
		return nil
	})
	return res, err
}

// AgentResult is the T9 measurement of idle agents.
type AgentResult struct {
	Agents        int
	RssAnonMiB    float64 // mean
	RssAnonMaxMiB float64
	RssMiB        float64 // mean
	CPUPercent    float64 // mean per agent over the window
	BinaryMiB     float64
	Window        time.Duration
}

// RunAgent starts a lab with the given number of workers, lets it settle,
// then measures every agent process over window: anonymous memory (RssAnon),
// resident set (RSS) and CPU.
func RunAgent(ctx context.Context, binary string, workers int, window time.Duration, log io.Writer) (AgentResult, error) {
	var res AgentResult
	err := withLab(ctx, binary, fmt.Sprintf("bench=multi-server:%d", workers), log, func(f *lab.File) error {
		var pids []int
		for _, h := range f.Sites[0].Hosts {
			out, err := exec.CommandContext(ctx, "ip", "netns", "pids", h.Netns).Output()
			if err != nil {
				return err
			}
			for _, p := range strings.Fields(string(out)) {
				pid, _ := strconv.Atoi(p)
				if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), "\x00agent\x00") {
					pids = append(pids, pid)
				}
			}
		}
		if len(pids) == 0 {
			return fmt.Errorf("no agent processes found")
		}
		fmt.Fprintf(log, "settling 5 s, then measuring %d agents for %s ...\n", len(pids), window)
		if !sleepCtx(ctx, 5*time.Second) {
			return ctx.Err()
		}
		cpu0 := map[int]time.Duration{}
		for _, p := range pids {
			cpu0[p] = procCPU(p)
		}
		if !sleepCtx(ctx, window) {
			return ctx.Err()
		}
		var anonSum, anonMax, rssSum, cpuSum float64
		for _, p := range pids {
			anon := procStatusMiB(p, "RssAnon:")
			anonSum += anon
			anonMax = max(anonMax, anon)
			rssSum += procStatusMiB(p, "VmRSS:")
			cpuSum += 100 * (procCPU(p) - cpu0[p]).Seconds() / window.Seconds()
		}
		n := float64(len(pids))
		fi, _ := os.Stat(binary)
		res = AgentResult{Agents: len(pids), RssAnonMiB: anonSum / n, RssAnonMaxMiB: anonMax, RssMiB: rssSum / n,
			CPUPercent: cpuSum / n, BinaryMiB: float64(fi.Size()) / (1 << 20), Window: window}
		return nil
	})
	return res, err
}

func procStatusMiB(pid int, key string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, key) {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, key)), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
