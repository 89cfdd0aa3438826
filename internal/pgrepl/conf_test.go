package pgrepl

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestLSN(t *testing.T) {
	for _, c := range []struct {
		s   string
		lsn uint64
	}{
		{"0/0", 0},
		{"0/16B3748", 0x16B3748},
		{"16/B374D848", 0x16B374D848},
		{"FFFFFFFF/FFFFFFFF", ^uint64(0)},
	} {
		got, err := ParseLSN(c.s)
		if err != nil || got != c.lsn {
			t.Errorf("ParseLSN(%q) = %#x, %v; want %#x", c.s, got, err, c.lsn)
		}
		if s := FormatLSN(c.lsn); s != c.s {
			t.Errorf("FormatLSN(%#x) = %q; want %q", c.lsn, s, c.s)
		}
	}
	if got, _ := ParseLSN("16/b374d848"); got != 0x16B374D848 {
		t.Errorf("ParseLSN(lower case) = %#x", got)
	}
	for _, bad := range []string{"", "0", "/0", "0/", "G/0", "1/2/3", "123456789/0", "0/123456789", "-1/0", "+1/0", "0x1/0", " 0/0", "0/0 "} {
		if got, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) = %#x, nil; want an error", bad, got)
		}
	}
	if got, err := parseOptLSN(""); got != 0 || err != nil {
		t.Errorf("parseOptLSN(\"\") = %d, %v; want 0, nil", got, err)
	}
}

// testNode is a Node as New would make it, without the user lookup.
func testNode() *Node {
	return &Node{
		cfg: Config{
			BinDir: DefaultBinDir, DataDir: "/var/lib/petrel/pg", SocketDir: "/run/petrel/pg", StateDir: "/var/lib/petrel/pg.petrel",
			Listen: []string{"10.0.0.1", "fd00::1"}, Port: 5433, Name: "controller-0", RunAs: "postgres",
			Peers:     []netip.Prefix{netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::2/128")},
			PeerNames: []string{"controller-1"},
		},
		localUsers: []string{"root", "postgres"},
	}
}

// confMap parses petrel.conf into key -> raw value.
func confMap(t *testing.T, conf string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(conf, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, " = ")
		if !ok {
			t.Fatalf("petrel.conf line %q is not key = value", line)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("petrel.conf sets %s twice", k)
		}
		m[k] = v
	}
	return m
}

func TestRenderConf(t *testing.T) {
	n := testNode()
	ci := n.peerConnInfo(Peer{Name: "controller-1", Host: "10.0.0.2", Port: 5433})
	primary := confMap(t, renderConf(n.settings(rolePrimary, "")))
	standby := confMap(t, renderConf(n.settings(roleStandby, ci)))
	want := map[string]string{
		"listen_addresses":            "'10.0.0.1,fd00::1'",
		"port":                        "5433",
		"unix_socket_directories":     "'/run/petrel/pg'",
		"unix_socket_permissions":     "0700",
		"ssl":                         "on",
		"ssl_cert_file":               "'/var/lib/petrel/pg.petrel/server.crt'",
		"ssl_key_file":                "'/var/lib/petrel/pg.petrel/server.key'",
		"ssl_ca_file":                 "'/var/lib/petrel/pg.petrel/ca.crt'",
		"fsync":                       "on",
		"full_page_writes":            "on",
		"synchronous_commit":          "on",
		"wal_level":                   "replica",
		"wal_keep_size":               "'256MB'",
		"wal_log_hints":               "on",
		"hot_standby":                 "on",
		"recovery_target_timeline":    "'latest'",
		"wal_sender_timeout":          "'5s'",
		"wal_receiver_timeout":        "'5s'",
		"wal_retrieve_retry_interval": "'200ms'",
	}
	for k, v := range want {
		if primary[k] != v || standby[k] != v {
			t.Errorf("%s = %q (primary), %q (standby); want %q", k, primary[k], standby[k], v)
		}
	}
	if _, ok := primary["synchronous_standby_names"]; ok {
		t.Error("petrel.conf sets synchronous_standby_names; it belongs to ALTER SYSTEM")
	}
	if primary["primary_conninfo"] != "''" {
		t.Errorf("primary's primary_conninfo = %s; want ''", primary["primary_conninfo"])
	}
	got := standby["primary_conninfo"]
	for _, part := range []string{"host=''10.0.0.2''", "port=''5433''", "user=''replicator''", "application_name=''controller-0''",
		"sslmode=''verify-full''", "sslrootcert=''/var/lib/petrel/pg.petrel/ca.crt''",
		"sslcert=''/var/lib/petrel/pg.petrel/server.crt''", "sslkey=''/var/lib/petrel/pg.petrel/server.key''"} {
		if !strings.Contains(got, part) {
			t.Errorf("standby's primary_conninfo = %s; want it to contain %s", got, part)
		}
	}
	if strings.Contains(strings.ToLower(got), "password") {
		t.Errorf("primary_conninfo holds a password: %s", got)
	}
}

