package central

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrel-edge/petrel/deploy"
)

// AnsibleRunner runs deploy/ansible's bootstrap.yml with ansible-playbook
// as a subprocess: the inventory and the vars file are files (-i, -e @FILE),
// the secrets file is named by the vars file; no value or secret is in argv.
// The output goes to the job's log (0600); the failing task is read from it.
type AnsibleRunner struct {
	// PlaybookDir receives the playbooks embedded in this binary (once per
	// process), so that sites get the playbooks this central was built with.
	PlaybookDir string
	// Command is ansible-playbook's path; default: found in PATH.
	Command string

	once sync.Once
	err  error
}

func (r *AnsibleRunner) extract() error {
	r.once.Do(func() {
		if err := os.RemoveAll(r.PlaybookDir); err != nil {
			r.err = err
			return
		}
		_, r.err = deploy.Extract(r.PlaybookDir)
	})
	return r.err
}

// RunPlaybook implements PlaybookRunner.
func (r *AnsibleRunner) RunPlaybook(ctx context.Context, job PlaybookJob) error {
	if err := r.extract(); err != nil {
		return fmt.Errorf("central: deploy playbooks: %w", err)
	}
	command := r.Command
	if command == "" {
		var err error
		if command, err = exec.LookPath("ansible-playbook"); err != nil {
			return &PlaybookFailure{Message: "ansible-playbook is not installed on central's machine (Debian: ansible-core)"}
		}
	}
	logf, err := os.OpenFile(job.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	tmp := filepath.Join(job.Dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return err
	}
	args := []string{"-i", filepath.Join(job.Dir, deployInventory), "-e", "@" + filepath.Join(job.Dir, deployValues)}
	if len(job.Tags) > 0 {
		args = append(args, "--tags", strings.Join(job.Tags, ","))
	}
	args = append(args, filepath.Join(r.PlaybookDir, deploy.Playbook))
	cmd := exec.CommandContext(ctx, command, args...)
	cmd.Dir = r.PlaybookDir
	cmd.Env = append(os.Environ(), "ANSIBLE_CONFIG="+filepath.Join(r.PlaybookDir, "ansible.cfg"), "ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0", "ANSIBLE_LOCAL_TEMP="+tmp, "ANSIBLE_RETRY_FILES_ENABLED=0", "PYTHONUNBUFFERED=1")
	// Its own process group, stopped as a whole; and it dies with central.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = io.MultiWriter(logf, pw), logf
	fmt.Fprintf(logf, "# %s: ansible-playbook %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(args, " "))
	var p playbookParser
	done := make(chan struct{})
	go func() { defer close(done); p.read(pr) }()
	err = cmd.Run()
	pw.Close()
	<-done
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if f := p.failure(); f != nil {
		return f
	}
	return &PlaybookFailure{Message: fmt.Sprintf("ansible-playbook: %v (see %s)", err, job.Log)}
}

// playbookParser follows ansible-playbook's default output for the task
// that failed: "TASK [role : name] ***" then "fatal: [host]: FAILED! => {…}".
type playbookParser struct {
	task string
	fail *PlaybookFailure
}

var (
	taskLine = regexp.MustCompile(`^TASK \[(.*)\] \*+`)
	// "fatal: [h]: FAILED! => {…}", "fatal: [h]: UNREACHABLE! => {…}", and
	// in a loop "failed: [h] (item=x) => {…}".
	fatalLine = regexp.MustCompile(`^(?:fatal|failed): \[([^\]]+)\](?: \(item=.*?\))?(?:: (FAILED|UNREACHABLE)!)? => (.*)$`)
)

func (p *playbookParser) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		p.line(sc.Text())
	}
	_, _ = io.Copy(io.Discard, r)
}

func (p *playbookParser) line(l string) {
	if m := taskLine.FindStringSubmatch(l); m != nil {
		p.task = m[1]
		return
	}
	m := fatalLine.FindStringSubmatch(l)
	if m == nil || p.fail != nil {
		return
	}
	f := &PlaybookFailure{Task: p.task, Host: m[1], Unreachable: m[2] == "UNREACHABLE", Message: m[3]}
	var body struct {
		Msg any `json:"msg"`
	}
	if json.Unmarshal([]byte(m[3]), &body) == nil && body.Msg != nil {
		f.Message = fmt.Sprint(body.Msg)
	}
	if len(f.Message) > 2000 {
		f.Message = f.Message[:2000] + "…"
	}
	p.fail = f
}

func (p *playbookParser) failure() *PlaybookFailure { return p.fail }
