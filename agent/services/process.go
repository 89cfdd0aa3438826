package services

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-edge/petrel/servicemgr"
)

// vars are the values of the placeholders documented on
// servicemgr.Actions.
type vars struct {
	host, group, mgmt, cluster, stateDir, floating string
}

// expand replaces the placeholders in s. Unknown ones stay as they are.
func (v vars) expand(s string) string {
	if !strings.Contains(s, "{") {
		return s
	}
	return strings.NewReplacer("{host}", v.host, "{group}", v.group, "{mgmt}", v.mgmt, "{cluster}", v.cluster,
		"{state_dir}", v.stateDir, "{floating}", v.floating).Replace(s)
}

// argv expands every element of argv into a new slice.
func (v vars) argv(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = v.expand(a)
	}
	return out
}

// floatingAddr is the address of a floating "ADDR/PREFIX", "" for none.
func floatingAddr(floating string) string {
	addr, _, _ := strings.Cut(floating, "/")
	return addr
}

// env is the environment of a member's processes: the agent's own, with
// the member's PETREL_* variables (which win over inherited ones).
func env(host, group string, role servicemgr.Role, epoch uint64, dir string) []string {
	return append(os.Environ(), "PETREL_GROUP="+group, "PETREL_HOST="+host, "PETREL_ROLE="+string(role),
		"PETREL_EPOCH="+strconv.FormatUint(epoch, 10), "PETREL_STATE_DIR="+dir)
}

// command prepares argv to run as a member's process: in dir, in a
// process group of its own (so that stopping it reaches its children),
// and killed by the kernel should the agent die (Pdeathsig). Pdeathsig
// follows the thread that forked, not the process: the Go runtime ends a
// thread only when a goroutine locked to it (runtime.LockOSThread) exits,
// and the agent locks none, so its threads live as long as it does. Its
// output goes to out.
func command(argv, environ []string, dir string, out io.Writer) (*exec.Cmd, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("empty command")
	}
	prog := argv[0]
	if prog == "petrel" {
		// The host's own petrel (its active software slot), not whatever
		// PATH holds: the demo service and petrel's own tools.
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("resolving petrel: %w", err)
		}
		prog = self
	}
	cmd := exec.Command(prog, argv[1:]...)
	cmd.Dir, cmd.Env = dir, environ
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// Output is copied through a pipe; a grandchild that keeps it open
	// must not hold Wait.
	cmd.WaitDelay = time.Second
	return cmd, nil
}

// runOnce runs a one-shot command (an action or a health check) to its
// end, killing its process group when ctx ends first.
func runOnce(ctx context.Context, argv, environ []string, dir string, out io.Writer) error {
	cmd, err := command(argv, environ, dir, out)
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		killGroup(cmd.Process.Pid, syscall.SIGKILL) // whatever it left behind
		return err
	case <-ctx.Done():
		killGroup(cmd.Process.Pid, syscall.SIGKILL)
		<-waited
		return fmt.Errorf("%w: %w", errTimedOut, ctx.Err())
	}
}

var errTimedOut = errors.New("timed out")

// killGroup signals the process group led by pid. A group that is gone
// is not an error.
func killGroup(pid int, sig syscall.Signal) {
	if pid > 0 {
		_ = syscall.Kill(-pid, sig)
	}
}

// process is a member's running start action.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited and been reaped
	err  error         // its exit, once done is closed
}

// startProcess starts a member's long-running process.
func startProcess(argv, environ []string, dir string, out io.Writer) (*process, error) {
	cmd, err := command(argv, environ, dir, out)
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process. Unless the member's stop action already asked
// it to (asked), SIGTERM to its group does; at deadline its group is
// killed. Whatever is left of its group is killed once it has ended, and
// stop waits (up to a second) until the group is empty.
func (p *process) stop(deadline time.Time, asked bool) {
	if !asked {
		killGroup(p.pid(), syscall.SIGTERM)
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		killGroup(p.pid(), syscall.SIGKILL)
		<-p.done
	}
	killGroup(p.pid(), syscall.SIGKILL)
	// A killed process needs a moment to die. (Its orphaned children may
	// stay zombies a while: their new parent reaps them, not the agent.)
	for end := time.Now().Add(time.Second); groupAlive(p.pid()) && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
}

// groupAlive reports whether a process of group pgid is alive (not a
// zombie).
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" && f[0] != "X" {
			return true
		}
	}
	return false
}

// describeExit says how a process ended.
func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return "exited with status " + strconv.Itoa(ee.ExitCode())
	}
	if err == nil {
		return "exited with status 0"
	}
	return err.Error()
}

// logFile is a member's output file (member.log), renamed to member.log.1
// when it would grow past max.
type logFile struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for rest := p; len(rest) > 0; {
		if l.f != nil && l.size >= l.max {
			l.f.Close()
			l.f = nil
			_ = os.Rename(l.path, l.path+".1")
		}
		if l.f == nil {
			f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				break // output nobody can keep is dropped: not the process's error
			}
			l.f, l.size = f, 0
			if fi, err := f.Stat(); err == nil {
				l.size = fi.Size()
			}
			if l.size >= l.max {
				continue
			}
		}
		n, err := l.f.Write(rest[:min(int64(len(rest)), l.max-l.size)])
		l.size += int64(n)
		rest = rest[n:]
		if err != nil {
			break
		}
	}
	return len(p), nil
}

// note writes a line of the agent's own into the log.
func (l *logFile) note(format string, args ...any) {
	fmt.Fprintf(l, time.Now().UTC().Format(time.RFC3339Nano)+" petrel-agent: "+format+"\n", args...)
}

func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// newLogFile opens (lazily) dir/member.log.
func newLogFile(dir string, max int64) *logFile {
	return &logFile{path: filepath.Join(dir, "member.log"), max: max}
}

// tail keeps the last bytes written to it (at most n): the output of a
// failed health command, for its reason.
type tail struct {
	n int
	b []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.n {
		t.b = append(t.b[:0], t.b[len(t.b)-t.n:]...)
	}
	return len(p), nil
}

func (t *tail) String() string { return strings.TrimSpace(string(t.b)) }
