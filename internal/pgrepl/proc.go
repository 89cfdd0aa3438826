package pgrepl

import (
	"bufio"
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
	"syscall"
	"time"
)

// run runs one of PostgreSQL's programs as RunAs, with a clean environment
// (no PG* variables of ours leak in; messages in English for parsing), and
// returns its combined output. Arguments never hold secrets: TLS material
// is passed as file paths.
func (n *Node) run(ctx context.Context, prog string, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(n.cfg.BinDir, prog), args...)
	cmd.Dir = "/"
	cmd.Env = n.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred}
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// pg_ctl start leaves the postmaster running with its output in the log
	// file; should anything keep our pipe open, do not wait for it forever.
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	n.log.Debug("ran", "prog", prog, "args", args, "took", time.Since(start).Round(time.Millisecond), "err", err)
	if err != nil {
		if ctx.Err() != nil {
			return out.Bytes(), fmt.Errorf("pgrepl: %s: %w", prog, ctx.Err())
		}
		return out.Bytes(), fmt.Errorf("pgrepl: %s: %w: %s", prog, err, lastLines(out.String(), 8))
	}
	return out.Bytes(), nil
}

func (n *Node) env() []string {
	return []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "LANG=C", "HOME=" + n.home, "PGTZ=UTC"}
}

// spawn starts the postmaster on DataDir in a session of its own, its
// output appended to the server log: what pg_ctl start does, without the
// shells and the version check pg_ctl runs first (tens of milliseconds on
// a busy controller, on a swact's path). The caller waits for it.
func (n *Node) spawn() error {
	logf, err := os.OpenFile(n.statePath(logFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("pgrepl: server log: %w", err)
	}
	defer logf.Close()
	if n.cred != nil {
		if err := logf.Chown(int(n.cred.Uid), int(n.cred.Gid)); err != nil {
			return fmt.Errorf("pgrepl: server log: %w", err)
		}
	}
	cmd := exec.Command(filepath.Join(n.cfg.BinDir, "postgres"), "-D", n.cfg.DataDir)
	cmd.Dir = "/"
	cmd.Env = n.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: n.cred, Setsid: true}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgrepl: start postgres: %w", err)
	}
	n.log.Debug("spawned postgres", "pid", cmd.Process.Pid)
	go func() { _ = cmd.Wait() }() // reaped when it exits, whenever that is
	return nil
}

// lastLines returns the last k non-empty lines of s, joined by " | ".
func lastLines(s string, k int) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	if len(lines) > k {
		lines = lines[len(lines)-k:]
	}
	return strings.Join(lines, " | ")
}

