// Package libvirtd runs a private libvirtd: one simulated hypervisor
// host's daemon in the lab, or a test's own daemon.
//
// The recipe is the verified one of shared/notes/libvirt-and-live-migration.md
// and vm-disk-images.md: the monolithic libvirtd runs in the foreground in
// its own mount namespace, where libvirt's five system directories
// (/etc, /run, /var/lib, /var/log, /var/cache /libvirt) are bind mounts of
// the daemon's own directory, so several daemons never share state. Its
// parent is `tini -s`, a child subreaper, so exited QEMUs are reaped at once
// (this machine's PID 1 reaps orphans only every ~2 s, and libvirt waits for
// the reap). qemu.conf runs QEMU as root with no security driver and
// `cgroup_controllers = [ ]`, which keeps QEMU in the daemon's cgroup (the
// lab host's) instead of libvirt's machine/ slices, where daemons collide.
// There is no KVM here: domains are type 'qemu' (TCG).
//
// A daemon may listen on an address too: with TLS (Config.TLS, qemu+tls,
// port 16514), clients are admitted by their certificate's CA and
// distinguished name; without it, on plain TCP with no authentication
// (qemu+tcp, port 16509), for tests and loopback addresses only.
//
// Start needs root (mount namespaces) and the Debian packages in Packages.
package libvirtd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/petrel-edge/petrel/internal/atomicfile"
)

// Packages are the Debian packages a daemon needs (installed with
// --no-install-recommends; libvirt-daemon-system is deliberately absent: it
// brings polkit, systemd units and iptables rules).
var Packages = []string{"libvirt-daemon", "libvirt-daemon-driver-qemu", "libvirt-clients",
	"qemu-system-x86", "qemu-utils", "tini"}

// ErrNotInstalled is returned (wrapped, naming what is missing) when the
// daemon cannot run here.
var ErrNotInstalled = errors.New("libvirtd: not installed")

const (
	libvirtdBin = "/usr/sbin/libvirtd"
	qemuDriver  = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so"
)

// Config describes one daemon.
type Config struct {
	// Dir is the daemon's own directory: its libvirt directories, config,
	// socket and logs live under it. Created if missing.
	Dir string `json:"dir"`
	// HostUUID is the daemon's host_uuid; distinct per daemon. Default: a
	// new random UUID.
	HostUUID string `json:"host_uuid,omitempty"`
	// ListenAddr, if set, makes the daemon also listen on that address
	// and take incoming migrations there: with TLS, on TLSPort
	// (qemu+tls, clients authenticated by their certificates); without,
	// on TCPPort with no authentication at all (qemu+tcp: tests and
	// loopback addresses only).
	ListenAddr string `json:"listen_addr,omitempty"`
	// MigrationAddr, if set, is where incoming live migrations (memory
	// and the disk copy) are taken instead of ListenAddr: the host's
	// cluster network address, so migrations stay off the management
	// network.
	MigrationAddr string `json:"migration_addr,omitempty"`
	// TLS, if set, makes the listener on ListenAddr TLS only (no plain
	// TCP listener): the daemon presents CertFile and admits a client
	// only if its certificate is signed by CAFile and its distinguished
	// name matches AllowedDN. Requires ListenAddr.
	TLS *TLSConfig `json:"tls,omitempty"`
	// StartNice, if positive, is the daemon's niceness while it starts (it
	// uses ~0.2 s of CPU then); once it answers, every thread of the
	// daemon goes back to niceness 0, so its QEMUs run at normal priority.
	// The lab sets it, so that hosts booting together give their CPU to the
	// control plane first.
	StartNice int `json:"start_nice,omitempty"`
}

// TLSConfig is a daemon's TLS listener: its server certificate and the
// clients it admits. The files are read at Start and copied into the
// daemon's directory (the key 0600); libvirtd reads the copies.
type TLSConfig struct {
	// CAFile is the CA certificate (PEM) that signs the clients'
	// certificates, and the server's.
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are the daemon's certificate and key (PEM).
	// Clients check the certificate against the address they dial, so it
	// must name ListenAddr as an IP SAN.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// AllowedDN lists the distinguished names of the clients admitted
	// (libvirt's tls_allowed_dn_list: shell-style patterns matched
	// against the subject as libvirt prints it, in the certificate's
	// order, e.g. "O=Petrel,CN=petrel-site-east"; SubjectDN gives it).
	// Required: a CA-signed certificate alone does not admit a client.
	AllowedDN []string `json:"allowed_dn"`
	// PeerCertFile and PeerKeyFile, if set, are the daemon's own client
	// certificate for the other hosts' daemons (peer-to-peer live
	// migration: this daemon connects to the destination's). They are
	// installed where PeerPKIPath points, with the CA, as libvirt's
	// pkipath wants them.
	PeerCertFile string `json:"peer_cert_file,omitempty"`
	PeerKeyFile  string `json:"peer_key_file,omitempty"`
}

