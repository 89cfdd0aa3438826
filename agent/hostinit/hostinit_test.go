package hostinit_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/agent/hostinit"
)

// TestMain lets the test binary act as a supervised service.
func TestMain(m *testing.M) {
	switch os.Getenv("HOSTINIT_TEST_SERVICE") {
	case "crash":
		f, _ := os.OpenFile(os.Getenv("HOSTINIT_TEST_MARK"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		f.WriteString("start\n")
		f.Close()
		os.Exit(3)
	case "serve":
		f, _ := os.OpenFile(os.Getenv("HOSTINIT_TEST_MARK"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		f.WriteString("start\n")
		f.Close()
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func count(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "start")
}

func TestSupervisesAndStops(t *testing.T) {
	dir := t.TempDir()
	crashMark, serveMark := filepath.Join(dir, "crash"), filepath.Join(dir, "serve")
	// Each service is this test binary with an environment telling it what to be.
	cfg := hostinit.Config{Site: "s", Host: "h", LogDir: filepath.Join(dir, "logs"), Services: []hostinit.Service{
		{Name: "crasher", Args: []string{"-test.run=^$"}},
		{Name: "server", Args: []string{"-test.run=^$"}},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runWithEnv(ctx, cfg, map[string][2]string{"crasher": {"crash", crashMark}, "server": {"serve", serveMark}})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && (count(crashMark) < 3 || count(serveMark) < 1) {
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if n := count(crashMark); n < 3 {
		t.Errorf("a crashing service was started %d times; want restarts", n)
	}
	if n := count(serveMark); n != 1 {
		t.Errorf("a running service was started %d times; want once", n)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if _, err := os.Stat(filepath.Join(dir, "logs", "server.log")); err != nil {
		t.Errorf("no per-service log: %v", err)
	}
}

// runWithEnv runs host-init with each service's role in its environment.
// host-init passes its environment to services, so set it per run.
func runWithEnv(ctx context.Context, cfg hostinit.Config, roles map[string][2]string) error {
	errs := make(chan error, len(cfg.Services))
	for _, s := range cfg.Services {
		one := cfg
		one.Services = []hostinit.Service{s}
		env := roles[s.Name]
		go func() {
			errs <- hostinit.RunEnv(ctx, one, slog.New(slog.DiscardHandler),
				[]string{"HOSTINIT_TEST_SERVICE=" + env[0], "HOSTINIT_TEST_MARK=" + env[1]})
		}()
	}
	var first error
	for range cfg.Services {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}
