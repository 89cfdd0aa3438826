// Package pgrepl manages one node of a PostgreSQL 15 primary/hot-standby
// pair, as the two controllers of an HA site run it: initdb and the
// node's configuration, start as primary or as standby, clone, promote,
// rejoin a former primary (resume, pg_rewind, or clone), synchronous
// replication on and off, and status.
//
// The server runs as a system service would: pg_ctl starts it as RunAs
// and it outlives the process that started it; every method finds it
// again through postmaster.pid, so a Node made by a restarted process
// picks up where the previous one stopped, and every method is idempotent.
// Replication connections are TLS with client certificates from the site
// CA only (docs/ha-postgres.md); the application reaches the server over a
// unix socket in a 0700 directory.
package pgrepl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultBinDir is where Debian installs PostgreSQL 15's programs.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// Errors callers can test for with errors.Is.
var (
	ErrInvalidName    = errors.New("pgrepl: invalid name")
	ErrNotInitialized = errors.New("pgrepl: data directory holds no cluster")
	ErrNotRunning     = errors.New("pgrepl: server is not running")
	ErrRunning        = errors.New("pgrepl: server is running")
	ErrIsPrimary      = errors.New("pgrepl: server runs as a primary")
	ErrIsStandby      = errors.New("pgrepl: server runs as a standby")
	// ErrStandbyData: the data directory was last a standby's (or is a fresh
	// clone, or was rewound); starting it as a primary would fork the
	// primary's history without a new timeline. Start it as a standby and
	// Promote it instead.
	ErrStandbyData = errors.New("pgrepl: data directory holds a standby's data")
	// ErrIncomplete: a process was killed during initdb, a clone or a
	// rewind; the data directory cannot be trusted (Rejoin clones it again).
	ErrIncomplete     = errors.New("pgrepl: an interrupted initdb, clone or rewind left the data directory unusable")
	ErrPeerNotPrimary = errors.New("pgrepl: peer is not a primary")
	ErrNotStreaming   = errors.New("pgrepl: standby does not stream from its primary")
)

// ReplicationTLS names the node's TLS files, issued by the site CA. The
// certificate's common name is the node's Name (peers map it to the
// replication role) and its IP SANs are the node's Listen addresses; it
// serves replication and authenticates this node when it replicates from
// its peer. The files are copied into StateDir (0600, owned by RunAs)
// before every start.
type ReplicationTLS struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// Config describes one node.
type Config struct {
	BinDir    string // default DefaultBinDir
	DataDir   string // PGDATA; created 0700, owned by RunAs
	SocketDir string // unix socket directory; created 0700, owned by RunAs
	// StateDir holds the node's own files that must not travel with PGDATA
	// (pg_basebackup and pg_rewind copy PGDATA from the peer): the copies of
	// the TLS files, the server log, and the markers of unfinished work.
	// Created 0700, owned by RunAs; default DataDir + ".petrel".
	StateDir string
	Listen   []string // IP addresses to listen on for replication, besides the socket
	Port     int      // default 5432
	Name     string   // this node's name: its application_name as a standby, its certificate's CN
	RunAs    string   // OS user of the server when we run as root; default "postgres"

	Replication ReplicationTLS
	Peers       []netip.Prefix // addresses allowed to connect for replication
	PeerNames   []string       // certificate CNs allowed to replicate (the peer's Name)

	// SyncAfterPromote makes a standby name the primary it follows as its
	// synchronous standby for after a promotion: a pair's clean handoff
	// (swact) promotes the standby while the old primary comes back as
	// its standby, and commits wait for that copy from the first one on,
	// with no reload and checkpoint on the promotion's path. A promotion
	// after the old primary was lost names none with SetSynchronous(nil)
	// before anything commits.
	SyncAfterPromote bool

	Logger *slog.Logger
}

// Peer is how to reach the other node over TLS.
type Peer struct {
	Name string // its Name (for logs)
	Host string // an address or name in its certificate's SANs
	Port int    // default 5432
}

func (p Peer) String() string { return fmt.Sprintf("%s (%s:%d)", p.Name, p.Host, p.Port) }

// StopMode is how Stop shuts the server down.
type StopMode int

const (
	// StopFast rolls back open transactions and writes a shutdown
	// checkpoint, which a primary streams to its standbys before it exits:
	// the standby can be promoted and this node can rejoin it without
	// pg_rewind.
	StopFast StopMode = iota
	// StopImmediate kills the server: a crash, recovered at the next start.
	StopImmediate
)

func (m StopMode) String() string {
	switch m {
	case StopFast:
		return "fast"
	case StopImmediate:
		return "immediate"
	}
	return "StopMode(" + strconv.Itoa(int(m)) + ")"
}

// RejoinPath tells how Rejoin made the node a standby.
type RejoinPath int

const (
	// RejoinResumed: the node's own data was a prefix of the new primary's
	// history; it started as a standby without rewind or clone (also: it
	// already was a streaming standby).
	RejoinResumed RejoinPath = iota + 1
	// RejoinRewound: its history had diverged; pg_rewind rolled it back to
	// the fork point with the new primary's blocks.
	RejoinRewound
	// RejoinCloned: its data was replaced by a fresh pg_basebackup.
	RejoinCloned
)

func (p RejoinPath) String() string {
	switch p {
	case RejoinResumed:
		return "resumed"
	case RejoinRewound:
		return "rewound"
	case RejoinCloned:
		return "cloned"
	}
	return "RejoinPath(" + strconv.Itoa(int(p)) + ")"
}

// Status is a node's replication state.
type Status struct {
	Running    bool
	InRecovery bool // standby (when stopped: the data was last a standby's)
	// Timeline: the primary's current timeline; a standby's received
	// timeline while it streams, else its last restartpoint's; when
	// stopped, the latest checkpoint's.
	Timeline uint32
	// WriteLSN and FlushLSN: a primary's pg_current_wal_lsn and
	// pg_current_wal_flush_lsn; a standby's WAL written and flushed by its
	// receiver.
	WriteLSN, FlushLSN uint64
	ReceiveLSN         uint64 // standby: pg_last_wal_receive_lsn
	ReplayLSN          uint64 // standby: pg_last_wal_replay_lsn
	SyncNames          string // synchronous_standby_names in effect
	Replicas           []Replica
	Upstream           string // standby: wal receiver's status and sender, "streaming 10.0.0.2:5432"

	// When stopped, from pg_control:
	ClusterState  string // "shut down", "shut down in recovery", "in production" (crashed), ...
	CheckpointLSN uint64
}

// Replica is a standby streaming from a primary (pg_stat_replication).
type Replica struct {
	Name      string // application_name
	State     string // "streaming", "catchup", ...
	SyncState string // "sync", "potential", "async"
	FlushLSN  uint64
	ReplayLSN uint64
}