func TestRenderHBAAndIdent(t *testing.T) {
	n := testNode()
	var lines [][]string
	for _, l := range strings.Split(n.renderHBA(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			lines = append(lines, f)
		}
	}
	want := [][]string{
		{"local", "all", "postgres", "peer", "map=local"},
		{"hostssl", "replication", "replicator", "10.0.0.2/32", "cert", "map=peers"},
		{"hostssl", "postgres", "replicator", "10.0.0.2/32", "cert", "map=peers"},
		{"hostssl", "replication", "replicator", "fd00::2/128", "cert", "map=peers"},
		{"hostssl", "postgres", "replicator", "fd00::2/128", "cert", "map=peers"},
	}
	if !slices.EqualFunc(lines, want, slices.Equal) {
		t.Errorf("pg_hba.conf entries = %q; want %q", lines, want)
	}
	var ident [][]string
	for _, l := range strings.Split(n.renderIdent(), "\n") {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
			ident = append(ident, f)
		}
	}
	wantIdent := [][]string{
		{"local", "root", "postgres"},
		{"local", "postgres", "postgres"},
		{"peers", "controller-1", "replicator"},
	}
	if !slices.EqualFunc(ident, wantIdent, slices.Equal) {
		t.Errorf("pg_ident.conf entries = %q; want %q", ident, wantIdent)
	}
}

func TestQuoting(t *testing.T) {
	if got := quoteConf("it's"); got != "'it''s'" {
		t.Errorf("quoteConf = %s", got)
	}
	if got := conninfo("host", `a\b'c`, "port", "1"); got != `host='a\\b\'c' port='1'` {
		t.Errorf("conninfo = %s", got)
	}
	n := testNode()
	if got, want := n.DSN("petrel"), "host=/run/petrel/pg port=5433 user=postgres dbname=petrel sslmode=disable"; got != want {
		t.Errorf("DSN = %q; want %q", got, want)
	}
	n.cfg.SocketDir = "/run/my pg"
	if got, want := n.DSN("petrel"), "host='/run/my pg' port=5433 user=postgres dbname=petrel sslmode=disable"; got != want {
		t.Errorf("DSN = %q; want %q", got, want)
	}
}

