package coord_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-edge/petrel/internal/coord"
)

// TestLeaseHandOff: a slot key held by host A's lease goes to host B as
// soon as A's lease is revoked, or once it expires without keep-alives,
// while a kept-alive lease of the same TTL holds on. The hand-off times
// are logged (not asserted).
func TestLeaseHandOff(t *testing.T) {
	ca := newTestCA(t, "etcd CA")
	members, _ := startCluster(t, ca, 1)
	ctx := ctxTimeout(t, 20*time.Second)
	cli := newClient(t, endpoints(members), ca.client(t, "leader"))
	g, err := newLeadership(t, cli, prefix, "leader").Campaign(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const slot = "/petrel/s1/slot/g1/0"

	hosts := []string{"host-a", "host-b"}
	leases := make([]*leased, 2)
	for i := range leases {
		leases[i] = grantKept(t, cli, 5*time.Second)
	}
	if created, holder, err := cli.CreateWithLease(ctx, g, slot, hosts[0], leases[0].id); err != nil || !created || holder != hosts[0] {
		t.Fatalf("CreateWithLease(free slot) = %v, %q, %v; want created by host-a", created, holder, err)
	}
	if created, holder, err := cli.CreateWithLease(ctx, g, slot, hosts[1], leases[1].id); err != nil || created || holder != hosts[0] {
		t.Fatalf("CreateWithLease(held slot) = %v, %q, %v; want held by host-a", created, holder, err)
	}

	// Revoke path, several rounds: the holder's lease is revoked, the
	// other host takes the slot; then a fresh lease for the loser.
	var total, after []time.Duration
	var revoked []*coord.KeepAlive
	for round := range 5 {
		from, to := round%2, (round+1)%2
		start := time.Now()
		if err := cli.Revoke(ctx, leases[from].id); err != nil {
			t.Fatal(err)
		}
		revokedAt := time.Now()
		for {
			created, _, err := cli.CreateWithLease(ctx, g, slot, hosts[to], leases[to].id)
			if err != nil {
				t.Fatal(err)
			}
			if created {
				break
			}
		}
		total = append(total, time.Since(start))
		after = append(after, time.Since(revokedAt))
		revoked = append(revoked, leases[from].ka)
		if err := cli.Revoke(ctx, leases[from].id); err != nil {
			t.Fatalf("second Revoke of a lease: %v; want nil", err)
		}
		leases[from] = grantKept(t, cli, 5*time.Second)
	}
	t.Logf("hand-off after revoke (revoke + create): %s; create alone: %s", stats(total), stats(after))

	// Expiry path: host-c's lease (2 s) is not kept alive, host-d's (2 s,
	// granted first) is. Host-b polls for host-c's slot.
	kept := grantKept(t, cli, 2*time.Second)
	if created, _, err := cli.CreateWithLease(ctx, g, "/petrel/s1/slot/g2/0", "host-d", kept.id); err != nil || !created {
		t.Fatalf("CreateWithLease(host-d) = %v, %v", created, err)
	}
	granted := time.Now()
	orphan, err := cli.Grant(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const slot2 = "/petrel/s1/slot/g3/0"
	if created, _, err := cli.CreateWithLease(ctx, g, slot2, "host-c", orphan); err != nil || !created {
		t.Fatalf("CreateWithLease(host-c) = %v, %v", created, err)
	}
	waitFor(t, 10*time.Second, "host-c's lease expires", func() bool {
		created, _, err := cli.CreateWithLease(ctx, g, slot2, "host-b", leases[1].id)
		if err != nil {
			t.Fatal(err)
		}
		return created
	})
	t.Logf("hand-off after expiry of a 2 s lease without keep-alive: %v after its grant", time.Since(granted).Round(time.Millisecond))
	if _, holder, err := cli.CreateWithLease(ctx, g, "/petrel/s1/slot/g2/0", "host-b", leases[1].id); err != nil || holder != "host-d" {
		t.Fatalf("kept-alive slot holder = %q, %v; want host-d", holder, err)
	}
	// A keep-alive notices its lease was revoked at its next refresh
	// (every third of the TTL).
	for _, ka := range revoked {
		within(t, 5*time.Second, "keep-alive ends with its revoked lease", ka.Done())
	}
	kept.ka.Stop()
	kept.ka.Stop() // idempotent
	select {
	case <-kept.ka.Done():
	default:
		t.Fatal("KeepAlive.Done not closed after Stop")
	}
	if err := cli.Revoke(ctx, orphan); err != nil {
		t.Fatalf("Revoke of an expired lease: %v; want nil", err)
	}
}

// leased is a lease kept alive until the test ends.
type leased struct {
	id clientv3.LeaseID
	ka *coord.KeepAlive
}

func grantKept(t *testing.T, cli *coord.Client, ttl time.Duration) *leased {
	t.Helper()
	id, err := cli.Grant(t.Context(), ttl)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := cli.KeepAlive(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ka.Stop)
	return &leased{id: id, ka: ka}
}

// stats renders min/mean/max of ds.
func stats(ds []time.Duration) string {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return fmt.Sprintf("min %v mean %v max %v (n=%d)", r(slices.Min(ds)), r(sum/time.Duration(len(ds))), r(slices.Max(ds)), len(ds))
}
