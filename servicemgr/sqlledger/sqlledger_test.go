package sqlledger_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/petrel-edge/petrel/internal/coord"
	"github.com/petrel-edge/petrel/internal/sqldb"
	"github.com/petrel-edge/petrel/internal/sqldb/sqldbtest"
	"github.com/petrel-edge/petrel/servicemgr"
	"github.com/petrel-edge/petrel/servicemgr/ledgertest"
	"github.com/petrel-edge/petrel/servicemgr/sqlledger"
)

// termGuard fences writes the way a duplex controller does: the term it
// leads under must still be the one recorded, read in the same
// transaction as the write.
func termGuard(t *testing.T, db *sqldb.DB) (sqlledger.Guard, func(t *testing.T)) {
	t.Helper()
	if err := db.Exec("CREATE TABLE test_term (id INTEGER PRIMARY KEY, term BIGINT NOT NULL)").Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec("INSERT INTO test_term (id, term) VALUES (1, 1)").Error; err != nil {
		t.Fatal(err)
	}
	const mine = 1
	guard := func(ctx context.Context, tx *sqldb.DB) error {
		var term int64
		if err := tx.WithContext(ctx).Raw("SELECT term FROM test_term WHERE id = 1").Scan(&term).Error; err != nil {
			return err
		}
		if term != mine {
			return fmt.Errorf("term %d, not %d: %w", term, mine, coord.ErrNotLeader)
		}
		return nil
	}
	depose := func(t *testing.T) { // the peer took over with a newer term
		if err := db.Exec("UPDATE test_term SET term = term + 1 WHERE id = 1").Error; err != nil {
			t.Fatal(err)
		}
	}
	return guard, depose
}

func TestConformanceLedger(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ledgertest.Run(t, func(t *testing.T) ledgertest.Harness {
			db := openDB(t)
			guard, depose := termGuard(t, db)
			l, err := sqlledger.Open(context.Background(), sqlledger.Config{DB: db, Guard: guard})
			if err != nil {
				t.Fatal(err)
			}
			return ledgertest.Harness{Ledger: l, Depose: depose}
		})
	})
}

// TestConformanceLedgerStore: the ledger's store is durable, reopening
// keeps what was committed, and a placement with two actives in one slot
// is refused before anything is written.
func TestConformanceLedgerStore(t *testing.T) {
	sqldbtest.Each(t, func(t *testing.T, openDB func(*testing.T) *sqldb.DB) {
		ctx := context.Background()
		db := openDB(t)
		if err := db.CheckDurability(ctx); err != nil {
			t.Fatal(err)
		}
		l, err := sqlledger.Open(ctx, sqlledger.Config{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		p := servicemgr.Placement{Members: map[string]servicemgr.Assigned{
			"w0": {Role: servicemgr.RoleActive, Slot: 0}, "w1": {Role: servicemgr.RoleStandby, Slot: -1}}}
		if e, err := l.Commit(ctx, "demo", 0, p); err != nil || e != 1 {
			t.Fatalf("Commit = %d, %v; want epoch 1", e, err)
		}
		twice := servicemgr.Placement{Members: map[string]servicemgr.Assigned{
			"w0": {Role: servicemgr.RoleActive, Slot: 0}, "w1": {Role: servicemgr.RoleActive, Slot: 0}}}
		if _, err := l.Commit(ctx, "demo", 1, twice); err == nil || errors.Is(err, servicemgr.ErrStale) {
			t.Errorf("Commit(two actives in slot 0) = %v; want a refusal that is not ErrStale", err)
		}
		again, err := sqlledger.Open(ctx, sqlledger.Config{DB: db}) // migrating again is harmless
		if err != nil {
			t.Fatal(err)
		}
		if got, err := again.Load(ctx, "demo"); err != nil || got.Epoch != 1 || !got.Equal(p) {
			t.Errorf("Load after reopening = %+v, %v; want epoch 1 and the placement", got, err)
		}
		// The slot is still w0's: a new ledger on the store knows it.
		steal := servicemgr.Placement{Members: map[string]servicemgr.Assigned{
			"w0": {Role: servicemgr.RoleActive, Slot: 1}, "w1": {Role: servicemgr.RoleActive, Slot: 0}}}
		if _, err := again.Commit(ctx, "demo", 1, steal); !errors.Is(err, servicemgr.ErrSlotHeld) {
			t.Errorf("Commit(steal) after reopening = %v; want ErrSlotHeld", err)
		}
	})
}