func TestSyncNamesValue(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"controller-1"}, `FIRST 1 ("controller-1")`},
		{[]string{"controller-1", "controller-2"}, `FIRST 1 ("controller-1", "controller-2")`},
	} {
		if got, err := syncNamesValue(c.in); got != c.want || err != nil {
			t.Errorf("syncNamesValue(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", `a"b`, "a'b", "a b", "Controller-1", "-x", strings.Repeat("a", 64), "*"} {
		if _, err := syncNamesValue([]string{bad}); !errors.Is(err, ErrInvalidName) {
			t.Errorf("syncNamesValue(%q) err = %v; want ErrInvalidName", bad, err)
		}
	}
}

func TestFilterAutoConf(t *testing.T) {
	n := testNode()
	in := "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
		"synchronous_standby_names = 'FIRST 1 (\"controller-0\")'\n" +
		"primary_conninfo = 'host=10.0.0.1'\n" +
		"work_mem = '8MB'\n" +
		"Listen_Addresses = '*'\n"
	standby, changed := filterAutoConf(in, n.autoConfDrops(roleStandby))
	wantStandby := "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\nwork_mem = '8MB'\n"
	if standby != wantStandby || !changed {
		t.Errorf("standby auto.conf = %q, %v; want %q, true", standby, changed, wantStandby)
	}
	primary, _ := filterAutoConf(in, n.autoConfDrops(rolePrimary))
	if !strings.Contains(primary, "synchronous_standby_names") || strings.Contains(primary, "primary_conninfo") || strings.Contains(primary, "Listen_Addresses") {
		t.Errorf("primary auto.conf = %q; want synchronous_standby_names kept, primary_conninfo and listen_addresses dropped", primary)
	}
	if out, changed := filterAutoConf(wantStandby, n.autoConfDrops(roleStandby)); changed || out != wantStandby {
		t.Errorf("filtering a clean file changed it: %q", out)
	}
}

func TestParseControlData(t *testing.T) {
	out := `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7441170452712577417
Database cluster state:               shut down in recovery
pg_control last modified:             Wed 25 Nov 2026 09:12:02 PM UTC
Latest checkpoint location:           0/30087A8
Latest checkpoint's REDO location:    0/3008770
Latest checkpoint's REDO WAL file:    000000010000000000000003
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   1
`
	cd, err := parseControlData(out)
	if err != nil || cd.state != "shut down in recovery" || cd.timeline != 2 || cd.checkpoint != 0x30087A8 {
		t.Fatalf("parseControlData = %+v, %v", cd, err)
	}
	if !cd.wasStandby() || cd.wasPrimary() {
		t.Errorf("%q: wasStandby %v wasPrimary %v", cd.state, cd.wasStandby(), cd.wasPrimary())
	}
	for _, s := range []string{"shut down", "in production", "in crash recovery", "shutting down"} {
		if c := (controlData{state: s}); !c.wasPrimary() || c.wasStandby() {
			t.Errorf("%q is a primary's state", s)
		}
	}
	if c := (controlData{state: "starting up"}); c.wasPrimary() || c.wasStandby() {
		t.Error(`"starting up" is neither`)
	}
	if _, err := parseControlData("Database cluster state: shut down\n"); err == nil {
		t.Error("parseControlData accepted output without timeline and checkpoint")
	}
}

func TestParsePIDFile(t *testing.T) {
	pm, dir, ok := parsePIDFile("4242\n/var/lib/petrel/pg\n1764101234\n5433\n/run/petrel/pg\n10.0.0.1\n  1234567  98304\nstandby \n")
	if !ok || pm.pid != 4242 || dir != "/var/lib/petrel/pg" || pm.status != "standby" {
		t.Errorf("parsePIDFile = %+v, %q, %v", pm, dir, ok)
	}
	for _, bad := range []string{"", "x\n/d\n", "0\n/d\n", "12\n"} {
		if _, _, ok := parsePIDFile(bad); ok {
			t.Errorf("parsePIDFile(%q) ok", bad)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	good := Config{
		DataDir: "/d/data", SocketDir: "/d/sock", Name: "controller-0", Listen: []string{"10.0.0.1"},
		Replication: ReplicationTLS{CAFile: "/t/ca", CertFile: "/t/crt", KeyFile: "/t/key"},
	}
	for name, mod := range map[string]func(*Config){
		"relative data dir":  func(c *Config) { c.DataDir = "data" },
		"root data dir":      func(c *Config) { c.DataDir = "/" },
		"relative state dir": func(c *Config) { c.StateDir = "state" },
		"long socket dir":    func(c *Config) { c.SocketDir = "/" + strings.Repeat("s", 100) },
		"bad name":           func(c *Config) { c.Name = "controller 0" },
		"bad peer name":      func(c *Config) { c.PeerNames = []string{"x'y"} },
		"hostname to listen": func(c *Config) { c.Listen = []string{"localhost"} },
		"bad port":           func(c *Config) { c.Port = 70000 },
		"no TLS key":         func(c *Config) { c.Replication.KeyFile = "" },
		"invalid peer":       func(c *Config) { c.Peers = []netip.Prefix{{}} },
	} {
		c := good
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("New with %s: nil error", name)
		}
	}
	if err := validatePeer(&Peer{Name: "controller-1", Host: "10.0.0.2 dbname=x"}); err == nil {
		t.Error("validatePeer accepted a host with a space")
	}
	p := Peer{Name: "controller-1", Host: "10.0.0.2"}
	if err := validatePeer(&p); err != nil || p.Port != 5432 {
		t.Errorf("validatePeer = %v, port %d; want nil, 5432", err, p.Port)
	}
}
