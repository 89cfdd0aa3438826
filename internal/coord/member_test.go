package coord_test

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/coord"
)

// TestMemberRestartKeepsData: a single member starts, serves over mutual
// TLS, closes (twice), and starts again from its data dir with the data.
func TestMemberRestartKeepsData(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	cfg := memberConfigs(t, ca, 1)[0]
	start := time.Now()
	m, err := coord.StartMember(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("single member ready after %v", time.Since(start).Round(time.Millisecond))
	t.Cleanup(m.Close)
	if fi, err := os.Stat(cfg.DataDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}

	cli := newClient(t, []string{cfg.ClientAddr}, ca.client(t, "tester"))
	ctx := ctxTimeout(t, 10*time.Second)
	if _, err := cli.Etcd().Put(ctx, "/petrel/s1/k", "v"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	cli.Close()
	m.Close()
	m.Close() // idempotent
	select {
	case <-m.Done():
	default:
		t.Fatal("Done not closed after Close")
	}

	m2, err := coord.StartMember(t.Context(), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(m2.Close)
	cli2 := newClient(t, []string{m2.ClientURL()}, ca.client(t, "tester2"))
	resp, err := cli2.Etcd().Get(ctx, "/petrel/s1/k")
	if err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get after restart = %v; want v", resp.Kvs)
	}
}

// TestClusterSurvivesLossOfLeader: a 3-member cluster started in one
// process keeps serving writes after its raft leader is closed.
func TestClusterSurvivesLossOfLeader(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	start := time.Now()
	members, _ := startCluster(t, ca, 3)
	t.Logf("3-member cluster ready after %v", time.Since(start).Round(time.Millisecond))
	cli := newClient(t, endpoints(members), ca.client(t, "tester"))
	ctx := ctxTimeout(t, 15*time.Second)
	if _, err := cli.Etcd().Put(ctx, "/petrel/s1/a", "1"); err != nil {
		t.Fatal(err)
	}

	leader := -1
	for i, m := range members {
		st, err := cli.Etcd().Status(ctx, m.ClientURL())
		if err != nil {
			t.Fatalf("Status(%s): %v", m.Name(), err)
		}
		if st.Leader == st.Header.MemberId {
			leader = i
		}
	}
	if leader < 0 {
		t.Fatal("no member says it is the raft leader")
	}
	lost := time.Now()
	members[leader].Close()

	// The client fails over to the survivors; writes need the new leader.
	waitFor(t, 10*time.Second, "write after losing the leader", func() bool {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Etcd().Put(pctx, "/petrel/s1/b", "2")
		return err == nil
	})
	t.Logf("write accepted %v after closing the raft leader %s", time.Since(lost).Round(time.Millisecond), members[leader].Name())
	resp, err := cli.Etcd().Get(ctx, "/petrel/s1/", clientv3.WithPrefix())
	if err != nil || resp.Count != 2 {
		t.Fatalf("Get prefix = %v, %v; want 2 keys", resp, err)
	}
}

// TestForeignClientRefused: a client whose certificate another CA issued
// is refused by the member, and so is a client that trusts another CA.
func TestForeignClientRefused(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	members, _ := startCluster(t, ca, 1)
	other := newTestCA(t, "other CA")

	ok := newClient(t, endpoints(members), ca.client(t, "good"))
	if _, err := ok.Etcd().Get(ctxTimeout(t, 5*time.Second), "/x"); err != nil {
		t.Fatalf("Get with a good certificate: %v", err)
	}

	foreign := other.client(t, "intruder")
	foreign.CAFile = ca.caFile() // trusts the member, but the member does not trust it
	bad := newClient(t, endpoints(members), foreign)
	if _, err := bad.Etcd().Put(ctxTimeout(t, time.Second), "/x", "pwned"); err == nil {
		t.Fatal("Put with a foreign CA's certificate succeeded")
	}

	distrust := ca.client(t, "distrust")
	distrust.CAFile = other.caFile() // has a good certificate but trusts another CA
	bad2 := newClient(t, endpoints(members), distrust)
	if _, err := bad2.Etcd().Get(ctxTimeout(t, time.Second), "/x"); err == nil {
		t.Fatal("Get against a member whose CA the client does not trust succeeded")
	}

	resp, err := ok.Etcd().Get(ctxTimeout(t, 5*time.Second), "/x")
	if err != nil || resp.Count != 0 {
		t.Fatalf("after the refused Put, /x = %v, %v; want absent", resp, err)
	}
}

// TestConfigErrors: incomplete configurations are refused before anything
// starts.
func TestConfigErrors(t *testing.T) {
	files := coord.TLSFiles{CertFile: "c", KeyFile: "k", CAFile: "ca"}
	good := coord.MemberConfig{Name: "m0", DataDir: t.TempDir(), PeerAddr: "127.0.0.1:1", ClientAddr: "127.0.0.1:2", TLS: files}
	for name, mut := range map[string]func(*coord.MemberConfig){
		"no name":          func(c *coord.MemberConfig) { c.Name = "" },
		"no data dir":      func(c *coord.MemberConfig) { c.DataDir = "" },
		"bad peer addr":    func(c *coord.MemberConfig) { c.PeerAddr = "127.0.0.1" },
		"no TLS":           func(c *coord.MemberConfig) { c.TLS = coord.TLSFiles{} },
		"not in cluster":   func(c *coord.MemberConfig) { c.InitialCluster = map[string]string{"m1": "127.0.0.1:3"} },
		"wrong peer entry": func(c *coord.MemberConfig) { c.InitialCluster = map[string]string{"m0": "127.0.0.1:3"} },
	} {
		cfg := good
		mut(&cfg)
		if m, err := coord.StartMember(t.Context(), cfg); err == nil {
			m.Close()
			t.Errorf("StartMember(%s) succeeded", name)
		}
	}
	if _, err := coord.NewClient(coord.ClientConfig{TLS: files}); err == nil {
		t.Error("NewClient without endpoints succeeded")
	}
	if _, err := coord.NewClient(coord.ClientConfig{Endpoints: []string{"127.0.0.1:2"}, TLS: files}); err == nil {
		t.Error("NewClient with missing certificate files succeeded")
	}
	if _, err := coord.NewLeadership(coord.LeadershipConfig{Name: "a", Prefix: "/p"}); err == nil {
		t.Error("NewLeadership without a client succeeded")
	}
	for _, p := range []string{"", "/", "relative/key"} {
		if _, err := coord.NewLeadership(coord.LeadershipConfig{Client: new(coord.Client), Name: "a", Prefix: p}); err == nil {
			t.Errorf("NewLeadership(prefix %q) succeeded", p)
		}
	}
}
