package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/bench"
)

// benchPatchCmd is `petrel bench patch`.
func (a *app) benchPatchCmd(out *string, record *bool) *cobra.Command {
	var rounds, cycles int
	var withLab bool
	c := &cobra.Command{
		Use:   "patch [--rounds 5] [--lab] [--cycles 2]",
		Short: "Patches of a real petrel binary: build, verify, scan, stage; with --lab, install and reboot-to-available on a simplex lab host (root)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := bench.RunPatch(cmd.Context(), bench.PatchConfig{Binary: bin, Rounds: rounds, Lab: withLab, Cycles: cycles, Log: a.stderr})
			if err != nil {
				return err
			}
			ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
			list := func(ds []time.Duration) string {
				var s []string
				for _, d := range ds {
					s = append(s, fmt.Sprintf("%.1f s", d.Seconds()))
				}
				if len(s) == 0 {
					return "—"
				}
				return strings.Join(s, ", ")
			}
			mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
			fmt.Fprintf(a.stdout, "archive: %s (binary %s)\nmedian of %d: build %s, verify %s, scan %s, stage (copy slot, unpack, checksums) %s\n",
				mib(r.ArchiveBytes), mib(r.BinaryBytes), rounds, ms(r.Build), ms(r.Verify), ms(r.Scan), ms(r.Stage))
			if withLab {
				fmt.Fprintf(a.stdout, "lab host install: %s\nunlock to available on the new version: %s\n", list(r.Install), list(r.RebootToAvailable))
			}
			if !*record {
				return nil
			}
			return recordRow(a, *out, "Software patches",
				"`petrel bench patch`: a patch carrying the real petrel binary (gzip'd tar, ed25519-signed manifest). Build = "+
					"tar + gzip + sign; verify = signature and payload SHA-256 before anything is unpacked; scan = every "+
					"entry checked without writing; stage = a host's install into its inactive slot (copy of the active "+
					"slot, unpack through os.Root, checksums, next marked). With --lab, on a simplex lab site: host install "+
					"(order → fetched, verified, staged, reported) and unlock → available on the new version (the site "+
					"controller reboots with its host). Medians of --rounds.",
				[]string{"date (UTC)", "commit", "machine", "command", "archive / binary", "build", "verify", "scan", "stage", "lab install", "lab unlock → available"},
				[]string{mib(r.ArchiveBytes) + " / " + mib(r.BinaryBytes), ms(r.Build), ms(r.Verify), ms(r.Scan), ms(r.Stage),
					list(r.Install), list(r.RebootToAvailable)}, cmd)
		},
	}
	c.Flags().IntVar(&rounds, "rounds", 5, "archive rounds")
	c.Flags().BoolVar(&withLab, "lab", false, "also patch a simplex lab host (needs root)")
	c.Flags().IntVar(&cycles, "cycles", 2, "lab patch cycles")
	return c
}