// Node manages the PostgreSQL server of one node. Its methods serialize
// with each other (Status and DSN excepted); another process may have
// started the server.
type Node struct {
	cfg        Config
	log        *slog.Logger
	cred       *syscall.Credential // RunAs when we are root; nil otherwise
	home       string
	localUsers []string // OS users mapped to the superuser on the socket
	noSync     bool     // tests: initdb, pg_basebackup and pg_rewind skip their final fsync

	mu sync.Mutex

	// The checkpoint after a promotion runs in the background; stopping
	// the server or closing the node cancels and waits for it.
	bgMu     sync.Mutex
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	// The connection session lends, kept open between calls.
	statusMu   sync.Mutex
	statusConn *pgx.Conn
	statusPID  int // the postmaster it belongs to

	cdMu    sync.Mutex
	cdCache struct {
		ok  bool
		raw []byte // global/pg_control when cd was read
		cd  controlData
	}
}

// New checks cfg and returns a Node; it touches nothing on disk.
func New(cfg Config) (*Node, error) {
	if cfg.BinDir == "" {
		cfg.BinDir = DefaultBinDir
	}
	if cfg.Port == 0 {
		cfg.Port = 5432
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for _, p := range []*string{&cfg.BinDir, &cfg.DataDir, &cfg.SocketDir} {
		if !filepath.IsAbs(*p) {
			return nil, fmt.Errorf("pgrepl: BinDir, DataDir and SocketDir must be absolute paths (got %q)", *p)
		}
		*p = filepath.Clean(*p)
	}
	if cfg.DataDir == "/" {
		return nil, errors.New("pgrepl: DataDir must not be /")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = cfg.DataDir + ".petrel"
	}
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("pgrepl: StateDir must be absolute (got %q)", cfg.StateDir)
	}
	cfg.StateDir = filepath.Clean(cfg.StateDir)
	if len(cfg.SocketDir)+len("/.s.PGSQL.65535") > 107 {
		return nil, fmt.Errorf("pgrepl: SocketDir %q is too long for a unix socket path", cfg.SocketDir)
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("pgrepl: port %d out of range", cfg.Port)
	}
	if !nameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("pgrepl: node name %q: %w", cfg.Name, ErrInvalidName)
	}
	for _, a := range cfg.Listen {
		if _, err := netip.ParseAddr(a); err != nil {
			return nil, fmt.Errorf("pgrepl: listen address: %w", err)
		}
	}
	for _, p := range cfg.Peers {
		if !p.IsValid() {
			return nil, errors.New("pgrepl: invalid peer prefix")
		}
	}
	for _, name := range cfg.PeerNames {
		if !nameRE.MatchString(name) {
			return nil, fmt.Errorf("pgrepl: peer name %q: %w", name, ErrInvalidName)
		}
	}
	if cfg.Replication.CAFile == "" || cfg.Replication.CertFile == "" || cfg.Replication.KeyFile == "" {
		return nil, errors.New("pgrepl: Replication needs CAFile, CertFile and KeyFile")
	}
	n := &Node{cfg: cfg}
	cur, err := user.Current()
	if err != nil {
		return nil, fmt.Errorf("pgrepl: %w", err)
	}
	if os.Geteuid() == 0 {
		if n.cfg.RunAs == "" {
			n.cfg.RunAs = "postgres"
		}
		u, err := user.Lookup(n.cfg.RunAs)
		if err != nil {
			return nil, fmt.Errorf("pgrepl: RunAs: %w", err)
		}
		cred, err := credential(u)
		if err != nil {
			return nil, err
		}
		if cred.Uid == 0 {
			return nil, errors.New("pgrepl: RunAs must not be root (PostgreSQL refuses to run as root)")
		}
		n.cred, n.home = cred, u.HomeDir
		n.localUsers = []string{cur.Username}
		if u.Username != cur.Username {
			n.localUsers = append(n.localUsers, u.Username)
		}
	} else {
		if n.cfg.RunAs != "" && n.cfg.RunAs != cur.Username {
			return nil, fmt.Errorf("pgrepl: running the server as %q needs root (we are %q)", n.cfg.RunAs, cur.Username)
		}
		n.cfg.RunAs, n.home, n.localUsers = cur.Username, cur.HomeDir, []string{cur.Username}
	}
	n.log = cfg.Logger.With("component", "pgrepl", "node", cfg.Name)
	return n, nil
}

func credential(u *user.User) (*syscall.Credential, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("pgrepl: user %s has no numeric uid/gid", u.Username)
	}
	c := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("pgrepl: groups of %s: %w", u.Username, err)
	}
	for _, g := range gids {
		if v, err := strconv.ParseUint(g, 10, 32); err == nil {
			c.Groups = append(c.Groups, uint32(v))
		}
	}
	return c, nil
}

func (n *Node) statePath(name string) string { return filepath.Join(n.cfg.StateDir, name) }
func (n *Node) dataPath(name string) string  { return filepath.Join(n.cfg.DataDir, name) }

// Initialized reports whether PGDATA holds a cluster (and no unfinished
// initdb or clone).
func (n *Node) Initialized() bool {
	return exists(n.dataPath("PG_VERSION")) && exists(n.dataPath("global/pg_control")) &&
		!exists(n.statePath(markInitdb)) && !exists(n.statePath(markClone))
}

// usable fails unless PGDATA holds a cluster no interrupted work has left
// in doubt.
func (n *Node) usable() error {
	for _, m := range []string{markInitdb, markClone, markRewind} {
		if exists(n.statePath(m)) {
			return fmt.Errorf("pgrepl: %s present: %w", m, ErrIncomplete)
		}
	}
	if !n.Initialized() {
		return ErrNotInitialized
	}
	return nil
}

// DSN is the application's connection string: the superuser over the unix
// socket (peer authentication), no TLS.
func (n *Node) DSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable",
		dsnValue(n.cfg.SocketDir), n.cfg.Port, superuser, dsnValue(db))
}

func dsnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n'\\") {
		return v
	}
	return "'" + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `'`, `\'`) + "'"
}

func (n *Node) connect(ctx context.Context) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(n.DSN("postgres"))
	if err != nil {
		return nil, fmt.Errorf("pgrepl: %w", err)
	}
	cc.RuntimeParams["application_name"] = "petrel-pgrepl"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("pgrepl: connect to local server: %w", err)
	}
	return conn, nil
}

// inRecovery asks the running server whether it is a standby.
func (n *Node) inRecovery(ctx context.Context) (bool, error) {
	conn, release, err := n.session(ctx)
	if err != nil {
		return false, err
	}
	defer release(nil)
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return false, fmt.Errorf("pgrepl: pg_is_in_recovery: %w", err)
	}
	return rec, nil
}

// timeoutSecs is what is left of ctx in whole seconds (at least 1), or def
// when ctx has no deadline.
func timeoutSecs(ctx context.Context, def int) string {
	if d, ok := ctx.Deadline(); ok {
		return strconv.Itoa(max(1, int(math.Ceil(time.Until(d).Seconds()))))
	}
	return strconv.Itoa(def)
}