// PeerPKIPath is where a daemon with TLSConfig.PeerCertFile finds its
// client identity, as its mount namespace shows it: the pkipath to put in
// a peer-to-peer migration's destination URI.
const PeerPKIPath = pkiInMount + "peer"

// Ports of libvirtd's listeners (libvirt's defaults).
const (
	TCPPort = 16509 // qemu+tcp, no authentication
	TLSPort = 16514 // qemu+tls
)

// TCPURI is the qemu+tcp URI of a daemon listening on addr (an IP
// address) without TLS.
func TCPURI(addr string) string {
	return "qemu+tcp://" + net.JoinHostPort(addr, strconv.Itoa(TCPPort)) + "/system"
}

// TLSURI is the qemu+tls URI of a daemon listening on addr (an IP
// address) with TLS.
func TLSURI(addr string) string {
	return "qemu+tls://" + net.JoinHostPort(addr, strconv.Itoa(TLSPort)) + "/system"
}

// SubjectDN is cert's subject as libvirtd matches it against
// tls_allowed_dn_list: its attributes in the order the certificate
// encodes them (libvirt 9.0 prints the DN with GnuTLS's compatible
// format, the reverse of RFC 4514 and of pkix.Name.String), e.g.
// "O=Petrel,CN=petrel-site-east" (virt-pki-query-dn prints the same).
func SubjectDN(cert *x509.Certificate) (string, error) {
	var seq pkix.RDNSequence
	rest, err := asn1.Unmarshal(cert.RawSubject, &seq)
	if err != nil {
		return "", fmt.Errorf("libvirtd: certificate subject: %w", err)
	}
	if len(rest) > 0 {
		return "", errors.New("libvirtd: certificate subject: trailing data")
	}
	slices.Reverse(seq) // RDNSequence.String prints the last RDN first
	return seq.String(), nil
}

// The TLS files as the daemon sees them: Dir/etc is its /etc/libvirt.
const (
	pkiDir     = "etc/pki"
	caCopy     = "cacert.pem"
	certCopy   = "servercert.pem"
	keyCopy    = "serverkey.pem"
	pkiInMount = "/etc/libvirt/pki/"
)

