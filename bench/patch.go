package bench

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/petrel-edge/petrel/client"
	"github.com/petrel-edge/petrel/internal/version"
	"github.com/petrel-edge/petrel/inventory"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/swpatch"
)

// PatchConfig configures RunPatch.
type PatchConfig struct {
	Binary string // the petrel binary the patches carry (and the lab runs)
	Rounds int    // archive rounds (build, verify, scan, stage), default 5
	Lab    bool   // also patch a simplex lab host (needs root): install and reboot-to-available
	Cycles int    // lab patch cycles, default 2
	Log    io.Writer
}

// PatchResult is what RunPatch measured (medians over the rounds).
type PatchResult struct {
	ArchiveBytes, BinaryBytes int64
	Build, Verify, Scan       time.Duration // of one archive
	Stage                     time.Duration // copy the slot, unpack, check, mark next
	// From the lab, per cycle: host install (order to staged) and unlock
	// to available on the new version.
	Install, RebootToAvailable []time.Duration
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return Percentile(s, 50)
}

// RunPatch measures the patch path on a real petrel binary: building and
// signing an archive, verifying it (signature, payload SHA-256), scanning
// its entries, and staging it into a software root laid out as a lab
// host's (copy of the active slot, unpack, checksums, next marked); with
// Lab, the install on a simplex lab host and its reboot to available.
func RunPatch(ctx context.Context, cfg PatchConfig) (PatchResult, error) {
	var r PatchResult
	if cfg.Rounds <= 0 {
		cfg.Rounds = 5
	}
	if cfg.Cycles <= 0 {
		cfg.Cycles = 2
	}
	fi, err := os.Stat(cfg.Binary)
	if err != nil {
		return r, err
	}
	r.BinaryBytes = fi.Size()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return r, err
	}
	work, err := os.MkdirTemp("", "petrel-bench-patch-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(work)
	var builds, verifies, scans, stages []time.Duration
	for i := range cfg.Rounds {
		id := fmt.Sprintf("B%d", i)
		var buf bytes.Buffer
		t0 := time.Now()
		if _, err := swpatch.Build(&buf, swpatch.BuildSpec{ID: id, Version: swpatch.Stamp(version.Get().Version, id), RebootRequired: true,
			Files: []swpatch.Content{{Path: swpatch.BinaryPath, Source: cfg.Binary, Mode: 0o755}}}, priv); err != nil {
			return r, err
		}
		builds = append(builds, time.Since(t0))
		arch := filepath.Join(work, id+".patch")
		if err := os.WriteFile(arch, buf.Bytes(), 0o600); err != nil {
			return r, err
		}
		r.ArchiveBytes = int64(buf.Len())
		t0 = time.Now()
		p, closeFn, err := swpatch.VerifyFile(arch, pub, swpatch.Limits{})
		if err != nil {
			return r, err
		}
		verifies = append(verifies, time.Since(t0))
		t0 = time.Now()
		if err := p.Scan(swpatch.Limits{}); err != nil {
			closeFn()
			return r, err
		}
		scans = append(scans, time.Since(t0))
		root := filepath.Join(work, "root-"+id)
		if err := os.MkdirAll(filepath.Join(root, "sw/a/bin"), 0o755); err != nil {
			closeFn()
			return r, err
		}
		if err := copyBinary(cfg.Binary, filepath.Join(root, "sw/a/bin/petrel")); err != nil {
			closeFn()
			return r, err
		}
		t0 = time.Now()
		err = swpatch.Slots{Root: root}.Stage(ctx, []*swpatch.Patch{p}, swpatch.Limits{}, nil, time.Now())
		stages = append(stages, time.Since(t0))
		closeFn()
		os.RemoveAll(root)
		if err != nil {
			return r, err
		}
		fmt.Fprintf(cfg.Log, "round %d: build %s verify %s scan %s stage %s\n", i+1, builds[i].Round(time.Millisecond),
			verifies[i].Round(time.Millisecond), scans[i].Round(time.Millisecond), stages[i].Round(time.Millisecond))
	}
	r.Build, r.Verify, r.Scan, r.Stage = median(builds), median(verifies), median(scans), median(stages)
	if !cfg.Lab {
		return r, nil
	}
	err = withLabConfig(ctx, cfg.Binary, "site-pb=simplex", true, cfg.Log, func(f *lab.File) error {
		key, err := swpatch.LoadPrivateKey(f.PatchSigning.PrivateKey)
		if err != nil {
			return err
		}
		api, err := client.New(client.Config{URL: f.Sites[0].URL, CACert: f.CACert, Token: f.Sites[0].Token})
		if err != nil {
			return err
		}
		host := func() (inventory.Host, error) {
			var h inventory.Host
			err := api.Do(ctx, http.MethodGet, "/v1/hosts/controller-0", nil, nil, &h)
			return h, err
		}
		wait := func(limit time.Duration, cond func(inventory.Host) bool) (time.Duration, error) {
			t0 := time.Now()
			for time.Since(t0) < limit {
				if h, err := host(); err == nil && cond(h) {
					return time.Since(t0), nil
				}
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-time.After(100 * time.Millisecond): // polling with a deadline
				}
			}
			return 0, fmt.Errorf("controller-0 did not get there within %s", limit)
		}
		if _, err := wait(2*time.Minute, func(h inventory.Host) bool { return h.Availability == inventory.Available && h.Software != nil }); err != nil {
			return err
		}
		action := func(a string) error {
			return api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/action", nil, map[string]string{"action": a}, nil)
		}
		for i := range cfg.Cycles {
			id := fmt.Sprintf("L%d", i+1)
			ver := swpatch.Stamp(version.Get().Version, id)
			var buf bytes.Buffer
			if _, err := swpatch.Build(&buf, swpatch.BuildSpec{ID: id, Version: ver, RebootRequired: true,
				Files: []swpatch.Content{{Path: swpatch.BinaryPath, Source: cfg.Binary, Mode: 0o755}}}, key); err != nil {
				return err
			}
			if err := api.Upload(ctx, http.MethodPost, "/v1/patches", bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil); err != nil {
				return err
			}
			if err := api.Do(ctx, http.MethodPost, "/v1/patches/"+id+"/apply", nil, nil, nil); err != nil {
				return err
			}
			if err := action("force-lock"); err != nil {
				return err
			}
			h0, err := host()
			if err != nil {
				return err
			}
			if err := api.Do(ctx, http.MethodPost, "/v1/hosts/controller-0/install", nil, nil, nil); err != nil {
				return err
			}
			inst, err := wait(5*time.Minute, func(h inventory.Host) bool {
				return h.Software != nil && h.Software.NextSlot != "" && slices.Contains(h.Software.NextPatches, id)
			})
			if err != nil {
				return err
			}
			if err := action("unlock"); err != nil {
				return err
			}
			boot, err := wait(5*time.Minute, func(h inventory.Host) bool {
				return h.BootID != h0.BootID && h.SoftwareVersion == ver && h.PatchCurrent && h.Availability == inventory.Available
			})
			if err != nil {
				return err
			}
			r.Install, r.RebootToAvailable = append(r.Install, inst), append(r.RebootToAvailable, boot)
			fmt.Fprintf(cfg.Log, "lab cycle %d: install %s, unlock to available on %s %s\n", i+1, inst.Round(time.Millisecond), ver, boot.Round(time.Millisecond))
		}
		return nil
	})
	return r, err
}

func copyBinary(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