// logTail returns the end of the server log, for errors about a server
// that would not start or stop.
func (n *Node) logTail() string {
	f, err := os.Open(n.statePath(logFile))
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 8192 {
		_, _ = f.Seek(-8192, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return lastLines(string(b), 6)
}

// postmaster is what postmaster.pid says about a running server.
type postmaster struct {
	pid    int
	status string // "starting", "stopping", "ready" or "standby"
}

// running reports the postmaster serving DataDir, if one is alive: the pid
// file names a live process called postgres whose data directory is ours.
// A stale file (after a crash or a reboot) is not a running server.
func (n *Node) running() (postmaster, bool) {
	b, err := os.ReadFile(filepath.Join(n.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		return postmaster{}, false
	}
	pm, dir, ok := parsePIDFile(string(b))
	if !ok || filepath.Clean(dir) != filepath.Clean(n.cfg.DataDir) {
		return postmaster{}, false
	}
	if err := syscall.Kill(pm.pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return postmaster{}, false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pm.pid))
	if err == nil {
		c := strings.TrimSpace(string(comm))
		if c != "postgres" && c != "postmaster" {
			return postmaster{}, false // the PID was reused
		}
	}
	return pm, true
}

// parsePIDFile reads postmaster.pid: line 1 the PID, line 2 the data
// directory, line 8 the postmaster's status.
func parsePIDFile(s string) (postmaster, string, bool) {
	lines := strings.Split(s, "\n")
	if len(lines) < 2 {
		return postmaster{}, "", false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 0 || strings.TrimSpace(lines[1]) == "" {
		return postmaster{}, "", false
	}
	pm := postmaster{pid: pid}
	if len(lines) >= 8 {
		pm.status = strings.TrimSpace(lines[7])
	}
	return pm, strings.TrimSpace(lines[1]), true
}

// controlData is what pg_controldata says about a data directory.
type controlData struct {
	state      string // "shut down", "in production", "shut down in recovery", ...
	timeline   uint32 // of the latest checkpoint
	checkpoint uint64 // latest checkpoint location
}

// wasPrimary: the control file was last written by a primary (running,
// crashed, or shut down).
func (c controlData) wasPrimary() bool {
	switch c.state {
	case "shut down", "shutting down", "in production", "in crash recovery":
		return true
	}
	return false
}

// wasStandby: the control file was last written by a server in recovery
// from a primary's WAL (a standby, or a rewound former primary).
func (c controlData) wasStandby() bool {
	return c.state == "shut down in recovery" || c.state == "in archive recovery"
}

// controlData runs pg_controldata, or returns what it said while
// global/pg_control holds the same bytes (a stopped node's status is asked
// for ten times a second; the file is 8 kB).
func (n *Node) controlData(ctx context.Context) (controlData, error) {
	raw, readErr := os.ReadFile(n.dataPath(filepath.Join("global", "pg_control")))
	n.cdMu.Lock()
	if readErr == nil && n.cdCache.ok && bytes.Equal(n.cdCache.raw, raw) {
		cd := n.cdCache.cd
		n.cdMu.Unlock()
		return cd, nil
	}
	n.cdMu.Unlock()
	out, err := n.run(ctx, "pg_controldata", nil, "-D", n.cfg.DataDir)
	if err != nil {
		return controlData{}, err
	}
	cd, err := parseControlData(string(out))
	// Cached against the bytes read before pg_controldata ran: a file that
	// changed in between only costs another run next time.
	if err == nil && readErr == nil {
		n.cdMu.Lock()
		n.cdCache.ok, n.cdCache.raw, n.cdCache.cd = true, raw, cd
		n.cdMu.Unlock()
	}
	return cd, err
}

func parseControlData(s string) (controlData, error) {
	var c controlData
	var haveState, haveTLI, haveCkpt bool
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Database cluster state":
			c.state, haveState = v, true
		case "Latest checkpoint's TimeLineID":
			tli, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return c, fmt.Errorf("pgrepl: pg_controldata timeline %q", v)
			}
			c.timeline, haveTLI = uint32(tli), true
		case "Latest checkpoint location":
			lsn, err := ParseLSN(v)
			if err != nil {
				return c, err
			}
			c.checkpoint, haveCkpt = lsn, true
		}
	}
	if !haveState || !haveTLI || !haveCkpt {
		return c, errors.New("pgrepl: pg_controldata output lacks the cluster state, timeline or checkpoint")
	}
	return c, nil
}

// writeFile replaces path atomically with data: owned by RunAs and created
// with perm before the first byte is written, then synced with its
// directory.
func (n *Node) writeFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	err = f.Chmod(perm)
	if err == nil && n.cred != nil {
		err = f.Chown(int(n.cred.Uid), int(n.cred.Gid))
	}
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("pgrepl: write %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("pgrepl: sync %s: %w", dir, err)
	}
	return nil
}

// removeFile removes path (absent is fine) and syncs its directory.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("pgrepl: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// ensureDir creates dir 0700 owned by RunAs; missing parents are created
// 0755 so that RunAs can reach it.
func (n *Node) ensureDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("pgrepl: %w", err)
	}
	if n.cred != nil {
		if err := os.Chown(dir, int(n.cred.Uid), int(n.cred.Gid)); err != nil {
			return fmt.Errorf("pgrepl: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	return nil
}

func (n *Node) ensureDirs() error {
	for _, d := range []string{n.cfg.DataDir, n.cfg.SocketDir, n.cfg.StateDir} {
		if err := n.ensureDir(d); err != nil {
			return err
		}
	}
	return nil
}

// wipeData empties DataDir, keeping the directory itself.
func (n *Node) wipeData() error {
	ents, err := os.ReadDir(n.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(n.cfg.DataDir, e.Name())); err != nil {
			return fmt.Errorf("pgrepl: wipe data directory: %w", err)
		}
	}
	return syncDir(n.cfg.DataDir)
}