// pause waits d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Bootstrap makes this node's data directory a new cluster configured as a
// primary: initdb (unless PGDATA already holds one), the node's
// configuration, and the replication role (REPLICATION LOGIN, no password;
// it may also execute the file functions pg_rewind uses). It does not start
// the server. On a running primary it only makes sure the role exists; on
// a standby, or on a standby's data, it refuses.
func (n *Node) Bootstrap(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.ensureDirs(); err != nil {
		return err
	}
	if _, ok := n.running(); ok {
		conn, release, err := n.session(ctx)
		if err != nil {
			return err
		}
		defer release(nil)
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			return fmt.Errorf("pgrepl: %w", err)
		}
		if rec {
			return ErrIsStandby
		}
		return n.ensureRole(ctx, conn)
	}
	if exists(n.statePath(markClone)) || exists(n.statePath(markRewind)) {
		return ErrIncomplete
	}
	if exists(n.statePath(markInitdb)) || !n.Initialized() {
		if err := n.initdb(ctx); err != nil {
			return err
		}
	}
	cd, err := n.controlData(ctx)
	if err != nil {
		return err
	}
	if exists(n.dataPath(backupLabel)) || cd.wasStandby() {
		return ErrStandbyData
	}
	if _, err := n.writeConfig(rolePrimary, "", ""); err != nil {
		return err
	}
	for _, f := range []string{standbySig, recoverySig} {
		if err := removeFile(n.dataPath(f)); err != nil {
			return err
		}
	}
	if !exists(n.statePath(markBootstrapped)) {
		if err := n.singleUser(ctx, roleSQL); err != nil {
			return err
		}
		if err := n.writeFile(n.statePath(markBootstrapped), nil, 0o600); err != nil {
			return err
		}
	}
	n.log.Info("bootstrapped", "data", n.cfg.DataDir, "timeline", cd.timeline)
	return nil
}

// rewindFuncs are the functions pg_rewind calls on its source.
var rewindFuncs = []string{
	"pg_catalog.pg_ls_dir(text, boolean, boolean)",
	"pg_catalog.pg_stat_file(text, boolean)",
	"pg_catalog.pg_read_binary_file(text)",
	"pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
}

// roleSQL creates the replication role; each statement is on one line (the
// single-user server ends a statement at a newline) and may run again.
var roleSQL = func() []string {
	q := []string{
		`DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + replicationRole + `') THEN CREATE ROLE ` + replicationRole + `; END IF; END$$`,
		`ALTER ROLE ` + replicationRole + ` WITH REPLICATION LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS PASSWORD NULL`,
	}
	for _, f := range rewindFuncs {
		q = append(q, `GRANT EXECUTE ON FUNCTION `+f+` TO `+replicationRole)
	}
	// A rejoining peer checkpoints its source before pg_rewind (see rewind).
	q = append(q, `GRANT pg_checkpoint TO `+replicationRole)
	return q
}()

