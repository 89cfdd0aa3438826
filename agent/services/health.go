package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/petrel-edge/petrel/servicemgr"
)

// Health check types (servicemgr.HealthCheck.Type).
const (
	checkProcess = "process"
	checkTCP     = "tcp"
	checkHTTP    = "http"
	checkCommand = "command"
)

// Health check defaults (see servicemgr.HealthCheck).
const (
	defaultInterval = 500 * time.Millisecond
	defaultTimeout  = time.Second
	defaultFailures = 3
	// startInterval is the interval between checks until the first one
	// passes, when it is shorter than the check's own: a restarted member
	// is back in standby as soon as it answers.
	startInterval = 100 * time.Millisecond
)

// healthSpec is a health check with its defaults filled in and its
// placeholders expanded.
type healthSpec struct {
	kind     string
	target   string
	command  []string
	interval time.Duration
	timeout  time.Duration
	failures int
}

func newHealthSpec(hc servicemgr.HealthCheck, v vars) healthSpec {
	s := healthSpec{kind: hc.Type, target: v.expand(hc.Target), command: v.argv(hc.Command),
		interval: time.Duration(hc.IntervalMS) * time.Millisecond, timeout: time.Duration(hc.TimeoutMS) * time.Millisecond,
		failures: hc.Failures}
	if s.interval <= 0 {
		s.interval = defaultInterval
	}
	if s.timeout <= 0 {
		s.timeout = defaultTimeout
	}
	if s.failures <= 0 {
		s.failures = defaultFailures
	}
	return s
}

// validHealth checks what can be checked of a health check before it runs.
func validHealth(hc servicemgr.HealthCheck) error {
	switch hc.Type {
	case checkProcess:
	case checkTCP, checkHTTP:
		if hc.Target == "" {
			return fmt.Errorf("health check %s needs a target", hc.Type)
		}
	case checkCommand:
		if len(hc.Command) == 0 || hc.Command[0] == "" {
			return errors.New("health check command needs a command")
		}
	default:
		return fmt.Errorf("unknown health check type %q", hc.Type)
	}
	if hc.IntervalMS < 0 || hc.TimeoutMS < 0 || hc.Failures < 0 {
		return errors.New("health check interval, timeout and failures cannot be negative")
	}
	return nil
}

// healthResult is the outcome of one check: nil when it passed.
type healthResult struct{ err error }

// checker runs a member's health check while its process runs, sending
// every outcome to results.
type checker struct {
	results chan healthResult
	stop    func() // stops the checker and waits for its goroutine
}

// startChecker checks spec until stopped: at once (a process check after
// startInterval), then every interval after the previous check ended. runCommand runs a command check.
func startChecker(ctx context.Context, spec healthSpec, p *process, runCommand func(ctx context.Context, argv []string, out io.Writer) error) *checker {
	probe := newProbe(spec, p, runCommand)
	ctx, cancel := context.WithCancel(ctx)
	c := &checker{results: make(chan healthResult)}
	done := make(chan struct{})
	c.stop = func() { cancel(); <-done }
	go func() {
		defer close(done)
		passed := false
		first := time.Duration(0) // at once: a service may answer already
		if spec.kind == checkProcess {
			first = min(spec.interval, startInterval) // a process just started is trivially alive
		}
		t := time.NewTimer(first)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cctx, ccancel := context.WithTimeout(ctx, spec.timeout)
			err := probe(cctx)
			ccancel()
			if ctx.Err() != nil {
				return
			}
			select {
			case c.results <- healthResult{err: err}:
			case <-ctx.Done():
				return
			}
			passed = passed || err == nil
			next := spec.interval
			if !passed {
				next = min(next, startInterval)
			}
			t.Reset(next)
		}
	}()
	return c
}

// newProbe returns one check of spec.
func newProbe(spec healthSpec, p *process, runCommand func(ctx context.Context, argv []string, out io.Writer) error) func(context.Context) error {
	switch spec.kind {
	case checkTCP:
		return func(ctx context.Context) error {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", spec.target)
			if err != nil {
				return fmt.Errorf("tcp %s: %w", spec.target, err)
			}
			return c.Close()
		}
	case checkHTTP:
		target := spec.target
		if !strings.Contains(target, "://") {
			target = "http://" + target
		}
		client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
			if err != nil {
				return fmt.Errorf("http %s: %w", target, err)
			}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("http: %w", err)
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			resp.Body.Close()
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("http %s: status %d", target, resp.StatusCode)
			}
			return nil
		}
	case checkCommand:
		return func(ctx context.Context) error {
			out := &tail{n: 200}
			if err := runCommand(ctx, spec.command, out); err != nil {
				if s := out.String(); s != "" {
					return fmt.Errorf("command %s: %s: %w", spec.command[0], s, err)
				}
				return fmt.Errorf("command %s: %w", spec.command[0], err)
			}
			return nil
		}
	default: // process; New refused any other type
		return func(context.Context) error {
			if p.exited() {
				return errors.New("process exited")
			}
			return nil
		}
	}
}
