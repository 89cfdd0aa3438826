package coord_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when goroutines outlive its tests (members,
// clients, keep-alives, leadership watchers): every test cleans up after
// itself, so once they have all finished only this goroutine should be
// left. Shutting gRPC connections down takes a moment, hence the polling.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := leftGoroutines(10 * time.Second); left != nil {
			fmt.Fprintf(os.Stderr, "goroutines left after the tests:\n\n%s\n", strings.Join(left, "\n\n"))
			code = 1
		}
	}
	os.Exit(code)
}

// leftGoroutines waits up to d for every goroutine but the caller to end,
// and returns the stacks of those that did not.
func leftGoroutines(d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		buf := make([]byte, 1<<20)
		stacks := strings.Split(strings.TrimSpace(string(buf[:runtime.Stack(buf, true)])), "\n\n")
		if len(stacks) <= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return stacks[1:]
		}
		time.Sleep(20 * time.Millisecond)
	}
}
