package pgrepl

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Names of the files Petrel owns inside PGDATA (rewritten before every
// start: pg_basebackup and pg_rewind bring the peer's copies along) and in
// StateDir (never copied between nodes).
const (
	confFile    = "petrel.conf"   // included at the end of postgresql.conf
	hbaFile     = "pg_hba.conf"   // PostgreSQL's default location
	identFile   = "pg_ident.conf" // idem
	autoConf    = "postgresql.auto.conf"
	standbySig  = "standby.signal"
	recoverySig = "recovery.signal"
	backupLabel = "backup_label"

	caFile   = "ca.crt"
	certFile = "server.crt"
	keyFile  = "server.key"
	logFile  = "postgres.log"

	// Markers in StateDir: an operation that rewrites PGDATA creates one
	// before it starts and removes it once done, so a process killed in the
	// middle leaves a trace instead of a data directory that looks usable.
	markInitdb = "initdb.incomplete"
	markClone  = "clone.incomplete"
	markRewind = "rewind.incomplete"
	// markBootstrapped records that Bootstrap created the replication role.
	markBootstrapped = "bootstrapped"
)

// Roles and the identity maps in pg_hba.conf and pg_ident.conf.
const (
	superuser       = "postgres"   // initdb -U: the application's role over the socket
	replicationRole = "replicator" // peers' certificates map to it
	localMap        = "local"      // OS users allowed on the socket -> postgres
	peerMap         = "peers"      // peer certificate CNs -> replicator
)

// role is what a start configures the server as.
type role int

const (
	rolePrimary role = iota
	roleStandby
)

// setting is one line of petrel.conf.
type setting struct{ key, value string }

// settings renders petrel.conf's content for this node. primaryConnInfo is
// empty for a primary (and for a standby that is only replaying what it
// has, with no upstream).
func (n *Node) settings(r role, primaryConnInfo string) []setting {
	c := n.cfg
	s := []setting{
		{"listen_addresses", quoteConf(strings.Join(c.Listen, ","))},
		{"port", strconv.Itoa(c.Port)},
		{"unix_socket_directories", quoteConf(c.SocketDir)},
		{"unix_socket_permissions", "0700"},
		{"cluster_name", quoteConf(c.Name)},

		// TLS for replication: server side, and the CA that verifies peers'
		// client certificates. The files are this node's own copies in StateDir.
		{"ssl", "on"},
		{"ssl_cert_file", quoteConf(n.statePath(certFile))},
		{"ssl_key_file", quoteConf(n.statePath(keyFile))},
		{"ssl_ca_file", quoteConf(n.statePath(caFile))},
		{"ssl_min_protocol_version", quoteConf("TLSv1.2")},

		// Durability: never weakened (ENGINEERING.md).
		{"fsync", "on"},
		{"full_page_writes", "on"},
		{"synchronous_commit", "on"},

		// Replication.
		{"wal_level", "replica"},
		{"max_wal_senders", "10"},
		{"max_replication_slots", "10"},
		{"wal_keep_size", quoteConf("256MB")},
		{"wal_log_hints", "on"}, // pg_rewind needs it (or data checksums; initdb enables both)
		{"hot_standby", "on"},
		{"recovery_target_timeline", quoteConf("latest")},
		// No logical replication: without a launcher, a fast shutdown (a
		// swact's) does not wait for one to exit.
		{"max_logical_replication_workers", "0"},

		// Fail fast: a dead peer is noticed in seconds, a restarted one is
		// retried every 200 ms.
		{"wal_sender_timeout", quoteConf("5s")},
		{"wal_receiver_timeout", quoteConf("5s")},
		{"wal_receiver_status_interval", quoteConf("1s")},
		{"wal_retrieve_retry_interval", quoteConf("200ms")},
	}
	if r == roleStandby {
		s = append(s, setting{"primary_conninfo", quoteConf(primaryConnInfo)})
	} else {
		s = append(s, setting{"primary_conninfo", quoteConf("")})
	}
	return s
}

// renderConf renders petrel.conf.
func renderConf(s []setting) string {
	var b strings.Builder
	b.WriteString("# Written by Petrel (internal/pgrepl) before every start of this node; edits are lost.\n")
	b.WriteString("# A primary's synchronous_standby_names lives in postgresql.auto.conf (ALTER SYSTEM).\n")
	for _, kv := range s {
		fmt.Fprintf(&b, "%s = %s\n", kv.key, kv.value)
	}
	return b.String()
}

// renderHBA renders pg_hba.conf: the superuser over the socket (peer
// authentication, OS users mapped in pg_ident.conf), and the replication
// role over TLS with a client certificate from each peer address. The
// "postgres" database line is for pg_rewind, which reads files through SQL
// functions that role may execute and nothing else.
func (n *Node) renderHBA() string {
	var b strings.Builder
	b.WriteString("# Written by Petrel (internal/pgrepl) before every start of this node; edits are lost.\n")
	b.WriteString("# TYPE   DATABASE     USER        ADDRESS                  METHOD\n")
	fmt.Fprintf(&b, "local     all          %-11s %-24s peer map=%s\n", superuser, "", localMap)
	for _, p := range n.cfg.Peers {
		fmt.Fprintf(&b, "hostssl   replication  %-11s %-24s cert map=%s\n", replicationRole, p.Masked().String(), peerMap)
		fmt.Fprintf(&b, "hostssl   postgres     %-11s %-24s cert map=%s\n", replicationRole, p.Masked().String(), peerMap)
	}
	return b.String()
}

// renderIdent renders pg_ident.conf.
func (n *Node) renderIdent() string {
	var b strings.Builder
	b.WriteString("# Written by Petrel (internal/pgrepl) before every start of this node; edits are lost.\n")
	b.WriteString("# MAPNAME  SYSTEM-USERNAME   PG-USERNAME\n")
	for _, u := range n.localUsers {
		fmt.Fprintf(&b, "%-10s %-17s %s\n", localMap, u, superuser)
	}
	for _, name := range n.cfg.PeerNames {
		fmt.Fprintf(&b, "%-10s %-17s %s\n", peerMap, name, replicationRole)
	}
	return b.String()
}

// quoteConf quotes a value for postgresql.conf.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// conninfo renders libpq key=value pairs, every value quoted.
func conninfo(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		v := strings.ReplaceAll(kv[i+1], `\`, `\\`)
		v = strings.ReplaceAll(v, `'`, `\'`)
		parts = append(parts, kv[i]+"='"+v+"'")
	}
	return strings.Join(parts, " ")
}

// peerConnInfo is how this node reaches p for replication: as the
// replication role, authenticated by its own certificate, verifying p's
// certificate against the site CA for the address it dials.
func (n *Node) peerConnInfo(p Peer, extra ...string) string {
	kv := []string{
		"host", p.Host,
		"port", strconv.Itoa(p.Port),
		"user", replicationRole,
		"application_name", n.cfg.Name,
		"sslmode", "verify-full",
		"sslrootcert", n.statePath(caFile),
		"sslcert", n.statePath(certFile),
		"sslkey", n.statePath(keyFile),
		"connect_timeout", "2",
		"tcp_user_timeout", "5000",
	}
	return conninfo(append(kv, extra...)...)
}

// filterAutoConf drops from postgresql.auto.conf every setting whose name is
// in drop (settings petrel.conf owns, which an ALTER SYSTEM or a peer's copy
// must not override).
func filterAutoConf(content string, drop map[string]bool) (string, bool) {
	var out []string
	changed := false
	for _, line := range strings.SplitAfter(content, "\n") {
		if line == "" {
			continue
		}
		key, _, ok := strings.Cut(line, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		if ok && !strings.HasPrefix(key, "#") && drop[key] {
			changed = true
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, ""), changed
}

// autoConfDrops lists the settings to drop from postgresql.auto.conf before a
// start as r. A standby never keeps synchronous_standby_names from there:
// the peer's copy names this node itself; a standby that is promoted starts
// asynchronous until the caller names its new standby, or with the primary
// it followed (Config.SyncAfterPromote, in petrel.conf).
func (n *Node) autoConfDrops(r role) map[string]bool {
	drop := map[string]bool{
		"primary_slot_name": true, "restore_command": true, "recovery_target": true,
		"recovery_target_lsn": true, "recovery_target_name": true, "recovery_target_time": true,
		"recovery_target_xid": true, "recovery_target_action": true, "recovery_target_inclusive": true,
	}
	for _, s := range n.settings(r, "") {
		drop[s.key] = true
	}
	if r == roleStandby {
		drop["synchronous_standby_names"] = true
	}
	return drop
}

var (
	// nameRE is what node names (application_name, certificate CN) and
	// database names may look like: they go into SQL and config text, so
	// nothing that needs quoting.
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	dbRE   = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	hostRE = regexp.MustCompile(`^[A-Za-z0-9.:_-]{1,253}$`)
)

// syncNamesValue renders synchronous_standby_names for standbys: the first
// connected one in the list is synchronous; none means asynchronous.
func syncNamesValue(standbys []string) (string, error) {
	if len(standbys) == 0 {
		return "", nil
	}
	q := make([]string, len(standbys))
	for i, s := range standbys {
		if !nameRE.MatchString(s) {
			return "", fmt.Errorf("pgrepl: standby name %q: %w", s, ErrInvalidName)
		}
		q[i] = `"` + s + `"`
	}
	return "FIRST 1 (" + strings.Join(q, ", ") + ")", nil
}