// installTLS checks t's files (a CA, a certificate it signed and that
// certificate's key) and copies them into dir's etc/pki, the key 0600.
func installTLS(dir string, t *TLSConfig) error {
	if len(t.AllowedDN) == 0 {
		return errors.New("libvirtd: tls.allowed_dn is required (a CA-signed certificate alone admits no client)")
	}
	for _, dn := range t.AllowedDN {
		if err := confString(dn); err != nil {
			return fmt.Errorf("libvirtd: tls.allowed_dn %q: %w", dn, err)
		}
	}
	ca, err := os.ReadFile(t.CAFile)
	if err != nil {
		return fmt.Errorf("libvirtd: tls CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("libvirtd: tls CA %s holds no PEM certificate", t.CAFile)
	}
	certPEM, err := os.ReadFile(t.CertFile)
	if err != nil {
		return fmt.Errorf("libvirtd: tls certificate: %w", err)
	}
	if fi, err := os.Stat(t.KeyFile); err != nil {
		return fmt.Errorf("libvirtd: tls key: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("libvirtd: tls key %s has mode %04o: a key must not be readable by group or others (0600)", t.KeyFile, fi.Mode().Perm())
	}
	keyPEM, err := os.ReadFile(t.KeyFile)
	if err != nil {
		return fmt.Errorf("libvirtd: tls key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error names no key material.
		return fmt.Errorf("libvirtd: tls certificate %s and key %s: %w", t.CertFile, t.KeyFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("libvirtd: tls certificate: %w", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("libvirtd: tls certificate %s: %w", t.CertFile, err)
	}
	pki := filepath.Join(dir, pkiDir)
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(pki, keyCopy), keyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(pki, certCopy), certPEM, 0o644); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(pki, caCopy), ca, 0o644); err != nil {
		return err
	}
	if t.PeerCertFile == "" && t.PeerKeyFile == "" {
		return nil
	}
	return installPeer(filepath.Join(pki, "peer"), t, ca, pool)
}

// installPeer checks the daemon's client certificate for its peers and
// copies it, its key (0600) and the CA into dir as libvirt's pkipath
// wants them (clientcert.pem, clientkey.pem, cacert.pem).
func installPeer(dir string, t *TLSConfig, ca []byte, pool *x509.CertPool) error {
	if fi, err := os.Stat(t.PeerKeyFile); err != nil {
		return fmt.Errorf("libvirtd: tls peer key: %w", err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("libvirtd: tls peer key %s has mode %04o: a key must not be readable by group or others (0600)", t.PeerKeyFile, fi.Mode().Perm())
	}
	certPEM, err := os.ReadFile(t.PeerCertFile)
	if err != nil {
		return fmt.Errorf("libvirtd: tls peer certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(t.PeerKeyFile)
	if err != nil {
		return fmt.Errorf("libvirtd: tls peer key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("libvirtd: tls peer certificate %s and key %s: %w", t.PeerCertFile, t.PeerKeyFile, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return fmt.Errorf("libvirtd: tls peer certificate: %w", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("libvirtd: tls peer certificate %s: %w", t.PeerCertFile, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, "clientkey.pem"), keyPEM, 0o600); err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(dir, "clientcert.pem"), certPEM, 0o644); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, "cacert.pem"), ca, 0o644)
}

// confString refuses what cannot sit inside a libvirtd.conf string.
func confString(s string) error {
	if s == "" || strings.ContainsAny(s, "\"\\") || strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return errors.New("empty, or holds a quote, a backslash or a control character")
	}
	return nil
}

// Daemon is a running libvirtd.
type Daemon struct {
	cfg  Config
	cmd  *exec.Cmd
	done chan struct{}
	werr error
}

// Installed reports whether the programs a daemon needs are present,
// naming the missing Debian packages in the error.
func Installed() error {
	var missing []string
	check := func(ok bool, pkg string) {
		if !ok {
			missing = append(missing, pkg)
		}
	}
	check(exists(libvirtdBin), "libvirt-daemon")
	check(exists(qemuDriver), "libvirt-daemon-driver-qemu")
	_, err := exec.LookPath("qemu-system-x86_64")
	check(err == nil, "qemu-system-x86")
	_, err = exec.LookPath("qemu-img")
	check(err == nil, "qemu-utils")
	_, err = exec.LookPath("tini")
	check(err == nil, "tini")
	_, err = exec.LookPath("unshare")
	check(err == nil, "util-linux")
	if len(missing) > 0 {
		return fmt.Errorf("%w: Debian packages %s", ErrNotInstalled, strings.Join(missing, " "))
	}
	return nil
}

func exists(name string) bool { _, err := os.Stat(name); return err == nil }

// Start starts the daemon and returns once it answers on its socket. ctx
// bounds the start only, not the daemon's life: Close stops it.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if err := Installed(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("libvirtd: needs root (mount namespaces)")
	}
	if err := EnsureUser(ctx); err != nil {
		return nil, err
	}
	if cfg.HostUUID == "" {
		cfg.HostUUID = uuid.NewString()
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	for _, d := range []string{"etc", "run", "lib", "log", "cache"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	for _, d := range mounts {
		if err := os.MkdirAll(d[1], 0o755); err != nil {
			return nil, err
		}
	}
	if cfg.TLS != nil {
		if cfg.ListenAddr == "" {
			return nil, errors.New("libvirtd: tls needs listen_addr")
		}
		if err := installTLS(dir, cfg.TLS); err != nil {
			return nil, err
		}
	}
	if cfg.ListenAddr != "" {
		if err := confString(cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("libvirtd: listen_addr %q: %w", cfg.ListenAddr, err)
		}
		if cfg.MigrationAddr != "" && net.ParseIP(cfg.MigrationAddr) == nil {
			return nil, fmt.Errorf("libvirtd: migration_addr %q is not an IP address", cfg.MigrationAddr)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "libvirtd.conf"), []byte(libvirtdConf(cfg)), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "qemu.conf"), []byte(qemuConf(cfg)), 0o644); err != nil {
		return nil, err
	}
	for _, stale := range []string{"run/libvirtd.pid", "run/libvirt-sock", "run/libvirt-sock-ro", "run/libvirt-admin-sock"} {
		_ = os.Remove(filepath.Join(dir, stale))
	}
	var script strings.Builder
	for _, m := range mounts {
		fmt.Fprintf(&script, "mount --bind %s %s && ", shellQuote(filepath.Join(dir, m[0])), m[1])
	}
	args := []string{"--listen"}
	if cfg.ListenAddr == "" {
		args = nil
	}
	// The daemon's argv names its directory, so it can be told apart.
	fmt.Fprintf(&script, "exec tini -s -- %s %s -f /etc/libvirt/libvirtd.conf -p /run/libvirt/libvirtd.pid # %s",
		libvirtdBin, strings.Join(args, " "), shellQuote(dir))
	out, err := os.OpenFile(filepath.Join(dir, "log", "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	argv := []string{"unshare", "-m", "--propagation", "private", "sh", "-c", script.String()}
	if cfg.StartNice > 0 {
		argv = append([]string{"nice", "-n", strconv.Itoa(cfg.StartNice)}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own session (no terminal signals); stopped (tini forwards SIGTERM
	// to libvirtd) if this process dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("libvirtd: start: %w", err)
	}
	d := &Daemon{cfg: cfg, cmd: cmd, done: make(chan struct{})}
	go func() { d.werr = cmd.Wait(); close(d.done) }()
	if err := d.waitReady(ctx); err != nil {
		d.Close()
		return nil, err
	}
	if cfg.StartNice > 0 {
		if err := renice(d.Pid(), 0); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

// renice sets the niceness of every thread of pid and of its descendants
// (Linux niceness is per thread, and threads inherit their creator's).
func renice(pid, nice int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return fmt.Errorf("libvirtd: renice %d: %w", pid, err)
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("libvirtd: renice thread %d: %w", tid, err)
		}
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
		for _, k := range strings.Fields(string(kids)) {
			if kid, err := strconv.Atoi(k); err == nil {
				if err := renice(kid, nice); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
		}
	}
	return nil
}

// mounts are libvirt's system directories and the subdirectory of Dir
// bound over each.
var mounts = [][2]string{
	{"etc", "/etc/libvirt"}, {"run", "/run/libvirt"}, {"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"}, {"cache", "/var/cache/libvirt"},
}

func libvirtdConf(cfg Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "host_uuid = %q\n", cfg.HostUUID)
	b.WriteString("auth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\nunix_sock_rw_perms = \"0700\"\n")
	switch {
	case cfg.ListenAddr == "":
		b.WriteString("listen_tls = 0\nlisten_tcp = 0\n")
	case cfg.TLS != nil:
		// TLS only. The client's certificate is its authentication: it must
		// be signed by the CA (tls_no_verify_certificate = 0) and its DN on
		// the list; auth_tls adds no SASL on top.
		fmt.Fprintf(&b, "listen_tls = 1\nlisten_tcp = 0\ntls_port = \"%d\"\nlisten_addr = \"%s\"\n", TLSPort, cfg.ListenAddr)
		fmt.Fprintf(&b, "ca_file = \"%s\"\ncert_file = \"%s\"\nkey_file = \"%s\"\n",
			pkiInMount+caCopy, pkiInMount+certCopy, pkiInMount+keyCopy)
		b.WriteString("tls_no_verify_certificate = 0\ntls_no_sanity_certificate = 0\nauth_tls = \"none\"\n")
		dns := make([]string, len(cfg.TLS.AllowedDN))
		for i, dn := range cfg.TLS.AllowedDN {
			dns[i] = `"` + dn + `"`
		}
		fmt.Fprintf(&b, "tls_allowed_dn_list = [%s]\n", strings.Join(dns, ", "))
	default:
		fmt.Fprintf(&b, "listen_tls = 0\nlisten_tcp = 1\nlisten_addr = \"%s\"\nauth_tcp = \"none\"\n", cfg.ListenAddr)
	}
	b.WriteString("log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n")
	return b.String()
}

// migrationAddr is where incoming migrations (memory, and the NBD server
// of a block migration) are taken.
func (cfg Config) migrationAddr() string {
	if cfg.MigrationAddr != "" {
		return cfg.MigrationAddr
	}
	return cfg.ListenAddr
}

func qemuConf(cfg Config) string {
	var b strings.Builder
	b.WriteString("user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n")
	b.WriteString("security_driver = \"none\"\nstdio_handler = \"file\"\ncgroup_controllers = [ ]\n")
	if addr := cfg.migrationAddr(); addr != "" {
		fmt.Fprintf(&b, "migration_address = %q\nmigration_host = %q\n", addr, addr)
	}
	return b.String()
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// EnsureUser creates the libvirt-qemu user if it is missing: libvirtd's
// QEMU driver resolves its compiled-in default user before reading
// qemu.conf and will not load without it (libvirt-daemon-system, not
// installed, would create it). Start calls it; a caller starting several
// daemons at once (the lab) calls it first, so they do not race on useradd.
func EnsureUser(ctx context.Context) error {
	if exec.CommandContext(ctx, "getent", "passwd", "libvirt-qemu").Run() == nil {
		return nil
	}
	out, err := exec.CommandContext(ctx, "useradd", "-r", "-U", "-M", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin", "libvirt-qemu").CombinedOutput()
	if err != nil && exec.CommandContext(ctx, "getent", "passwd", "libvirt-qemu").Run() != nil {
		return fmt.Errorf("libvirtd: useradd libvirt-qemu: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// waitReady waits for the socket to answer. If driver start-up fails the
// socket appears and vanishes again, so it dials rather than stats.
func (d *Daemon) waitReady(ctx context.Context) error {
	sock := d.Socket()
	for {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			// Settle: a failing QEMU driver init closes the socket soon after.
			select {
			case <-time.After(200 * time.Millisecond):
			case <-d.done:
			}
			if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
				c.Close()
				return nil
			}
		}
		select {
		case <-d.done:
			return fmt.Errorf("libvirtd: exited during start (%v): %s", d.werr, d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("libvirtd: not ready: %w: %s", ctx.Err(), d.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Daemon) logTail() string {
	var out []byte
	for _, f := range []string{"log/libvirtd.log", "log/stdout.log"} {
		b, _ := os.ReadFile(filepath.Join(d.cfg.Dir, f))
		out = append(out, b...)
	}
	if len(out) > 2000 {
		out = out[len(out)-2000:]
	}
	return string(bytes.TrimSpace(out))
}

// Done is closed when the daemon (its tini) has exited, whether by Close
// or by itself; Err then says how it ended.
func (d *Daemon) Done() <-chan struct{} { return d.done }

// Err is how the daemon exited (nil while it runs, or after a clean exit).
func (d *Daemon) Err() error {
	select {
	case <-d.done:
		return d.werr
	default:
		return nil
	}
}

// LogTail is the end of the daemon's logs, for error messages.
func (d *Daemon) LogTail() string { return d.logTail() }

// Socket is the daemon's read-write unix socket.
func (d *Daemon) Socket() string { return filepath.Join(d.cfg.Dir, "run", "libvirt-sock") }

// URI is the libvirt URI of the daemon's unix socket (go-libvirt and
// virsh accept it).
func (d *Daemon) URI() string {
	return "qemu:///system?socket=" + url.QueryEscape(d.Socket())
}

// HostUUID is the daemon's host_uuid.
func (d *Daemon) HostUUID() string { return d.cfg.HostUUID }

// Dir is the daemon's directory.
func (d *Daemon) Dir() string { return d.cfg.Dir }

// Pid is the process ID of the daemon's tini (libvirtd is its child).
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Stop stops the daemon (SIGTERM to tini, which forwards it to libvirtd;
// SIGKILL after 10 s) and leaves its guests running, as restarting
// libvirtd on a real host does: a daemon started again on the same Dir
// reconnects to them. Idempotent.
func (d *Daemon) Stop() {
	select {
	case <-d.done:
	default:
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	}
}

// Close stops the daemon and then kills every domain still running, by
// the PID libvirt recorded in its pidfile: for tests and tools that own
// the daemon's whole life (callers should destroy their domains first).
// Idempotent.
func (d *Daemon) Close() error {
	d.Stop()
	return d.killOrphanedQEMUs()
}

// killOrphanedQEMUs kills the QEMUs named in run/qemu/*.pid, checking that
// each PID is still a QEMU started for this daemon's domain before
// signalling it.
func (d *Daemon) killOrphanedQEMUs() error {
	pidfiles, _ := filepath.Glob(filepath.Join(d.cfg.Dir, "run", "qemu", "*.pid"))
	var errs []error
	for _, pf := range pidfiles {
		b, err := os.ReadFile(pf)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(pf), ".pid")
		argv, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(argv, []byte("qemu-system")) || !bytes.Contains(argv, []byte("guest="+name)) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			errs = append(errs, fmt.Errorf("libvirtd: kill qemu %d (%s): %w", pid, name, err))
			continue
		}
		for i := 0; i < 100; i++ {
			if syscall.Kill(pid, 0) != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		_ = os.Remove(pf)
	}
	return errors.Join(errs...)
}
