package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/lab/faultmatrix"
)

// MatrixResult is the split-brain count of T5: seeded fault sequences
// against a duplex site's controller pair (lab/faultmatrix).
type MatrixResult struct {
	Seeds, Steps int
	Acked, Lost  int
	Violations   int // observer rounds with two actives or a shared floating address
	Stuck        int // steps after which the pair did not recover
	Took         time.Duration
}

// RunMatrix runs seeds 1..seeds (steps each) against one duplex lab.
func RunMatrix(ctx context.Context, binary string, seeds, steps int, log io.Writer) (MatrixResult, error) {
	res := MatrixResult{Seeds: seeds}
	start := time.Now()
	err := withLabConfig(ctx, binary, "site-fm=duplex", true, log, func(f *lab.File) error {
		for seed := 1; seed <= seeds; seed++ {
			rep, err := faultmatrix.Run(ctx, faultmatrix.Config{Lab: f, Seed: uint64(seed), Steps: steps, Log: log})
			if err != nil {
				return fmt.Errorf("seed %d: %w", seed, err)
			}
			res.Steps += len(rep.Steps)
			res.Acked += rep.Acked
			res.Lost += len(rep.Lost)
			res.Violations += len(rep.Violations)
			res.Stuck += rep.Stuck
			fmt.Fprintf(log, "seed %d: %d acknowledged, %d lost, %d violations, %d stuck\n", seed, rep.Acked, len(rep.Lost), len(rep.Violations), rep.Stuck)
		}
		return nil
	})
	res.Took = time.Since(start)
	return res, err
}