// ensureRole creates the replication role on a running primary if it is
// missing or lacks a privilege. It writes only then: a write waits for the
// synchronous standby, which may be down.
func (n *Node) ensureRole(ctx context.Context, conn *pgx.Conn) error {
	var ready bool
	err := conn.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = $1 AND rolreplication AND rolcanlogin AND NOT rolsuper)
		THEN (SELECT bool_and(has_function_privilege($1, f, 'EXECUTE')) FROM unnest($2::text[]) f)
			AND pg_has_role($1, 'pg_checkpoint', 'MEMBER') ELSE false END`,
		replicationRole, rewindFuncs).Scan(&ready)
	if err != nil {
		return fmt.Errorf("pgrepl: replication role: %w", err)
	}
	if ready {
		return nil
	}
	for _, q := range roleSQL {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("pgrepl: replication role: %w", err)
		}
	}
	n.log.Info("replication role created")
	return nil
}

// walSegmentMB is the WAL segment size of new clusters.
const walSegmentMB = 1

func (n *Node) initdb(ctx context.Context) error {
	if err := n.writeFile(n.statePath(markInitdb), nil, 0o600); err != nil {
		return err
	}
	if err := n.wipeData(); err != nil {
		return err
	}
	if err := removeFile(n.statePath(markBootstrapped)); err != nil {
		return err
	}
	// 1 MB WAL segments: a promotion copies the current segment to the
	// new timeline and syncs it, and a site's database writes little (a
	// 16 MB copy costs a takeover about a tenth of a second).
	args := []string{"-D", n.cfg.DataDir, "-U", superuser, "-E", "UTF8", "--locale=C.UTF-8",
		"--data-checksums", "--auth-local=peer", "--auth-host=reject", "--wal-segsize=" + strconv.Itoa(walSegmentMB)}
	if n.noSync {
		args = append(args, "--no-sync")
	}
	if _, err := n.run(ctx, "initdb", nil, args...); err != nil {
		return err
	}
	return removeFile(n.statePath(markInitdb))
}

// singleUser runs statements in a single-user server (no listener, nothing
// reaches it but us).
func (n *Node) singleUser(ctx context.Context, stmts []string) error {
	in := strings.NewReader(strings.Join(stmts, "\n") + "\n")
	out, err := n.run(ctx, "postgres", in, "--single", "-D", n.cfg.DataDir, "postgres")
	if err != nil {
		return err
	}
	// The single-user server reports a failed statement and carries on.
	if s := string(out); strings.Contains(s, "ERROR:") || strings.Contains(s, "FATAL:") {
		return fmt.Errorf("pgrepl: single-user server: %s", lastLines(s, 6))
	}
	return nil
}

// installTLS copies the node's TLS files into StateDir, owned by RunAs,
// 0600 (the server refuses a group-readable key), after checking the
// certificate matches the key and names this node.
func (n *Node) installTLS() (changed bool, err error) {
	r := n.cfg.Replication
	caPEM, err := os.ReadFile(r.CAFile)
	if err != nil {
		return false, fmt.Errorf("pgrepl: CA: %w", err)
	}
	certPEM, err := os.ReadFile(r.CertFile)
	if err != nil {
		return false, fmt.Errorf("pgrepl: certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.KeyFile)
	if err != nil {
		return false, fmt.Errorf("pgrepl: key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return false, fmt.Errorf("pgrepl: replication certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return false, fmt.Errorf("pgrepl: replication certificate: %w", err)
	}
	if leaf.Subject.CommonName != n.cfg.Name {
		return false, fmt.Errorf("pgrepl: replication certificate is for %q, not this node (%q)", leaf.Subject.CommonName, n.cfg.Name)
	}
	for _, a := range n.cfg.Listen {
		if err := leaf.VerifyHostname(a); err != nil {
			n.log.Warn("replication certificate does not name a listen address; peers verifying it will refuse", "addr", a)
		}
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{caFile, caPEM}, {certFile, certPEM}, {keyFile, keyPEM}} {
		c, err := n.writeIfChanged(n.statePath(f.name), f.data)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	return changed, nil
}

// writeIfChanged writes a 0600 file owned by RunAs unless it already holds
// data with that mode.
func (n *Node) writeIfChanged(path string, data []byte) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && string(old) == string(data) {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm() == 0o600 {
			return false, nil
		}
	}
	return true, n.writeFile(path, data, 0o600)
}

// writeConfig writes the node's configuration for a start as r:
// petrel.conf (included from postgresql.conf), pg_hba.conf,
// pg_ident.conf, the TLS copies, and postgresql.auto.conf without the
// settings petrel.conf owns. It reports whether anything changed.
func (n *Node) writeConfig(r role, primaryConnInfo, syncAfterPromote string) (bool, error) {
	changed, err := n.installTLS()
	if err != nil {
		return false, err
	}
	s := n.settings(r, primaryConnInfo)
	if r == roleStandby && syncAfterPromote != "" {
		val, err := syncNamesValue([]string{syncAfterPromote})
		if err != nil {
			return false, err
		}
		s = append(s, setting{"synchronous_standby_names", quoteConf(val)})
	}
	files := []struct{ name, content string }{
		{confFile, renderConf(s)},
		{hbaFile, n.renderHBA()},
		{identFile, n.renderIdent()},
	}
	for _, f := range files {
		c, err := n.writeIfChanged(n.dataPath(f.name), []byte(f.content))
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	main, err := os.ReadFile(n.dataPath("postgresql.conf"))
	if err != nil {
		return false, fmt.Errorf("pgrepl: %w", err)
	}
	include := "include '" + confFile + "'"
	if !slices.Contains(strings.Split(string(main), "\n"), include) {
		s := string(main)
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		s += "\n# Petrel's settings for this node (internal/pgrepl).\n" + include + "\n"
		if err := n.writeFile(n.dataPath("postgresql.conf"), []byte(s), 0o600); err != nil {
			return false, err
		}
		changed = true
	}
	auto, err := os.ReadFile(n.dataPath(autoConf))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("pgrepl: %w", err)
	}
	if filtered, c := filterAutoConf(string(auto), n.autoConfDrops(r)); c {
		if err := n.writeFile(n.dataPath(autoConf), []byte(filtered), 0o600); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

// startServer starts the server and waits until it accepts connections (a
// standby: until it is consistent, hot standby). pg_ctl's own wait looks
// every 100 ms; this one every few, so that a takeover or a swact's
// rejoin does not sit out most of a tenth of a second.
func (n *Node) startServer(ctx context.Context) error {
	if err := n.spawn(); err != nil {
		return err
	}
	secs, _ := strconv.Atoi(timeoutSecs(ctx, 30))
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	// A postmaster writes its pid file before anything that takes time; one
	// that never does (a bad setting, a port in use) has exited.
	absent := time.Now().Add(startGrace)
	for {
		pm, ok := n.running()
		switch {
		case ok && (pm.status == "ready" || pm.status == "standby"):
			return nil
		case ok:
			absent = time.Now().Add(startGrace)
		case time.Now().After(absent):
			return fmt.Errorf("pgrepl: start: the server exited (server log: %s)", n.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgrepl: start: not accepting connections within %d s (server log: %s)", secs, n.logTail())
		}
		if err := pause(ctx, pollInterval); err != nil {
			return err
		}
	}
}

// pollInterval is how often a start, a stop or a promotion is looked at.
const pollInterval = 5 * time.Millisecond

// startGrace is how long a start may go without a live postmaster before
// it counts as failed.
const startGrace = 3 * time.Second

// syncAfter is the synchronous standby a standby of p names for after its
// promotion (Config.SyncAfterPromote): p itself.
func (n *Node) syncAfter(p Peer) string {
	if !n.cfg.SyncAfterPromote {
		return ""
	}
	return p.Name
}

// StartPrimary starts the server as a primary and waits until it accepts
// connections. A running primary is left alone; a running standby is
// refused (Promote it). A data directory that was last a standby's, or a
// fresh clone, is refused with ErrStandbyData: only Promote gives it a new
// timeline of its own.
func (n *Node) StartPrimary(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.running(); ok {
		rec, err := n.inRecovery(ctx)
		if err != nil {
			return err
		}
		if rec {
			return ErrIsStandby
		}
		return nil
	}
	if err := n.usable(); err != nil {
		return err
	}
	if err := n.ensureDirs(); err != nil {
		return err
	}
	cd, err := n.controlData(ctx)
	if err != nil {
		return err
	}
	if exists(n.dataPath(backupLabel)) || cd.wasStandby() {
		return fmt.Errorf("pgrepl: cluster state %q: %w", cd.state, ErrStandbyData)
	}
	if !cd.wasPrimary() {
		return fmt.Errorf("pgrepl: cluster state %q: refusing to start it as a primary", cd.state)
	}
	if _, err := n.writeConfig(rolePrimary, "", ""); err != nil {
		return err
	}
	for _, f := range []string{standbySig, recoverySig} {
		if err := removeFile(n.dataPath(f)); err != nil {
			return err
		}
	}
	if err := n.startServer(ctx); err != nil {
		return err
	}
	conn, release, err := n.session(ctx)
	if err != nil {
		return err
	}
	defer release(nil)
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	if rec {
		return fmt.Errorf("pgrepl: started as a primary but the server is in recovery: %w", ErrIsStandby)
	}
	// A Bootstrap cut short after initdb left no role.
	if err := n.ensureRole(ctx, conn); err != nil {
		return err
	}
	n.log.Info("started as primary", "timeline", cd.timeline, "state_before", cd.state)
	return nil
}

func validatePeer(p *Peer) error {
	if p.Port == 0 {
		p.Port = 5432
	}
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("pgrepl: peer name %q: %w", p.Name, ErrInvalidName)
	}
	if !hostRE.MatchString(p.Host) || p.Port < 1 || p.Port > 65535 {
		return fmt.Errorf("pgrepl: peer address %q port %d is not valid", p.Host, p.Port)
	}
	return nil
}

// StartStandby starts the server as a hot standby streaming from primary
// (application_name = Name, TLS verify-full with this node's certificate,
// recovery_target_timeline = latest) and waits until it accepts read-only
// connections. A running standby is pointed at primary (a reload); a
// running primary is refused with ErrIsPrimary. It does not check that
// this node's history is a prefix of the primary's: Rejoin does.
func (n *Node) StartStandby(ctx context.Context, primary Peer) error {
	if err := validatePeer(&primary); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.startStandby(ctx, primary)
}

func (n *Node) startStandby(ctx context.Context, p Peer) error {
	ci := n.peerConnInfo(p)
	if _, ok := n.running(); ok {
		conn, release, err := n.session(ctx)
		if err != nil {
			return err
		}
		defer release(nil)
		var rec bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			return fmt.Errorf("pgrepl: %w", err)
		}
		if !rec {
			return fmt.Errorf("pgrepl: refusing to make a running primary a standby (stop it, then Rejoin): %w", ErrIsPrimary)
		}
		changed, err := n.writeConfig(roleStandby, ci, n.syncAfter(p))
		if err != nil {
			return err
		}
		if changed {
			if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
				return fmt.Errorf("pgrepl: reload: %w", err)
			}
			n.log.Info("standby reconfigured", "primary", p.String())
		}
		return nil
	}
	if err := n.usable(); err != nil {
		return err
	}
	if err := n.ensureDirs(); err != nil {
		return err
	}
	if _, err := n.writeConfig(roleStandby, ci, n.syncAfter(p)); err != nil {
		return err
	}
	if err := n.writeFile(n.dataPath(standbySig), nil, 0o600); err != nil {
		return err
	}
	if err := n.startServer(ctx); err != nil {
		return err
	}
	rec, err := n.inRecovery(ctx)
	if err != nil {
		return err
	}
	if !rec {
		return fmt.Errorf("pgrepl: started as a standby but the server is not in recovery: %w", ErrIsPrimary)
	}
	n.log.Info("started as standby", "primary", p.String())
	return nil
}

// probePrimary opens a replication connection to p (which proves it
// reachable, its certificate valid, and this node authorized), checks it
// is not a standby, and returns its timeline and WAL flush position
// (IDENTIFY_SYSTEM).
func (n *Node) probePrimary(ctx context.Context, p Peer) (tli uint32, flush uint64, err error) {
	ci := conninfo("host", p.Host, "port", strconv.Itoa(p.Port), "user", replicationRole,
		"sslmode", "verify-full", "sslrootcert", n.statePath(caFile),
		"sslcert", n.statePath(certFile), "sslkey", n.statePath(keyFile),
		"connect_timeout", "5", "application_name", "petrel-pgrepl-probe", "replication", "true")
	cc, err := pgconn.ParseConfig(ci)
	if err != nil {
		return 0, 0, fmt.Errorf("pgrepl: %w", err)
	}
	conn, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		return 0, 0, fmt.Errorf("pgrepl: primary %s: %w", p, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if conn.ParameterStatus("in_hot_standby") == "on" {
		return 0, 0, fmt.Errorf("pgrepl: %s: %w", p, ErrPeerNotPrimary)
	}
	res, err := conn.Exec(ctx, "IDENTIFY_SYSTEM").ReadAll()
	if err != nil {
		return 0, 0, fmt.Errorf("pgrepl: primary %s: IDENTIFY_SYSTEM: %w", p, err)
	}
	if len(res) != 1 || len(res[0].Rows) != 1 || len(res[0].Rows[0]) < 3 {
		return 0, 0, fmt.Errorf("pgrepl: primary %s: unexpected IDENTIFY_SYSTEM answer", p)
	}
	row := res[0].Rows[0]
	t, err := strconv.ParseUint(string(row[1]), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("pgrepl: primary %s: timeline %q", p, row[1])
	}
	flush, err = ParseLSN(string(row[2]))
	if err != nil {
		return 0, 0, err
	}
	return uint32(t), flush, nil
}

// walReceiver is a standby's pg_stat_wal_receiver.
type walReceiver struct {
	status           string // "" when no receiver runs
	tli              uint32
	written, flushed uint64
	sender           string
}

func (n *Node) walReceiver(ctx context.Context, conn *pgx.Conn) (walReceiver, error) {
	var w walReceiver
	var tli int64
	var written, flushed, host string
	var port int32
	err := conn.QueryRow(ctx, `SELECT status, coalesce(received_tli, 0), coalesce(written_lsn::text, ''),
		coalesce(flushed_lsn::text, ''), coalesce(sender_host, ''), coalesce(sender_port, 0)
		FROM pg_stat_wal_receiver`).Scan(&w.status, &tli, &written, &flushed, &host, &port)
	if errors.Is(err, pgx.ErrNoRows) {
		return w, nil
	}
	if err != nil {
		return w, fmt.Errorf("pgrepl: pg_stat_wal_receiver: %w", err)
	}
	w.tli = uint32(tli)
	if w.written, err = parseOptLSN(written); err != nil {
		return w, err
	}
	if w.flushed, err = parseOptLSN(flushed); err != nil {
		return w, err
	}
	if host != "" {
		w.sender = fmt.Sprintf("%s:%d", host, port)
	}
	return w, nil
}

// stallTimeout is how long a standby may go without streaming anything new
// before waitStreaming gives up on it.
const stallTimeout = 5 * time.Second

// waitStreaming waits until the running standby streams from p on p's
// timeline and has flushed what p had flushed when the wait began. It gives
// up with ErrNotStreaming once the standby has made no progress for
// stallTimeout (a diverged history, WAL the primary no longer keeps, ...).
func (n *Node) waitStreaming(ctx context.Context, p Peer) error {
	tli, target, err := n.probePrimary(ctx, p)
	if err != nil {
		return err
	}
	conn, err := n.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var best uint64
	lastProgress := time.Now()
	for {
		w, err := n.walReceiver(ctx, conn)
		if err != nil {
			return err
		}
		// The receiver's flush position starts at the replay position: WAL
		// it receives again below that is written but never "flushed", so
		// the furthest of the two is how far it has streamed.
		got := max(w.written, w.flushed)
		if w.status == "streaming" && w.tli == tli && got >= target {
			return nil
		}
		if got > best {
			best, lastProgress = got, time.Now()
		}
		if time.Since(lastProgress) > stallTimeout {
			return fmt.Errorf("pgrepl: standby of %s: receiver %q on timeline %d at %s, primary on timeline %d at %s (server log: %s): %w",
				p, w.status, w.tli, FormatLSN(got), tli, FormatLSN(target), n.logTail(), ErrNotStreaming)
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// CloneFrom replaces this node's data with a fresh pg_basebackup of
// primary (WAL streamed alongside, so the copy is consistent by itself).
// The server must be stopped. The primary is probed before anything is
// removed; a clone cut short leaves a marker, and the data counts as
// unusable until a clone completes. It does not start the server.
func (n *Node) CloneFrom(ctx context.Context, primary Peer) error {
	if err := validatePeer(&primary); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clone(ctx, primary)
}

func (n *Node) clone(ctx context.Context, p Peer) error {
	if _, ok := n.running(); ok {
		return fmt.Errorf("pgrepl: clone: %w", ErrRunning)
	}
	if err := n.ensureDirs(); err != nil {
		return err
	}
	if _, err := n.installTLS(); err != nil {
		return err
	}
	if _, _, err := n.probePrimary(ctx, p); err != nil {
		return err
	}
	start := time.Now()
	if err := n.writeFile(n.statePath(markClone), nil, 0o600); err != nil {
		return err
	}
	if err := n.wipeData(); err != nil {
		return err
	}
	// Its own application_name (the last one in a conninfo wins): the
	// clone's WAL stream must not pass for this node's standby in the
	// primary's pg_stat_replication, nor be taken as its synchronous one.
	args := []string{"-D", n.cfg.DataDir, "-X", "stream", "-c", "fast", "-w", "-d",
		n.peerConnInfo(p, "application_name", n.cfg.Name+"-clone")}
	if n.noSync {
		args = append(args, "--no-sync")
	}
	if _, err := n.run(ctx, "pg_basebackup", nil, args...); err != nil {
		return err
	}
	for _, m := range []string{markRewind, markInitdb, markClone} {
		if err := removeFile(n.statePath(m)); err != nil {
			return err
		}
	}
	n.log.Info("cloned", "primary", p.String(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// rewind runs pg_rewind against p; it reports whether it changed anything
// ("no rewind required" when this node's history is a prefix of p's). A
// target that was not shut down cleanly is first recovered by pg_rewind in
// a single-user server (which cannot run in standby mode: the signal files
// go first; StartStandby writes them again).
func (n *Node) rewind(ctx context.Context, p Peer) (bool, error) {
	primaryTLI, _, err := n.probePrimary(ctx, p)
	if err != nil {
		return false, err
	}
	for _, f := range []string{standbySig, recoverySig} {
		if err := removeFile(n.dataPath(f)); err != nil {
			return false, err
		}
	}
	if _, err := n.installTLS(); err != nil {
		return false, err
	}
	if err := n.writeFile(n.statePath(markRewind), nil, 0o600); err != nil {
		return false, err
	}
	// PostgreSQL 15 writes a promoted server's new timeline into pg_control
	// at its first checkpoint, which Promote leaves for a few seconds;
	// pg_rewind reads the source's timeline from there.
	if err := n.checkpointPeer(ctx, p); err != nil {
		n.log.Warn("checkpoint on the primary before pg_rewind", "err", err)
	}
	args := []string{"-D", n.cfg.DataDir, "--source-server", n.peerConnInfo(p, "dbname", "postgres")}
	if n.noSync {
		args = append(args, "--no-sync")
	}
	start := time.Now()
	out, err := n.run(ctx, "pg_rewind", nil, args...)
	if err != nil {
		return false, err
	}
	if err := removeFile(n.statePath(markRewind)); err != nil {
		return false, err
	}
	rewound := !strings.Contains(string(out), "no rewind required")
	if !rewound && strings.Contains(string(out), "on the same timeline") {
		// pg_rewind compared the timelines in the two pg_control files; the
		// primary's may lag behind a promotion (see Promote). Trust the
		// verdict only if the primary's actual timeline is ours.
		cd, err := n.controlData(ctx)
		if err != nil {
			return false, err
		}
		if primaryTLI != cd.timeline {
			return false, fmt.Errorf("pgrepl: pg_rewind saw one timeline, but the primary is on %d and this node on %d (no checkpoint on the primary since its promotion?)", primaryTLI, cd.timeline)
		}
	}
	n.log.Info("pg_rewind", "primary", p.String(), "rewound", rewound,
		"took", time.Since(start).Round(time.Millisecond), "output", rewindLines(string(out)))
	return rewound, nil
}

// checkpointPeer runs CHECKPOINT on p as the replication role (a member
// of pg_checkpoint), over TLS.
func (n *Node) checkpointPeer(ctx context.Context, p Peer) error {
	cc, err := pgconn.ParseConfig(n.peerConnInfo(p, "dbname", "postgres"))
	if err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	conn, err := pgconn.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("pgrepl: primary %s: %w", p, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CHECKPOINT").ReadAll(); err != nil {
		return fmt.Errorf("pgrepl: primary %s: CHECKPOINT: %w", p, err)
	}
	return nil
}

// rewindLines keeps pg_rewind's own messages from its output (which also
// holds the log of the single-user server it may run).
func rewindLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "pg_rewind: ") {
			keep = append(keep, strings.TrimPrefix(l, "pg_rewind: "))
		}
	}
	return strings.Join(keep, " | ")
}

// Rejoin makes this node, a former primary (or any node whose server is
// stopped or a standby), a streaming standby of primary, and says how:
// its own data when that is a prefix of the primary's history (resumed),
// else rewound with pg_rewind --source-server, else a fresh clone. The
// node never serves writes meanwhile: every start is as a standby. It
// refuses a running primary (ErrIsPrimary: stop it first) and touches
// nothing unless primary answers as a primary. It returns once the standby
// streams on the primary's timeline and has caught up with the primary's
// position at the time of the call.
func (n *Node) Rejoin(ctx context.Context, primary Peer) (RejoinPath, error) {
	if err := validatePeer(&primary); err != nil {
		return 0, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	p := primary
	if _, ok := n.running(); ok {
		rec, err := n.inRecovery(ctx)
		if err != nil {
			return 0, err
		}
		if !rec {
			return 0, fmt.Errorf("pgrepl: rejoin: %w", ErrIsPrimary)
		}
		err = n.startStandby(ctx, p)
		if err == nil {
			err = n.waitStreaming(ctx, p)
		}
		if err == nil {
			return RejoinResumed, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
		n.log.Warn("running standby does not stream from the primary; stopping it", "primary", p.String(), "err", err)
		if err := n.stop(ctx, StopFast); err != nil {
			return 0, err
		}
	}
	if _, _, err := n.probePrimary(ctx, p); err != nil {
		return 0, err
	}
	if err := n.ensureDirs(); err != nil {
		return 0, err
	}
	path, ok := n.resumeOrRewind(ctx, p)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if ok {
		return path, nil
	}
	if err := n.clone(ctx, p); err != nil {
		return 0, err
	}
	if err := n.startStandby(ctx, p); err != nil {
		return RejoinCloned, err
	}
	if err := n.waitStreaming(ctx, p); err != nil {
		return RejoinCloned, err
	}
	n.log.Info("rejoined", "primary", p.String(), "path", RejoinCloned)
	return RejoinCloned, nil
}

// resumeOrRewind tries to make the stopped node a streaming standby of p
// without a clone. On failure the server is stopped again.
func (n *Node) resumeOrRewind(ctx context.Context, p Peer) (RejoinPath, bool) {
	if err := n.usable(); err != nil {
		n.log.Info("data directory unusable; cloning", "reason", err)
		return 0, false
	}
	cd, err := n.controlData(ctx)
	if err != nil {
		n.log.Warn("pg_controldata failed; cloning", "err", err)
		return 0, false
	}
	path := RejoinResumed
	standbyData := exists(n.dataPath(backupLabel)) || cd.wasStandby()
	switch {
	case standbyData:
		// A standby's WAL is a prefix of what its primary sent: start it.
	case cd.wasPrimary():
		rewound, err := n.rewind(ctx, p)
		if err != nil {
			n.log.Warn("pg_rewind failed; cloning", "err", err)
			return 0, false
		}
		if rewound {
			path = RejoinRewound
		}
	default:
		n.log.Warn("unexpected cluster state; cloning", "state", cd.state)
		return 0, false
	}
	tryStart := func() bool {
		err := n.startStandby(ctx, p)
		if err == nil {
			err = n.waitStreaming(ctx, p)
		}
		if err == nil {
			return true
		}
		n.log.Warn("standby start failed", "path", path, "err", err)
		if err := n.stop(context.WithoutCancel(ctx), StopFast); err != nil {
			n.log.Warn("stop after failed start", "err", err)
		}
		return false
	}
	if tryStart() {
		n.log.Info("rejoined", "primary", p.String(), "path", path, "state_before", cd.state)
		return path, true
	}
	if path == RejoinRewound || ctx.Err() != nil {
		return 0, false
	}
	// Its own data did not stream (a history that forked after all, or WAL
	// the primary no longer has): rewind, now that it was shut down cleanly.
	rewound, err := n.rewind(ctx, p)
	if err != nil || !rewound {
		return 0, false
	}
	path = RejoinRewound
	if tryStart() {
		n.log.Info("rejoined", "primary", p.String(), "path", path, "state_before", cd.state)
		return path, true
	}
	return 0, false
}

// Promote turns the running standby into a primary on a new timeline and
// returns once it accepts writes. A running primary is left alone. The new
// primary is asynchronous (its standby configuration named no synchronous
// standby) until SetSynchronous names one.
func (n *Node) Promote(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.running(); !ok {
		return fmt.Errorf("pgrepl: promote: %w", ErrNotRunning)
	}
	conn, release, err := n.session(ctx)
	if err != nil {
		return err
	}
	defer release(nil)
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	if !rec {
		return nil
	}
	start := time.Now()
	secs, _ := strconv.Atoi(timeoutSecs(ctx, 60))
	deadline := start.Add(time.Duration(secs) * time.Second)
	// pg_promote's own wait looks every 100 ms; this one every few.
	var signalled bool
	if err := conn.QueryRow(ctx, "SELECT pg_promote(false)").Scan(&signalled); err != nil {
		return fmt.Errorf("pgrepl: pg_promote: %w", err)
	}
	if !signalled {
		return errors.New("pgrepl: pg_promote could not signal the startup process")
	}
	for {
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
			return fmt.Errorf("pgrepl: %w", err)
		}
		if !rec {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgrepl: promotion did not finish within %d s (server log: %s)", secs, n.logTail())
		}
		if err := pause(ctx, pollInterval); err != nil {
			return err
		}
	}
	writable := time.Since(start)
	// PostgreSQL 15 writes the new timeline into pg_control only at the
	// first checkpoint after promotion (a spread one it requests itself);
	// pg_rewind reads the source's timeline from there, and would take a
	// diverged former primary for one on the same timeline. Checkpoint
	// soon, in the background: not during the takeover, whose commits
	// would queue behind its writes, and a peer's Rejoin checks this
	// node's real timeline before trusting pg_rewind's verdict anyway.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	n.bgMu.Lock()
	if n.bgCancel != nil {
		n.bgCancel()
	}
	n.bgCancel = cancel
	n.bgWG.Add(1)
	n.bgMu.Unlock()
	go func() {
		defer n.bgWG.Done()
		defer cancel()
		if pause(cctx, checkpointDelay) != nil {
			return
		}
		c, err := n.connect(cctx)
		if err != nil {
			if cctx.Err() == nil {
				n.log.Warn("checkpoint after promotion", "err", err)
			}
			return
		}
		defer c.Close(context.WithoutCancel(cctx))
		if _, err := c.Exec(cctx, "CHECKPOINT"); err != nil {
			if cctx.Err() == nil {
				n.log.Warn("checkpoint after promotion", "err", err)
			}
			return
		}
		n.log.Info("checkpoint after promotion done", "took", time.Since(start).Round(time.Millisecond))
	}()
	n.log.Info("promoted", "writable_after", writable.Round(time.Millisecond))
	return nil
}

// checkpointDelay is how long after a promotion its checkpoint waits.
const checkpointDelay = 3 * time.Second

// Follow starts this node as a standby of primary after a clean handoff
// (this node was the primary, stopped cleanly, and primary replayed its
// last record before promoting): no rewind is needed. Anything else —
// it does not stream within the deadline — falls back to Rejoin.
func (n *Node) Follow(ctx context.Context, primary Peer) (RejoinPath, error) {
	if err := validatePeer(&primary); err != nil {
		return 0, err
	}
	// The new primary is promoting while this node stopped: wait (a few
	// seconds at most) until it answers as a primary, so that the start
	// streams at once instead of falling back to a rewind.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	for {
		_, _, err := n.probePrimary(wctx, primary)
		if err == nil || wctx.Err() != nil {
			break
		}
		if pause(wctx, 50*time.Millisecond) != nil {
			break
		}
	}
	cancel()
	n.mu.Lock()
	err := n.startStandby(ctx, primary)
	if err == nil {
		err = n.waitStreaming(ctx, primary)
	}
	if err == nil {
		n.mu.Unlock()
		n.log.Info("followed the new primary after a clean handoff", "primary", primary.String())
		return RejoinResumed, nil
	}
	n.log.Warn("follow after a handoff failed; rejoining", "err", err)
	if err := n.stop(context.WithoutCancel(ctx), StopFast); err != nil {
		n.log.Warn("stop after failed follow", "err", err)
	}
	n.mu.Unlock()
	return n.Rejoin(ctx, primary)
}

// Stop stops the server (a stopped one is left alone).
func (n *Node) Stop(ctx context.Context, mode StopMode) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stop(ctx, mode)
}

// stopBackground cancels the background checkpoint, if any, and waits
// for it.
func (n *Node) stopBackground() {
	n.bgMu.Lock()
	if n.bgCancel != nil {
		n.bgCancel()
		n.bgCancel = nil
	}
	n.bgMu.Unlock()
	n.bgWG.Wait()
}

func (n *Node) stop(ctx context.Context, mode StopMode) error {
	n.stopBackground()
	sig := syscall.SIGINT // fast: roll back sessions, shutdown checkpoint
	switch mode {
	case StopFast:
	case StopImmediate:
		sig = syscall.SIGQUIT // no checkpoint: crash recovery at the next start
	default:
		return fmt.Errorf("pgrepl: unknown %v", mode)
	}
	pm, ok := n.running()
	if !ok {
		return nil
	}
	// What pg_ctl stop does, looked at every few milliseconds instead of
	// every 100: a swact waits for this stop.
	start := time.Now()
	if err := syscall.Kill(pm.pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("pgrepl: stop: %w", err)
	}
	secs, _ := strconv.Atoi(timeoutSecs(ctx, 60))
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	for {
		if _, ok := n.running(); !ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgrepl: stop: the server did not stop within %d s (server log: %s)", secs, n.logTail())
		}
		if err := pause(ctx, pollInterval); err != nil {
			return err
		}
	}
	n.log.Info("stopped", "mode", mode, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// SetSynchronous names the standbys whose flush a commit waits for (the
// first connected one of the list; none: asynchronous) with ALTER SYSTEM
// and a reload, and returns once the setting is in effect: turned on, the
// checkpointer (which publishes it to committing backends) has loaded it;
// turned off, no commit waits for a standby any more. Primary only.
func (n *Node) SetSynchronous(ctx context.Context, standbys []string) error {
	val, err := syncNamesValue(standbys)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.running(); !ok {
		return fmt.Errorf("pgrepl: set synchronous: %w", ErrNotRunning)
	}
	conn, release, err := n.session(ctx)
	if err != nil {
		return err
	}
	defer release(nil)
	var rec bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	if rec {
		return fmt.Errorf("pgrepl: set synchronous: %w", ErrIsStandby)
	}
	// A value already in effect (a standby named its primary for after its
	// promotion, Config.SyncAfterPromote) is in the checkpointer's hands
	// since the server started or was last reloaded: it is written down
	// for the next start, and needs no checkpoint.
	var was string
	if err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&was); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	// ALTER SYSTEM takes no parameters; val is built from validated names.
	if _, err := conn.Exec(ctx, "ALTER SYSTEM SET synchronous_standby_names = "+quoteConf(val)); err != nil {
		return fmt.Errorf("pgrepl: set synchronous: %w", err)
	}
	if was == val {
		n.log.Info("synchronous standbys set (already in effect)", "synchronous_standby_names", val)
		return nil
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("pgrepl: reload: %w", err)
	}
	// Our backend sees the new value once the postmaster has re-read the
	// file and signalled every child, the checkpointer included.
	for {
		var cur string
		if err := conn.QueryRow(ctx, "SELECT current_setting('synchronous_standby_names')").Scan(&cur); err != nil {
			return fmt.Errorf("pgrepl: %w", err)
		}
		if cur == val {
			break
		}
		if err := pause(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
	if val != "" {
		// The checkpointer handles a pending reload before it starts a
		// checkpoint: after this, every commit waits for the standby.
		if _, err := conn.Exec(ctx, "CHECKPOINT"); err != nil {
			return fmt.Errorf("pgrepl: checkpoint: %w", err)
		}
	} else {
		// The checkpointer releases the waiting commits when it loads ''.
		for {
			var waiting int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&waiting); err != nil {
				return fmt.Errorf("pgrepl: %w", err)
			}
			if waiting == 0 {
				break
			}
			if err := pause(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
	}
	n.log.Info("synchronous standbys set", "synchronous_standby_names", val)
	return nil
}

// Status reports the node's state. A stopped node is described from
// pg_control; a node whose data directory holds no cluster returns
// ErrNotInitialized.
func (n *Node) Status(ctx context.Context) (Status, error) {
	if _, ok := n.running(); !ok {
		return n.stoppedStatus(ctx)
	}
	return n.runningStatus(ctx)
}

// stoppedStatus describes a stopped node from pg_control.
func (n *Node) stoppedStatus(ctx context.Context) (Status, error) {
	if !n.Initialized() {
		return Status{}, ErrNotInitialized
	}
	cd, err := n.controlData(ctx)
	if err != nil {
		return Status{}, err
	}
	return Status{
		InRecovery:    cd.wasStandby() || exists(n.dataPath(backupLabel)),
		Timeline:      cd.timeline,
		ClusterState:  cd.state,
		CheckpointLSN: cd.checkpoint,
	}, nil
}

func (n *Node) runningStatus(ctx context.Context) (Status, error) {
	conn, release, err := n.session(ctx)
	if errors.Is(err, ErrNotRunning) {
		return n.stoppedStatus(ctx) // it stopped meanwhile
	}
	if err != nil {
		return Status{Running: true}, err
	}
	st, err := n.status(ctx, conn)
	release(err)
	return st, err
}

// session lends the connection to the local server that this node keeps
// open (a pair asks for its status ten times a second, and a backend per
// call would cost the server a fork and an authentication each time; a
// takeover would pay for one per step). It reconnects when the server
// restarted or ended it. release returns it, dropping it after an error.
func (n *Node) session(ctx context.Context) (*pgx.Conn, func(error), error) {
	n.statusMu.Lock()
	pm, ok := n.running()
	if !ok {
		n.closeStatusLocked()
		n.statusMu.Unlock()
		return nil, nil, ErrNotRunning
	}
	if n.statusConn != nil && (n.statusPID != pm.pid || n.statusConn.IsClosed() || n.statusConn.Ping(ctx) != nil) {
		n.closeStatusLocked()
	}
	if n.statusConn == nil {
		c, err := n.connect(ctx)
		if err != nil {
			n.statusMu.Unlock()
			return nil, nil, err
		}
		n.statusConn, n.statusPID = c, pm.pid
	}
	return n.statusConn, func(err error) {
		if err != nil {
			n.closeStatusLocked()
		}
		n.statusMu.Unlock()
	}, nil
}

// Close closes the connection the node keeps open to its server (a Node
// that is no longer used). The server is left as it is.
func (n *Node) Close() {
	n.stopBackground()
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	n.closeStatusLocked()
}

func (n *Node) closeStatusLocked() {
	if n.statusConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.statusConn.Close(ctx)
		cancel()
		n.statusConn = nil
	}
}

func (n *Node) status(ctx context.Context, conn *pgx.Conn) (Status, error) {
	st := Status{Running: true}
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names')").
		Scan(&st.InRecovery, &st.SyncNames); err != nil {
		return st, fmt.Errorf("pgrepl: status: %w", err)
	}
	if st.InRecovery {
		return st, n.standbyStatus(ctx, conn, &st)
	}
	return st, n.primaryStatus(ctx, conn, &st)
}

func (n *Node) primaryStatus(ctx context.Context, conn *pgx.Conn, st *Status) error {
	var write, flush string
	var tli int64
	err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, pg_current_wal_flush_lsn()::text,
		('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint`).Scan(&write, &flush, &tli)
	if err != nil {
		return fmt.Errorf("pgrepl: status: %w", err)
	}
	st.Timeline = uint32(tli)
	if st.WriteLSN, err = ParseLSN(write); err != nil {
		return err
	}
	if st.FlushLSN, err = ParseLSN(flush); err != nil {
		return err
	}
	rows, err := conn.Query(ctx, `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sync_state, ''),
		coalesce(flush_lsn::text, ''), coalesce(replay_lsn::text, '')
		FROM pg_stat_replication ORDER BY application_name, pid`)
	if err != nil {
		return fmt.Errorf("pgrepl: pg_stat_replication: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Replica
		var fl, rp string
		if err := rows.Scan(&r.Name, &r.State, &r.SyncState, &fl, &rp); err != nil {
			return fmt.Errorf("pgrepl: pg_stat_replication: %w", err)
		}
		if r.FlushLSN, err = parseOptLSN(fl); err != nil {
			return err
		}
		if r.ReplayLSN, err = parseOptLSN(rp); err != nil {
			return err
		}
		st.Replicas = append(st.Replicas, r)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("pgrepl: pg_stat_replication: %w", err)
	}
	return nil
}

