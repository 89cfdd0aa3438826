package hostnet

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
)

// CmdError is the error of an external command (ip, iptables, ss) that
// failed. Its message names the command line and the command's stderr.
type CmdError struct {
	Args   []string // the command line; Args[0] is the program
	Stderr string   // the command's standard error, trimmed
	Err    error    // what os/exec reported, usually an *exec.ExitError
}

func (e *CmdError) Error() string {
	msg := strings.Join(e.Args, " ") + ": " + e.Err.Error()
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *CmdError) Unwrap() error { return e.Err }

// ExitCode is the command's exit status, or -1 if it did not exit normally
// (not found, killed by a signal or by its context).
func (e *CmdError) ExitCode() int {
	var ee *exec.ExitError
	if errors.As(e.Err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// run runs name with args, feeding it stdin if non-empty, and returns its
// standard output. A failure is a *CmdError.
func run(ctx context.Context, stdin, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CmdError{
			Args:   append([]string{name}, args...),
			Stderr: strings.TrimSpace(stderr.String()),
			Err:    err,
		}
	}
	return stdout.String(), nil
}

// exitCode is err's exit status if err is a *CmdError, otherwise -1.
func exitCode(err error) int {
	var ce *CmdError
	if errors.As(err, &ce) {
		return ce.ExitCode()
	}
	return -1
}
