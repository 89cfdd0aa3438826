package etcdledger_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/coord/coordtest"
	"github.com/petrel-edge/petrel/servicemgr/etcdledger"
	"github.com/petrel-edge/petrel/servicemgr/ledgertest"
)

// TestLedgerOnEtcd runs the ledger conformance suite on one etcd member:
// each subtest gets a ledger under a prefix of its own, written under a
// leadership of its own.
func TestLedgerOnEtcd(t *testing.T) {
	c := coordtest.Start(t)
	n := 0
	ledgertest.Run(t, func(t *testing.T) ledgertest.Harness {
		n++
		prefix := fmt.Sprintf("/petrel/t%d/", n)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		lead, err := coord.NewLeadership(coord.LeadershipConfig{Client: c, Prefix: prefix + "leader/", Name: "a"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lead.Close() })
		if _, err := lead.Campaign(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := etcdledger.New(etcdledger.Config{Client: c, Guard: lead.Guard, Prefix: prefix + "services/",
			LeaseTTL: 5 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.Close)
		return ledgertest.Harness{Ledger: l, Depose: func(t *testing.T) {
			if err := lead.Resign(context.Background()); err != nil {
				t.Fatal(err)
			}
		}}
	})
}