func (n *Node) standbyStatus(ctx context.Context, conn *pgx.Conn, st *Status) error {
	var recv, replay string
	var ckptTLI int64
	err := conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn()::text, ''), coalesce(pg_last_wal_replay_lsn()::text, ''),
		(SELECT timeline_id FROM pg_control_checkpoint())`).Scan(&recv, &replay, &ckptTLI)
	if err != nil {
		return fmt.Errorf("pgrepl: status: %w", err)
	}
	if st.ReceiveLSN, err = parseOptLSN(recv); err != nil {
		return err
	}
	if st.ReplayLSN, err = parseOptLSN(replay); err != nil {
		return err
	}
	st.Timeline = uint32(ckptTLI)
	w, err := n.walReceiver(ctx, conn)
	if err != nil {
		return err
	}
	if w.status != "" {
		st.Upstream = strings.TrimSpace(w.status + " " + w.sender)
		st.WriteLSN, st.FlushLSN = w.written, w.flushed
		if w.tli != 0 {
			st.Timeline = w.tli
		}
	}
	return nil
}

// EnsureDatabase creates database name unless it exists. Primary only.
func (n *Node) EnsureDatabase(ctx context.Context, name string) error {
	if !dbRE.MatchString(name) {
		return fmt.Errorf("pgrepl: database %q: %w", name, ErrInvalidName)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.running(); !ok {
		return fmt.Errorf("pgrepl: ensure database: %w", ErrNotRunning)
	}
	conn, release, err := n.session(ctx)
	if err != nil {
		return err
	}
	defer release(nil)
	var rec, found bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).
		Scan(&rec, &found); err != nil {
		return fmt.Errorf("pgrepl: %w", err)
	}
	if found {
		return nil
	}
	if rec {
		return fmt.Errorf("pgrepl: create database %s: %w", name, ErrIsStandby)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P04" { // duplicate_database: created meanwhile
			return nil
		}
		return fmt.Errorf("pgrepl: create database %s: %w", name, err)
	}
	n.log.Info("database created", "name", name)
	return nil
}
